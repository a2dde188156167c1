// node-opcua-client, used as its README shows: an OPCUAClient with security
// None, a session, and the nodes read as one batched Read per cycle.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

export default {
  name: 'node-opcua',
  version: require('node-opcua-client/package.json').version,
  load: () => require('node-opcua-client'),
  async opcuaReader(lib, url, nodes) {
    const client = lib.OPCUAClient.create({
      applicationName: 'bifrost-benchmark',
      endpointMustExist: false,
      securityMode: lib.MessageSecurityMode.None,
      securityPolicy: lib.SecurityPolicy.None,
      connectionStrategy: { maxRetry: 0 },
    })
    await client.connect(url)
    const session = await client.createSession()
    const toRead = nodes.map((nodeId) => ({ nodeId, attributeId: lib.AttributeIds.Value }))
    const values = new Float64Array(nodes.length)
    const read = async () => {
      const dataValues = await session.read(toRead)
      for (let i = 0; i < dataValues.length; i++) values[i] = dataValues[i].value.value
      return values
    }
    return {
      read,
      close: async () => {
        await session.close()
        await client.disconnect()
      },
    }
  },
}
