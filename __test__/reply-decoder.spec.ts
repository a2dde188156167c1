// ReplyDecoder against replies captured from the simulator over a raw socket:
// its columns must equal what a device read of the same tags returns.
import net from 'node:net'
import test from 'ava'
import { BifrostError, connect, ReplyDecoder, startSimulator } from '../src/index.js'
import type { Device, Simulator } from '../src/index.js'

let sim: Simulator
let dev: Device

test.before(async () => {
  sim = await startSimulator({ invalid: ['holding-register:200-209'] })
  dev = await connect(sim.url)
})
test.after.always(async () => {
  await dev?.close()
  sim?.stop()
})

/** Sends one read request on a fresh socket and returns the whole reply frame, as a sniffer would see it. */
function capture(fn: number, address: number, quantity: number): Promise<Buffer> {
  const request = Buffer.from([0x12, 0x34, 0, 0, 0, 6, 1, fn, address >> 8, address & 0xff, quantity >> 8, quantity & 0xff])
  return new Promise((resolve, reject) => {
    const socket = net.connect(sim.port, sim.host, () => socket.write(request))
    let got = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      got = Buffer.concat([got, chunk])
      if (got.length >= 6 && got.length >= 6 + got.readUInt16BE(4)) {
        socket.destroy()
        resolve(got)
      }
    })
    socket.on('error', reject)
  })
}

const REGISTER_TAGS = [
  'holding-register:10:REAL[4]{byte-order: CDAB}',
  'holding-register:20:DINT',
  'holding-register:22:UINT[3]',
  'holding-register:25:INT',
  'holding-register:30.3',
  'holding-register:120:LREAL',
]

test('register columns equal a device read of the same tags', async (t) => {
  await dev.write('holding-register:10:REAL[4]{byte-order: CDAB}', [1.5, -2.25, 1e9, 3.14159])
  await dev.write('holding-register:20:DINT', -123456789)
  await dev.write('holding-register:25:INT', -42)
  await dev.write('holding-register:30', 0b1000)
  const frame = await capture(3, 0, 125)
  const decoded = new ReplyDecoder(REGISTER_TAGS, 0).decode(frame)
  const read = await dev.prepare(REGISTER_TAGS).read()
  t.deepEqual(Array.from(decoded.values), Array.from(read.values))
  t.deepEqual(Array.from(decoded.offsets), Array.from(read.offsets))
  t.deepEqual(Array.from(decoded.quality), [0, 0, 0, 0, 0, 0])
  t.deepEqual(Array.from(decoded.values.subarray(0, 4)), [1.5, -2.25, 1e9, Math.fround(3.14159)])
  t.is(decoded.values[4], -123456789)
  t.is(decoded.values[8], -42)
  t.is(decoded.values[9], 1)
})

test('coil columns from a captured FC1 reply', async (t) => {
  const tags = ['coil:3:BOOL[5]', 'coil:9']
  const decoded = new ReplyDecoder(tags, 3).decode(await capture(1, 3, 8))
  const read = await dev.prepare(tags).read()
  t.deepEqual(Array.from(decoded.values), Array.from(read.values))
  t.deepEqual(Array.from(decoded.values), [1, 0, 1, 0, 1, 1])
})

test('a tag beyond the reply fails alone', async (t) => {
  const decoded = new ReplyDecoder(['holding-register:0', 'holding-register:4:DINT'], 0).decode(await capture(3, 0, 5))
  t.deepEqual(Array.from(decoded.quality), [0, 1])
  t.is(decoded.values[0], 0)
  t.true(Number.isNaN(decoded.values[1]))
  t.is(decoded.errors.get(1)?.code, 'EADDRESS')
})

