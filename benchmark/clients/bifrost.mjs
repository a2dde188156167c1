// The project, used as its README recommends: one Device per connection,
// prepared plans for repeated polls, ReplyDecoder.decodeInto for frames from elsewhere.
import { createRequire } from 'node:module'
import { BLOCK, DECODE, POLL } from '../workloads.mjs'

const require = createRequire(import.meta.url)
const BLOCK_TAG = `holding-register:${BLOCK.address}:UINT[${BLOCK.quantity}]`

/** Prepares `tags` once; each call reads them, and a failed tag fails the run. */
function planReader(dev, tags) {
  const plan = dev.prepare(tags)
  return async () => {
    const data = await plan.read()
    if (data.errors.size > 0) throw data.errors.values().next().value
    return data.values
  }
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
  close: (dev) => dev.close(),
}
