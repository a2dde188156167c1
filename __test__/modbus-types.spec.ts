// Every data type and byte order, arrays, bits and strings, through the public
// API against the project's simulator over real TCP sockets. Expected register
// images come from an independent encoder here (DataView), not from the addon.
import test from 'ava'
import { connect, startSimulator } from '../src/index.js'
import type { Device, Simulator } from '../src/index.js'

let sim: Simulator
let dev: Device

test.before(async () => {
  sim = await startSimulator()
  dev = await connect(`${sim.url}?max-in-flight=16`)
})
test.after.always(async () => {
  await dev?.close()
  sim?.stop()
})

const ORDERS = ['ABCD', 'BADC', 'CDAB', 'DCBA'] as const
type Order = (typeof ORDERS)[number]

/** Big-endian value bytes to wire bytes (each transformation is its own inverse). */
function toWire(bytes: number[], order: Order): number[] {
  switch (order) {
    case 'ABCD':
      return bytes
    case 'DCBA':
      return [...bytes].reverse()
    case 'BADC':
      return bytes.flatMap((_, i) => (i % 2 === 0 ? [bytes[i + 1]!, bytes[i]!] : []))
    case 'CDAB': {
      const words = []
      for (let i = 0; i < bytes.length; i += 2) words.unshift(bytes[i]!, bytes[i + 1]!)
      return words
    }
  }
}

function words(wire: number[]): number[] {
  const out = []
  for (let i = 0; i < wire.length; i += 2) out.push((wire[i]! << 8) | wire[i + 1]!)
  return out
}

interface Case {
  type: string
  value: number | bigint | boolean
  bytes: (v: DataView) => void
  size: number
  /** What reading back gives (REAL rounds to float32). */
  expected?: number | bigint | boolean
}

const CASES: Case[] = [
  { type: 'BOOL', value: true, size: 2, bytes: (v) => v.setUint16(0, 1) },
  { type: 'SINT', value: -100, size: 2, bytes: (v) => v.setUint16(0, 256 - 100) },
  { type: 'USINT', value: 200, size: 2, bytes: (v) => v.setUint16(0, 200) },
  { type: 'INT', value: -12345, size: 2, bytes: (v) => v.setInt16(0, -12345) },
  { type: 'UINT', value: 54321, size: 2, bytes: (v) => v.setUint16(0, 54321) },
  { type: 'DINT', value: -123456789, size: 4, bytes: (v) => v.setInt32(0, -123456789) },
  { type: 'UDINT', value: 3000000000, size: 4, bytes: (v) => v.setUint32(0, 3000000000) },
  { type: 'LINT', value: -1234567890123456789n, size: 8, bytes: (v) => v.setBigInt64(0, -1234567890123456789n) },
  { type: 'ULINT', value: 12345678901234567890n, size: 8, bytes: (v) => v.setBigUint64(0, 12345678901234567890n) },
  { type: 'REAL', value: 123.456, expected: Math.fround(123.456), size: 4, bytes: (v) => v.setFloat32(0, 123.456) },
  { type: 'LREAL', value: 9876.54321, size: 8, bytes: (v) => v.setFloat64(0, 9876.54321) },
]

CASES.forEach((c, ci) => {
  ORDERS.forEach((order, oi) => {
    const address = 1000 + (ci * ORDERS.length + oi) * 4
    const tag = `holding-register:${address}:${c.type}{byte-order: ${order}}`
    test(`${c.type} ${order}: write, read back, and check the register image`, async (t) => {
      const view = new DataView(new ArrayBuffer(c.size))
      c.bytes(view)
      const wire = toWire([...new Uint8Array(view.buffer)], order)
      await dev.write(tag, c.value)
      t.deepEqual(await dev.read(tag), c.expected ?? c.value)
      t.deepEqual(await dev.read(`holding-register:${address}:UINT[${c.size / 2}]`), words(wire))
      // And decode an image written raw, the other way round.
      await dev.write(`holding-register:${address}:UINT[${c.size / 2}]`, words(wire))
      t.deepEqual(await dev.read(tag), c.expected ?? c.value)
    })
  })
})

test('PLC4X long byte-order names and quoted option values are accepted', async (t) => {
  await dev.write('holding-register:900:DINT{byte-order: CDAB}', 0x01020304)
  t.is(await dev.read("holding-register:900:DINT{byte-order: 'LITTLE_ENDIAN_BYTE_SWAP'}"), 0x01020304)
  t.is(await dev.read('holding-register:900:DINT{byte-order: "CDAB"}'), 0x01020304)
  t.is(await dev.read('holding-register:900:DINT{byte-order: BIG_ENDIAN}'), 0x03040102)
})

