// What every client is asked to do, and the expected values each result is
// checked against. Expected values come from plain DataView arithmetic here,
// never from a client, so a client that decodes wrongly fails the run.
import { createRequire } from 'node:module'

/** Sizes of a full run and of the `--quick` smoke run (whose figures are not comparable). */
export const SETTINGS = {
  full: {
    rounds: 3,
    seqSeconds: 3,
    pipelinedSeconds: 3,
    pipelinedCallers: 64,
    pollDevices: 1000,
    pollSeconds: 5,
    pollRateSeconds: 10,
    decodeFrames: 10_000,
    decodePasses: 5,
    startupRuns: 5,
    scaleConnections: 10_000,
    enipSeconds: 5,
    opcuaSeconds: 5,
    opcuaStartupRuns: 5,
    opcuaSubscribeSeconds: 10,
  },
  quick: {
    rounds: 1,
    seqSeconds: 0.5,
    pipelinedSeconds: 0.5,
    pipelinedCallers: 64,
    pollDevices: 50,
    pollSeconds: 1,
    pollRateSeconds: 2,
    decodeFrames: 1000,
    decodePasses: 1,
    startupRuns: 1,
    scaleConnections: 500,
    enipSeconds: 1,
    opcuaSeconds: 1,
    opcuaStartupRuns: 1,
    opcuaSubscribeSeconds: 2,
  },
}

/**
 * enip: 1,000 scalar tags of a Logix controller, half DINT and half REAL, read
 * as one group per cycle. The run writes `values` before any client reads.
 */
export const ENIP = {
  specs: Array.from({ length: 1000 }, (_, i) => (i % 2 ? `R${i}=REAL` : `D${i}=DINT`)),
  tags: Array.from({ length: 1000 }, (_, i) => (i % 2 ? `R${i}` : `D${i}`)),
  values: Float64Array.from({ length: 1000 }, (_, i) => (i % 2 ? Math.fround(i * 0.25 - 100.5) : (i - 500) * 4_000_003)),
}

/**
 * opcua-read: one batched Read of 2,000 Double nodes per cycle, from the OPC UA
 * simulator (`--variables 10000`) or from open62541 serving the same variables
 * (`V<5i>` is a Double holding `2.5 i`), in namespace `ns` of the server.
 */
export const OPCUA = {
  variables: 10_000,
  count: 2000,
  nodes: (ns) => Array.from({ length: 2000 }, (_, i) => `ns=${ns};s=V${5 * i}`),
  values: Float64Array.from({ length: 2000 }, (_, i) => 2.5 * i),
  /** opcua-subscribe: open62541 with 50,000 variables whose 10,000 Doubles all change each second. */
  changingVariables: 50_000,
  /** opcua-decode: passes over one ReadResponse of `count` values. */
  decodePasses: 2000,
}

/**
 * opcua-decode: the message body of a ReadResponse of OPCUA.count Doubles
 * (2.5 i, each with a source timestamp), as node-opcua-client's own encoder
 * writes it: its encoding's NodeId (i=634), then the response.
 */
export function opcuaReadResponse() {
  const require = createRequire(import.meta.url)
  const opcua = require('node-opcua-client')
  const { BinaryStream } = createRequire(require.resolve('node-opcua-client'))('node-opcua-binary-stream')
  const at = new Date('2026-01-01T00:00:00Z')
  const results = Array.from(OPCUA.values, (value) => new opcua.DataValue({ value: new opcua.Variant({ dataType: opcua.DataType.Double, value }), sourceTimestamp: at }))
  const response = new opcua.ReadResponse({ results })
  const stream = new BinaryStream(response.binaryStoreSize() + 4)
  stream.writeUInt8(1) // a four-byte NodeId: namespace 0, then the id
  stream.writeUInt8(0)
  stream.writeUInt16(634)
  response.encode(stream)
  return stream.buffer.subarray(0, stream.length)
}

/** seq and pipelined: one read of 10 holding registers. */
export const BLOCK = { address: 0, quantity: 10 }

// poll-1k: 100 tags per device, laid out as a gateway's register map would be:
// holding registers 0..119 (one FC3 read) and coils 0..9 (one FC1 read).
const INTS = Array.from({ length: 30 }, (_, i) => (i - 15) * 1000 + i)
const UINTS = Array.from({ length: 30 }, (_, i) => 40_000 + i * 17)
const REALS = Array.from({ length: 20 }, (_, i) => Math.fround(-50.25 + i * 7.125))
const DINTS = Array.from({ length: 10 }, (_, i) => (i - 5) * 123_456_789)
const COILS = Array.from({ length: 10 }, (_, i) => i % 3 === 0)