test('bad frames and settings throw BifrostError', async (t) => {
  const decoder = new ReplyDecoder(['holding-register:200'], 200)
  t.is(t.throws(() => decoder.decode(new Uint8Array(0)), { instanceOf: BifrostError })?.code, 'EPROTO')
  const refused = t.throws(() => decoder.decode(new Uint8Array([0, 1, 0, 0, 0, 3, 1, 0x83, 2])), { instanceOf: BifrostError })
  t.is(refused?.code, 'MODBUS_EXCEPTION')
  t.is(refused?.exceptionCode, 2)
  const captured = await capture(3, 200, 1) // the simulator refuses 200..209
  t.is(t.throws(() => decoder.decode(captured), { instanceOf: BifrostError })?.code, 'MODBUS_EXCEPTION')
  const good = await capture(3, 0, 2)
  t.is(t.throws(() => decoder.decode(good.subarray(0, good.length - 1)), { instanceOf: BifrostError })?.code, 'EPROTO')
  t.is(t.throws(() => decoder.decode(Buffer.concat([good, Buffer.from([0])])), { instanceOf: BifrostError })?.code, 'EPROTO')
  const coils = await capture(1, 0, 8)
  t.is(t.throws(() => decoder.decode(coils), { instanceOf: BifrostError })?.code, 'EPROTO')
  t.is(t.throws(() => decoder.decode('00' as unknown as Uint8Array), { instanceOf: BifrostError })?.code, 'EINVAL')
  const settings: Array<[unknown, unknown, string]> = [
    [[], 0, 'EADDRESS'],
    [['holding-register:0', 'coil:0'], 0, 'EADDRESS'],
    [['holding-register:0:STRING(4)'], 0, 'EADDRESS'],
    [['holding-register:4'], 5, 'EADDRESS'],
    [['holding-register:4'], -1, 'EADDRESS'],
    [['holding-register:4'], 70000, 'EADDRESS'],
    [['nonsense'], 0, 'EADDRESS'],
    ['holding-register:4', 0, 'EINVAL'],
  ]
  for (const [tags, start, code] of settings) {
    const error = t.throws(() => new ReplyDecoder(tags as string[], start as number), { instanceOf: BifrostError })
    t.is(error?.code, code, `${JSON.stringify(tags)} from ${start}`)
  }
})

test('decodeInto fills the caller array with the same values as decode', async (t) => {
  const frame = await capture(3, 0, 125)
  const decoder = new ReplyDecoder(REGISTER_TAGS, 0)
  t.is(decoder.valueCount, 11)
  const values = new Float64Array(12).fill(-1)
  t.is(decoder.decodeInto(frame, values), 0)
  t.deepEqual(Array.from(values.subarray(0, 11)), Array.from(decoder.decode(frame).values))
  t.is(values[11], -1, 'nothing past valueCount is touched')

  const partial = new ReplyDecoder(['holding-register:0', 'holding-register:4:DINT'], 0)
  t.is(partial.decodeInto(await capture(3, 0, 5), values), 1)
  t.true(Number.isNaN(values[1]))
  t.is(t.throws(() => decoder.decodeInto(frame, new Float64Array(10)), { instanceOf: BifrostError })?.code, 'EINVAL')
  t.is(t.throws(() => decoder.decodeInto(frame, [] as unknown as Float64Array), { instanceOf: BifrostError })?.code, 'EINVAL')
  t.is(t.throws(() => decoder.decodeInto(frame.subarray(0, 20), values), { instanceOf: BifrostError })?.code, 'EPROTO')
})

test('decodeMany decodes captured frames, as an array or back to back, into one array; a bad frame is NaN alone', async (t) => {
  await dev.write('holding-register:10:REAL[4]{byte-order: CDAB}', [1.5, -2.25, 1e9, 3.14159])
  const frames = [await capture(3, 0, 125), await capture(3, 200, 10), await capture(3, 0, 125)]
  const decoder = new ReplyDecoder(REGISTER_TAGS, 0)
  // Other tests write meanwhile: each frame is judged against its own single decode.
  const [first, , third] = frames.map((f) => (f.readUInt8(7) === 3 ? Array.from(decoder.decode(f).values) : []))
  const count = decoder.valueCount
  for (const input of [frames, Buffer.concat(frames)]) {
    const values = new Float64Array(3 * count).fill(7)
    t.deepEqual(decoder.decodeMany(input, values), { frames: 3, failed: REGISTER_TAGS.length }, 'the exception reply fails its tags')
    t.deepEqual(Array.from(values.subarray(0, count)), first)
    t.true(values.subarray(count, 2 * count).every(Number.isNaN))
    t.deepEqual(Array.from(values.subarray(2 * count)), third)
  }
  const truncated = Buffer.concat([frames[0]!, frames[2]!.subarray(0, 20)])
  const values = new Float64Array(2 * count)
  t.deepEqual(decoder.decodeMany(truncated, values), { frames: 2, failed: REGISTER_TAGS.length }, 'a cut-off last frame is a bad frame')
  t.deepEqual(Array.from(values.subarray(0, count)), first)
  t.true(values.subarray(count).every(Number.isNaN))
  t.deepEqual(decoder.decodeMany([], new Float64Array(0)), { frames: 0, failed: 0 })
  const short = t.throws(() => decoder.decodeMany(frames, new Float64Array(count)), { instanceOf: BifrostError })
  t.is(short.code, 'EINVAL')
  t.regex(short.message, /3 frames of \d+ need/)
  t.is(t.throws(() => decoder.decodeMany(['x'] as never, values), { instanceOf: BifrostError }).code, 'EINVAL')
  t.is(t.throws(() => decoder.decodeMany(frames, [] as never), { instanceOf: BifrostError }).code, 'EINVAL')
})
