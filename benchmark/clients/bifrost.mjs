// The project, used as its README recommends: one Device per connection,
// prepared plans for repeated polls, ReplyDecoder.decodeInto for frames from elsewhere.
import { createRequire } from 'node:module'
import os from 'node:os'
import { join } from 'node:path'
import { BLOCK, DECODE, ENIP, POLL, check } from '../workloads.mjs'

const require = createRequire(import.meta.url)
const BLOCK_TAG = `holding-register:${BLOCK.address}:UINT[${BLOCK.quantity}]`

/** Prepares `tags` once; each call reads them, and a failed tag fails the run. */
function planReader(dev, tags) {
  const plan = dev.prepare(tags)
  const read = async () => {
    const data = await plan.read()
    if (data.errors.size > 0) throw data.errors.values().next().value
    return data.values
  }
  read.plan = plan
  return read
}

export default {
  name: 'bifrost',
  version: require('../../package.json').version,
  load: () => require('../../dist/index.js'),
  open: (lib, { host, port }, { inFlight = 1 } = {}) =>
    lib.connect(`modbus-tcp://${host}:${port}?max-in-flight=${inFlight}&request-timeout=5000`),
  blockReader: (dev) => planReader(dev, [BLOCK_TAG]),
  preparePoll: (dev) => planReader(dev, POLL.tags),
  decoder(lib) {
    const decoder = new lib.ReplyDecoder(DECODE.tags, 0)
    const values = new Float64Array(decoder.valueCount)
    return (frame) => {
      if (decoder.decodeInto(frame, values) !== 0) throw decoder.decode(frame).errors.values().next().value
      return values
    }
  },
  /**
   * poll-1k: a user polling every device as fast as it goes reads all their plans
   * (those of preparePoll) with one readPlansInto call per round, into one reused
   * array. The first round's values are checked against what the simulator holds.
   */
  groupPoll(lib, readers) {
    const plans = readers.map((read) => read.plan)
    const values = new Float64Array(plans.reduce((sum, plan) => sum + plan.valueCount, 0))
    let checked = false
    return async () => {
      const read = await lib.readPlansInto(plans, values)
      if (read.errors.size > 0) throw [...read.errors.values()][0].values().next().value
      if (!checked) {
        readers.forEach((_, i) => check(`device ${i}`, values.subarray(i * POLL.expected.length, (i + 1) * POLL.expected.length), POLL.expected))
        checked = true
      }
    }
  },
  /** gateway: every device on one poller (plans prepared before the clock starts, as the peers' are); JavaScript runs once per batch. */
  prepareGateway(lib, devs, { rateHz }) {
    const poller = lib.createPoller({ intervalMs: 1000 / rateHz })
    for (const dev of devs) poller.add(dev, POLL.tags)
    return async (seconds) => {
      let count = 0
      let late = 0
      setTimeout(() => {
        late = poller.health().reduce((sum, h) => sum + h.late, 0)
        poller.close()
      }, seconds * 1000)
      for await (const batch of poller) {
        for (const entry of batch) if (entry.errors.size > 0) throw entry.errors.values().next().value
        count += batch.length
      }
      return { count, late }
    }
  },
  /** enip: the 1,000 tags prepared once; each cycle is one read of the plan (packed Multiple Service Packets). */
  async enipReader(lib, { host, port }) {
    const dev = await lib.connect(`eip://${host}:${port}?request-timeout=5000`)
    const plan = dev.prepare(ENIP.tags)
    const read = async () => {
      const data = await plan.read()
      if (data.errors.size > 0) throw data.errors.values().next().value
      return data.values
    }
    return { read, close: () => dev.close() }
  },
  /** opcua-read: the nodes prepared once; each cycle is one read of the plan (Reads split to the server's limit). */
  async opcuaReader(lib, url, nodes, secure) {
    // Secure: the benchmark's own certificate store, accepting the server it started.
    const security = secure
      ? { securityPolicy: 'Basic256Sha256', securityMode: 'SignAndEncrypt', pkiDir: join(os.tmpdir(), 'bifrost-bench-pki'), acceptServerCertificate: true }
      : {}
    const server = await lib.connect(`${url}?request-timeout=5000`, security)
    const plan = server.prepare(nodes)
    const read = async () => {
      const data = await plan.read()
      if (data.errors.size > 0) throw data.errors.values().next().value
      return data.values
    }
    return { read, close: () => server.close() }
  },
  /** opcua-subscribe: one subscription of every node, consumed batch by batch as columns. */
  async opcuaSubscriber(lib, url, nodes, intervalMs) {
    const server = await lib.connect(`${url}?request-timeout=10000`)
    let received = 0
    let stopping = false
    let markFirst
    const first = new Promise((resolve) => (markFirst = resolve))
    const loop = (async () => {
      for await (const batch of server.subscribeColumns(nodes, { intervalMs })) {
        received += batch.values.length
        if (received >= nodes.length) markFirst()
        if (stopping) break
      }
    })()
    return {
      first,
      received: () => received,
      close: async () => {
        stopping = true
        await loop
        await server.close()
      },
    }
  },
  /** opcua-decode: a ReadResponse body into numbers, no object per value. */
  opcuaDecoder(lib, count) {
    const values = new Float64Array(count)
    return (body) => {
      if (lib.decodeReadResponse(body, values).length !== 0) throw new Error('a value failed to decode')
      return values
    }
  },
  /** decode-many: every frame with one call. */
  manyDecoder(lib, frameCount) {
    const decoder = new lib.ReplyDecoder(DECODE.tags, 0)
    const values = new Float64Array(frameCount * decoder.valueCount)
    return (frames) => {
      if (decoder.decodeMany(frames, values).failed !== 0) throw new Error('a frame failed to decode')
      return values
    }
  },
  close: (dev) => dev.close(),
}