test('initial simulator values through every table and address form', async (t) => {
  const results = await dev.readTags([
    'holding-register:20:UINT[10]',
    '400021:UINT',
    '40021:UINT',
    'input-register:7:UINT',
    '300008:UINT',
    'input-register:0:DINT{byte-order: DCBA}',
    'coil:5',
    'coil:4',
    '000006',
    'discrete-input:3',
    'discrete-input:10:BOOL[4]',
    'holding-register:5',
  ])
  t.deepEqual(
    results.map((r) => r.value),
    [[20, 21, 22, 23, 24, 25, 26, 27, 28, 29], 20, 20, 7, 7, 0x01000000, true, false, true, true, [false, true, false, true], 5],
  )
  t.true(results.every((r) => r.quality === 'good' && r.error === undefined && typeof r.timestamp === 'number'))
})

test('arrays of every width round-trip', async (t) => {
  await dev.write('holding-register:2000:INT[5]', [-2, -1, 0, 1, 2])
  t.deepEqual(await dev.read('holding-register:2000:INT[5]'), [-2, -1, 0, 1, 2])
  await dev.write('holding-register:2010:REAL[3]{byte-order: CDAB}', [1.5, -2.25, 1e10])
  t.deepEqual(await dev.read('holding-register:2010:REAL[3]{byte-order: CDAB}'), [1.5, -2.25, Math.fround(1e10)])
  // 200 registers: more than one request can carry, split and stitched back.
  const long = Array.from({ length: 200 }, (_, i) => (i * 331) % 65536)
  await dev.write('holding-register:3000:UINT[200]', long)
  t.deepEqual(await dev.read('holding-register:3000:UINT[200]'), long)
  const coils = Array.from({ length: 2100 }, (_, i) => i % 7 === 0)
  await dev.write('coil:5000:BOOL[2100]', coils)
  t.deepEqual(await dev.read('coil:5000:BOOL[2100]'), coils)
})

test('bit-in-register reads one bit and writes it without touching the others', async (t) => {
  // Register 300 holds 300 = 0b1_0010_1100.
  t.deepEqual(
    (await dev.readTags(['holding-register:300.2', 'holding-register:300.0', 'holding-register:300.8'])).map((r) => r.value),
    [true, false, true],
  )
  await dev.write('holding-register:302.0', true) // 302 = 0x012E
  t.is(await dev.read('holding-register:302:UINT'), 0x012f)
  await dev.write('holding-register:302.8', false)
  t.is(await dev.read('holding-register:302:UINT'), 0x002f)
})

test('coils write singly and as arrays', async (t) => {
  await dev.write('coil:40', true)
  t.is(await dev.read('coil:40'), true)
  await dev.write('coil:100:BOOL[3]', [true, true, false])
  t.deepEqual(await dev.read('coil:99:BOOL[5]'), [true, true, true, false, true]) // 99 and 103 start true
})

test('STRING over registers in both byte orders', async (t) => {
  await dev.write('holding-register:4000:STRING(10)', 'Hello')
  t.is(await dev.read('holding-register:4000:STRING(10)'), 'Hello')
  t.deepEqual(await dev.read('holding-register:4000:UINT[5]'), [0x4865, 0x6c6c, 0x6f00, 0, 0])
  await dev.write('holding-register:4010:STRING(4){byte-order: BADC}', 'abcd')
  t.deepEqual(await dev.read('holding-register:4010:UINT[2]'), [0x6261, 0x6463])
  t.is(await dev.read('holding-register:4010:STRING(4){byte-order: BADC}'), 'abcd')
  const tooLong = (await dev.writeTags({ 'holding-register:4020:STRING(4)': 'too long' }))[0]!
  t.is(tooLong.error?.code, 'EINVAL')
})

test('unit ids address separate stores', async (t) => {
  await dev.write('holding-register:50:UINT{unit-id: 2}', 4242)
  t.is(await dev.read('holding-register:50:UINT{unit-id: 2}'), 4242)
  t.is(await dev.read('holding-register:50:UINT'), 50)
})

test('out-of-range and wrong-kind values are EINVAL, and nothing is written', async (t) => {
  const results = await dev.writeTags([
    ['holding-register:600:INT', 40000],
    ['holding-register:601:UINT', -1],
    ['holding-register:602:UINT', 1.5],
    ['holding-register:603:INT[2]', [1]],
    ['holding-register:604:UINT', 'text'],
    ['input-register:1:UINT', 1],
  ])
  t.deepEqual(
    results.map((r) => r.error?.code),
    ['EINVAL', 'EINVAL', 'EINVAL', 'EINVAL', 'EINVAL', 'EADDRESS'],
  )
  t.deepEqual(await dev.read('holding-register:600:UINT[4]'), [600, 601, 602, 603])
})
