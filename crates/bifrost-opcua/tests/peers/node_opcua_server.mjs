// node-opcua-server as a peer for the Rust integration tests: security None,
// anonymous, bound to loopback on the port given (0: any), printing
// "listening <port>" once ready. Run it with HOME set to a directory of its own
// (it writes its PKI there) and the repository root as the working directory.
import { OPCUAServer } from 'node-opcua-server'

const server = new OPCUAServer({
  port: Number(process.argv[2] ?? 0),
  host: '127.0.0.1',
  hostname: '127.0.0.1',
  resourcePath: '/bifrost',
  securityPolicies: ['http://opcfoundation.org/UA/SecurityPolicy#None'],
  securityModes: [1], // MessageSecurityMode.None
  allowAnonymous: true,
})
await server.initialize()
await server.start()
console.log(`listening ${server.endpoints[0].port}`)
process.on('SIGTERM', async () => {
  await server.shutdown(0)
  process.exit(0)
})
