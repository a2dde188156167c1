// node-opcua-client, used as its README shows: an OPCUAClient with security
// None (or Basic256Sha256 SignAndEncrypt), a session, and the nodes read as one
// batched Read per cycle.
import { createRequire } from 'node:module'

const require = createRequire(import.meta.url)

/** A client with security None (`secure`: Basic256Sha256 SignAndEncrypt), connected, and its session. */
async function connectSession(lib, url, secure = false) {
  const client = lib.OPCUAClient.create({
    applicationName: 'bifrost-benchmark',
    endpointMustExist: false,
    securityMode: secure ? lib.MessageSecurityMode.SignAndEncrypt : lib.MessageSecurityMode.None,
    securityPolicy: secure ? lib.SecurityPolicy.Basic256Sha256 : lib.SecurityPolicy.None,
    connectionStrategy: { maxRetry: 0 },
  })
  await client.connect(url)
  return { client, session: await client.createSession() }
}

export default {
  name: 'node-opcua',
  version: require('node-opcua-client/package.json').version,
  load: () => require('node-opcua-client'),
  async opcuaReader(lib, url, nodes, secure) {
    const { client, session } = await connectSession(lib, url, secure)
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
  /** opcua-decode: a ReadResponse body decoded as node-opcua decodes one off the wire, its values taken out. */
  opcuaDecoder(lib, count) {
    const { BinaryStream } = createRequire(require.resolve('node-opcua-client'))('node-opcua-binary-stream')
    const values = new Float64Array(count)
    return (body) => {
      const stream = new BinaryStream(body)
      stream.length = 4 // past the encoding's NodeId (i=634)
      const response = new lib.ReadResponse()
      response.decode(stream)
      for (let i = 0; i < count; i++) values[i] = response.results[i].value.value
      return values
    }
  },
  /** opcua-subscribe: a subscription and a ClientMonitoredItemGroup of every node, counting 'changed' events. */
  async opcuaSubscriber(lib, url, nodes, intervalMs) {
    const { client, session } = await connectSession(lib, url)
    const subscription = await session.createSubscription2({
      requestedPublishingInterval: intervalMs,
      requestedMaxKeepAliveCount: 10,
      requestedLifetimeCount: 60,
      maxNotificationsPerPublish: 0,
      publishingEnabled: true,
      priority: 1,
    })
    let received = 0
    let markFirst
    const first = new Promise((resolve) => (markFirst = resolve))
    const items = nodes.map((nodeId) => ({ nodeId, attributeId: lib.AttributeIds.Value }))
    const group = await subscription.monitorItems(items, { samplingInterval: intervalMs, discardOldest: true, queueSize: 1 }, lib.TimestampsToReturn.Both)
    group.on('changed', () => {
      received++
      if (received >= nodes.length) markFirst()
    })
    return {
      first,
      received: () => received,
      close: async () => {
        await subscription.terminate()
        await session.close()
        await client.disconnect()
      },
    }
  },
}