export const POLL = {
  registers: { address: 0, quantity: 120 },
  coils: { address: 0, quantity: 10 },
  tags: [
    ...INTS.map((_, i) => `holding-register:${i}:INT`),
    ...UINTS.map((_, i) => `holding-register:${30 + i}:UINT`),
    ...REALS.map((_, i) => `holding-register:${60 + 2 * i}:REAL{byte-order: CDAB}`),
    ...DINTS.map((_, i) => `holding-register:${100 + 2 * i}:DINT`),
    ...COILS.map((_, i) => `coil:${i}`),
  ],
  /** Written once before the run, through the project's client, as array writes. */
  setup: [
    ['holding-register:0:INT[30]', INTS],
    ['holding-register:30:UINT[30]', UINTS],
    ['holding-register:60:REAL[20]{byte-order: CDAB}', REALS],
    ['holding-register:100:DINT[10]', DINTS],
    ['coil:0:BOOL[10]', COILS],
  ],
  expected: Float64Array.from([...INTS, ...UINTS, ...REALS, ...DINTS, ...COILS.map(Number)]),
}

const scratch = new DataView(new ArrayBuffer(4))

/** REAL in CDAB order: the low word comes first on the wire. */
function realCdab(bytes, at) {
  scratch.setUint8(0, bytes[at + 2])
  scratch.setUint8(1, bytes[at + 3])
  scratch.setUint8(2, bytes[at])
  scratch.setUint8(3, bytes[at + 1])
  return scratch.getFloat32(0)
}

/**
 * The pure-JS peers' decoding of a poll: both libraries hand back the FC3
 * register bytes (big-endian) and the coils as an array, so both share it.
 */
export function decodePoll(registers, coils, out) {
  let t = 0
  for (let i = 0; i < 30; i++) out[t++] = registers.readInt16BE(i * 2)
  for (let i = 30; i < 60; i++) out[t++] = registers.readUInt16BE(i * 2)
  for (let i = 60; i < 100; i += 2) out[t++] = realCdab(registers, i * 2)
  for (let i = 100; i < 120; i += 2) out[t++] = registers.readInt32BE(i * 2)
  for (let i = 0; i < 10; i++) out[t++] = coils[i] ? 1 : 0
  return out
}

// decode: 10,000 FC3 replies of 125 registers: 20 REAL (CDAB), 20 DINT, 45 UINT.
export const DECODE = {
  tags: [
    ...Array.from({ length: 20 }, (_, i) => `holding-register:${2 * i}:REAL{byte-order: CDAB}`),
    ...Array.from({ length: 20 }, (_, i) => `holding-register:${40 + 2 * i}:DINT`),
    ...Array.from({ length: 45 }, (_, i) => `holding-register:${80 + i}:UINT`),
  ],
}

/** The peers' decoding of one 125-register reply, given its register bytes. */
export function decodeBlock(registers, out) {
  let t = 0
  for (let i = 0; i < 40; i += 2) out[t++] = realCdab(registers, i * 2)
  for (let i = 40; i < 80; i += 2) out[t++] = registers.readInt32BE(i * 2)
  for (let i = 80; i < 125; i++) out[t++] = registers.readUInt16BE(i * 2)
  return out
}

/** Deterministic frames (MBAP + FC3 reply) and the values each one carries. */
export function makeFrames(count) {
  let seed = 0x2545f491
  const next = () => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return seed >>> 0
  }
  const frames = []
  const expected = []
  for (let f = 0; f < count; f++) {
    const frame = Buffer.alloc(9 + 250)
    const view = new DataView(frame.buffer, frame.byteOffset, frame.length)
    view.setUint16(0, f & 0xffff)
    view.setUint16(4, 3 + 250)
    view.setUint8(6, 1)
    view.setUint8(7, 3)
    view.setUint8(8, 250)
    const values = []
    for (let i = 0; i < 20; i++) {
      const value = Math.fround(((next() % 2_000_000) - 1_000_000) / 64)
      scratch.setFloat32(0, value)
      view.setUint16(9 + i * 4, scratch.getUint16(2)) // CDAB: low word first
      view.setUint16(9 + i * 4 + 2, scratch.getUint16(0))
      values.push(value)
    }
    for (let i = 0; i < 20; i++) {
      const value = next() | 0
      view.setInt32(9 + 80 + i * 4, value)
      values.push(value)
    }
    for (let i = 0; i < 45; i++) {
      const value = next() & 0xffff
      view.setUint16(9 + 160 + i * 2, value)
      values.push(value)
    }
    frames.push(frame)
    expected.push(Float64Array.from(values))
  }
  return { frames, expected }
}

/** Throws unless `actual` holds exactly the expected values. */
export function check(what, actual, expected) {
  if (actual.length !== expected.length) throw new Error(`${what}: ${actual.length} values, expected ${expected.length}`)
  for (let i = 0; i < expected.length; i++) {
    if (!Object.is(Number(actual[i]), expected[i])) {
      throw new Error(`${what}: value ${i} is ${actual[i]}, expected ${expected[i]}`)
    }
  }
}
