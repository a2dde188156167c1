// node-opcua-server as a peer for the tests: bound to loopback on the port given
// (0: any), printing "listening <port>" once ready. By default it offers security
// None and the anonymous user; with "secure" after the port it also offers every
// policy we speak in Sign and SignAndEncrypt, the user "operator" (password
// "secret-pw") and X509 users, and accepts any client or user certificate. Run it with HOME set to a directory of its own
// (it writes its PKI there) and the repository root as the working directory.
// It serves a folder of test variables in namespace urn:bifrost:test (see below).
import { OPCUAServer } from 'node-opcua-server'
import { StatusCodes } from 'node-opcua-status-code'
import { DataType } from 'node-opcua-variant'

const secure = process.argv[3] === 'secure'
const policy = (name) => `http://opcfoundation.org/UA/SecurityPolicy#${name}`
const server = new OPCUAServer({
  port: Number(process.argv[2] ?? 0),
  host: '127.0.0.1',
  hostname: '127.0.0.1',
  resourcePath: '/bifrost',
  securityPolicies: secure
    ? ['None', 'Basic256Sha256', 'Aes128_Sha256_RsaOaep', 'Aes256_Sha256_RsaPss'].map(policy)
    : [policy('None')],
  securityModes: secure ? [1, 2, 3] : [1], // MessageSecurityMode None, Sign, SignAndEncrypt
  allowAnonymous: true,
  userManager: { isValidUser: (user, password) => user === 'operator' && password === 'secret-pw' },
})
await server.initialize()

// The test variables: built-in type ids as Part 6 numbers them (Boolean 1,
// Int32 6, Int64 8, Float 10, Double 11, String 12), each `s=<name>`.
const addressSpace = server.engine.addressSpace
const ns = addressSpace.registerNamespace('urn:bifrost:test')
const folder = ns.addFolder(addressSpace.rootFolder.objects, { browseName: 'Bifrost', nodeId: 's=Bifrost' })
const variable = (name, dataType, typeId, value, extra = {}) =>
  ns.addVariable({ componentOf: folder, browseName: name, nodeId: `s=${name}`, dataType, value: { dataType: typeId, arrayType: extra.valueRank === 1 ? 1 : 0, value }, ...extra })
variable('Speed', 'Double', 11, 12.5)
variable('Count', 'Int32', 6, 42)
variable('Running', 'Boolean', 1, true)
variable('Name', 'String', 12, 'line 1')
variable('Total', 'Int64', 8, [0, 5_000_000])
variable('Limit', 'Double', 11, 100, { accessLevel: 'CurrentRead', userAccessLevel: 'CurrentRead' })
variable('Samples', 'Float', 10, new Float32Array([1.5, 2.5, 3.5]), { valueRank: 1, arrayDimensions: [3] })
// A value that changes: Counter (UInt32) goes up by one every 100 ms.
let counter = 0
const counterNode = variable('Counter', 'UInt32', 7, 0)
setInterval(() => counterNode.setValueFromSource({ dataType: DataType.UInt32, value: ++counter }), 100).unref()
// A method: Scale(Int16 value, Double factor) -> Double, refusing a factor of 0.
const scale = ns.addMethod(folder, {
  browseName: 'Scale',
  nodeId: 's=Scale',
  inputArguments: [
    { name: 'value', dataType: DataType.Int16 },
    { name: 'factor', dataType: DataType.Double },
  ],
  outputArguments: [{ name: 'scaled', dataType: DataType.Double }],
})
scale.bindMethod((inputs, _context, callback) => {
  const [value, factor] = inputs.map((v) => v.value)
  if (factor === 0) return callback(null, { statusCode: StatusCodes.BadInvalidArgument })
  callback(null, { statusCode: StatusCodes.Good, outputArguments: [{ dataType: DataType.Double, value: value * factor }] })
})
// A folder of more references than one Browse page of 1,000 returns.
const many = ns.addFolder(folder, { browseName: 'Many', nodeId: 's=Many' })
for (let i = 0; i < 1500; i++) {
  ns.addVariable({ componentOf: many, browseName: `M${i}`, nodeId: `s=M${i}`, dataType: 'UInt16', value: { dataType: 5, value: i } })
}

await server.start()
console.log(`listening ${server.endpoints[0].port}`)
process.on('SIGTERM', async () => {
  await server.shutdown(0)
  process.exit(0)
})
