// EtherNet/IP through the public API against the project's Logix simulator:
// connected and unconnected messaging, packed and fragmented reads, writes of
// every kind, bits, CIP statuses, faults (silence, a dropped connection,
// malformed replies), prepared plans, group reads, the poller and the CLI.
import test from 'ava'
import net from 'node:net'
import { join } from 'node:path'
import { connect, createPoller, discover, readPlans, readPlansInto, startEnipSimulator, startSimulator } from '../src/index.js'
import type { BifrostError, Simulator } from '../src/index.js'
import { freePort, rawServer, run, startProcess, stopProcess } from './helpers.js'

const BIN = join(__dirname, '..', 'bin', 'bifrost.js')
const TAGS = ['SCADA=INT[1000]', 'Counter=DINT', 'Temp=REAL', 'Big=DINT[3000]', 'Name=STRING', 'Note=CIP_STRING', 'L=LINT', 'U=ULINT', 'Flags=DINT', 'B=BOOL[64]', 'Program:Main.Speed=REAL']

const simulators: Simulator[] = []
test.after.always(() => simulators.forEach((sim) => sim.stop()))

async function simulator(options: Parameters<typeof startEnipSimulator>[0] = {}): Promise<Simulator> {
  const sim = await startEnipSimulator({ tags: TAGS, ...options })
  simulators.push(sim)
  return sim
}

for (const query of ['path=1,0', 'connected=false', 'path=', 'path=&connected=false']) {
  test(`reads and writes every kind of tag (${query})`, async (t) => {
    const sim = await simulator()
    t.regex(sim.url, /^eip:\/\/127\.0\.0\.1:\d+$/)
    const dev = await connect(`${sim.url}?${query}`)
    const read = await dev.readTags(['SCADA[5]', 'SCADA[10]{3}', 'Counter', 'Temp', 'L', 'B[1]', 'Program:Main.Speed', 'Name'])
    t.deepEqual(
      read.map((r) => r.error?.message ?? r.value),
      [5, [10, 11, 12], 0, 0, 0n, true, 0, ''],
    )
    t.true(read.every((r) => r.quality === 'good'))
    const written = await dev.writeTags({
      'SCADA[5]': 1234,
      Counter: -7,
      Temp: 21.5,
      L: -(2n ** 63n),
      U: 2n ** 64n - 1n,
      'B[2]': true,
      Name: 'Recipe A',
      Note: 'odd',
      'SCADA[20]{3}': [-1, -2, -3],
    })
    t.deepEqual(written.map((r) => r.error?.message ?? 'ok'), Array(9).fill('ok'))
    t.deepEqual(await Promise.all(['SCADA[5]', 'Counter', 'Temp', 'L', 'U', 'B[2]', 'Name', 'Note', 'SCADA[20]{3}'].map((tag) => dev.read(tag))), [
      1234,
      -7,
      21.5,
      -(2n ** 63n),
      2n ** 64n - 1n,
      true,
      'Recipe A',
      'odd',
      [-1, -2, -3],
    ])
    await dev.close()
  })
}

test('a large array reads and writes in fragments; many tags pack into few requests', async (t) => {
  const sim = await simulator()
  const dev = await connect(`${sim.url}?path=1,0`)
  let before = sim.requests
  t.deepEqual(await dev.read('Big[0]{3000}'), Array.from({ length: 3000 }, (_, i) => i))
  t.true(sim.requests - before >= 3, '12,000 bytes need several connected messages of 4002 bytes')
  await dev.write('Big[100]{2000}', Array.from({ length: 2000 }, (_, i) => -i))
  const back = (await dev.read('Big[99]{2002}')) as number[]
  t.deepEqual([back[0], back[1], back[2000], back[2001]], [99, 0, -1999, 2100])

  const tags = Array.from({ length: 500 }, (_, i) => `SCADA[${i}]`)
  before = sim.requests
  const values = await dev.readTags(tags)
  t.true(values.every((r, i) => r.value === (i === 5 ? 5 : i)))
  t.true(sim.requests - before <= 5, `500 tags in ${sim.requests - before} requests`)
  await dev.close()
})

test('a refused tag fails alone with CIP_STATUS, its status and extended status; later requests work', async (t) => {
  const sim = await simulator()
  const dev = await connect(sim.url)
  const [unknown, past, good] = await dev.readTags(['Nope', 'SCADA[5000]', 'SCADA[1]'])
  t.is(unknown!.error?.code, 'CIP_STATUS')
  t.is(unknown!.error?.status, 0x04)
  t.regex(unknown!.error!.message, /read of 'Nope': CIP status 0x04 \(path segment error\)/)
  t.is(past!.error?.status, 0xff)
  t.is(past!.error?.extStatus, 0x2105)
  t.is(good!.value, 1)
  const e = (await t.throwsAsync(dev.read('Nope'))) as BifrostError
  t.is(e.code, 'CIP_STATUS')
  t.is(e.status, 4)
  const bad = (await t.throwsAsync(dev.write('Counter', 'text'))) as BifrostError
  t.is(bad.code, 'EINVAL')
  t.is(((await t.throwsAsync(dev.write('SCADA[0]', 70000))) as BifrostError).code, 'EINVAL')
  t.is(((await t.throwsAsync(dev.read('Bad['))) as BifrostError).code, 'EADDRESS')
  t.is(await dev.read('Counter'), 0)
  await dev.close()
})

test("any object's attributes: @class/instance/attribute as raw bytes, @class/instance for all of them", async (t) => {
  const sim = await simulator()
  const dev = await connect(sim.url)
  const name = [...'Bifrost Logix Simulator'].map((c) => c.charCodeAt(0))
  t.deepEqual(await dev.read('@1/1/7'), [name.length, ...name], 'the Identity product name: a short string')
  const [vendor, all, counter] = await dev.readTags(['@1/1/1', '@0x01/1', 'Counter'])
  t.deepEqual(vendor!.value, [1, 0])
  t.deepEqual((all!.value as number[]).slice(0, 4), [1, 0, 0x0e, 0], 'vendor 1, a PLC')
  t.is(counter!.value, 0, 'read in the same packet as the attributes')
  const refused = (await t.throwsAsync(dev.write('@1/1/1', [2, 0]))) as BifrostError
  t.is(refused.code, 'CIP_STATUS')
  t.is(refused.status, 0x0e)
  t.regex(refused.message, /attribute not settable/)
  t.is(((await t.throwsAsync(dev.write('@1/1', [1]))) as BifrostError).code, 'EINVAL')
  t.is(((await t.throwsAsync(dev.write('@1/1/1', 'text'))) as BifrostError).code, 'EINVAL')
  t.is(((await t.throwsAsync(dev.read('@1'))) as BifrostError).code, 'EADDRESS')
  t.is((t.throws(() => dev.prepare(['@1/1/1'])) as BifrostError).code, 'EADDRESS')
  t.is(((await t.throwsAsync(dev.read('@0x99/1/1'))) as BifrostError).status, 0x05)
  await dev.close()
})

test('bits are written with Read-Modify-Write, leaving the other bits alone', async (t) => {
  const sim = await simulator()
  const dev = await connect(sim.url)
  await dev.write('Flags', 0b1010)
  await dev.writeTags({ 'Flags.0': true, 'Flags.3': false })
  t.deepEqual(await Promise.all(['Flags', 'Flags.1', 'Flags.3'].map((tag) => dev.read(tag))), [0b0011, true, false])
  t.is(((await t.throwsAsync(dev.write('Temp.1', true))) as BifrostError).code, 'EINVAL')
  await dev.close()
})

test('BOOL array elements are bits of 32-bit words, written with Read-Modify-Write even while another writer changes their neighbours', async (t) => {
  const sim = await simulator()
  const [one, other] = await Promise.all([connect(sim.url), connect(`${sim.url}?connected=false`)])
  // Odd elements start on. B[40] is bit 8 of word 1; B[30]{4} spans two words.
  t.deepEqual(await one.readTags(['B[1]', 'B[40]', 'B[30]{4}']).then((r) => r.map((x) => x.value)), [true, false, [false, true, false, true]])
  // Two writers, each setting its own half of word 0 one BOOL at a time, at once: none of the 32 is lost.
  await Promise.all([
    (async () => { for (let i = 0; i < 16; i++) await one.write(`B[${i}]`, true) })(),
    (async () => { for (let i = 16; i < 32; i++) await other.write(`B[${i}]`, true) })(),
  ])
  t.deepEqual(await one.read('B[0]{32}'), Array(32).fill(true))
  await one.write('B[30]{4}', [false, false, true, true])
  t.deepEqual(await other.read('B[28]{8}'), [true, true, false, false, true, true, false, true])
  t.is(((await t.throwsAsync(one.write('B[3]{2}', [true]))) as BifrostError).code, 'EINVAL')
  await Promise.all([one.close(), other.close()])
})

test('a silent simulator times out, a dropped connection comes back, a malformed reply fails alone', async (t) => {
  const silent = await simulator({ dropEvery: 4 })
  const dev = await connect(`${silent.url}?request-timeout=300`)
  const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => dev.read(`SCADA[${i}]`)))
  const timedOut = results.filter((r) => r.status === 'rejected').map((r) => (r.reason as BifrostError).code)
  t.true(timedOut.length >= 1 && timedOut.every((code) => code === 'ETIMEDOUT'), timedOut.join())
  // Later reads work. Drops go on every 4th request, set-up ones included, so one may fall on the
  // first of them; after a drop the next three requests (a reconnect and a read) are answered.
  const later = [await dev.read('SCADA[7]').then(String, (e: BifrostError) => e.code)]
  if (later[0] !== '7') later.push(await dev.read('SCADA[7]').then(String, (e: BifrostError) => e.code))
  t.deepEqual(later.slice(-1), ['7'], later.join())
  t.true(later.every((o) => o === '7' || o === 'ETIMEDOUT'), later.join())
  await dev.close()

  const dropping = await simulator({ disconnectAfter: 5 })
  const again = await connect(dropping.url)
  for (let i = 0; i < 12; i++) {
    const value = await again.read(`SCADA[${i}]`).catch((e: BifrostError) => e.code)
    t.true(value === i || value === 'ECONNRESET', `read ${i}: ${String(value)}`)
  }
  // Each connection serves three reads: a read that races the close fails, and the one after it works.
  t.is(await again.read('SCADA[3]').catch(() => again.read('SCADA[3]')), 3)
  t.true(again.stats().connects >= 2)
  await again.close()

  const garbled = await simulator({ malformedEvery: 5 })
  const third = await connect(garbled.url)
  const outcomes: string[] = []
  for (let i = 0; i < 12; i++) {
    outcomes.push(await third.read('Counter').then(String, (e: BifrostError) => e.code))
  }
  // Every 5th reply is malformed: that read fails with EPROTO, and the next one reads on the same connection.
  t.deepEqual([...new Set(outcomes)].sort(), ['0', 'EPROTO'])
  t.is(outcomes[outcomes.indexOf('EPROTO') + 1], '0')
  t.is(third.stats().connects, 1)
  await third.close()
})

test('connecting: a bad URL is EADDRESS, a closed port ECONNREFUSED, a wrong route CIP_STATUS', async (t) => {
  t.is(((await t.throwsAsync(connect('eip://'))) as BifrostError).code, 'EADDRESS')
  t.is(((await t.throwsAsync(connect('eip://127.0.0.1?path=1'))) as BifrostError).code, 'EADDRESS')
  t.is(((await t.throwsAsync(connect('eip://127.0.0.1?connected=maybe'))) as BifrostError).code, 'EINVAL')
  t.is(((await t.throwsAsync(connect('eip://127.0.0.1:1?connect-timeout=2000'))) as BifrostError).code, 'ECONNREFUSED')
  const sim = await simulator()
  // Slot 3 holds nothing: the Forward Open along that route is refused, and so is the connect.
  const e = (await t.throwsAsync(connect(`${sim.url}?path=1,3`))) as BifrostError
  t.is(e.code, 'CIP_STATUS')
  t.is(e.status, 0x01)
  t.is(e.extStatus, 0x0312)
  t.regex(e.message, /invalid link address/)
  // Unconnected messaging along it fails each request the same way.
  const unconnected = await connect(`${sim.url}?path=1,3&connected=false`)
  const refused = (await t.throwsAsync(unconnected.read('Counter'))) as BifrostError
  t.is(refused.extStatus, 0x0312)
  await unconnected.close()
})

test('a peer that is not a controller: silence, garbage, a refused session, a reply cut short are clear errors, never a hang', async (t) => {
  const register = (socket: import('node:net').Socket, status: number) =>
    socket.once('data', (request: Buffer) => {
      const reply = Buffer.alloc(28)
      request.copy(reply, 0, 0, 24) // command, length, context echoed
      reply.writeUInt32LE(0x0d0c0b0a, 4) // the session handle
      reply.writeUInt32LE(status, 8)
      reply.writeUInt16LE(1, 24)
      socket.write(reply)
    })
  const cases: Array<[string, (socket: import('node:net').Socket) => void, string, RegExp]> = [
    ['silent', () => {}, 'ETIMEDOUT', /did not answer RegisterSession while setting the connection up/],
    ['garbage', (socket) => socket.once('data', () => socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n'))), 'EPROTO', /not an EtherNet\/IP frame/],
    ['refused', (socket) => register(socket, 0x69), 'EPROTO', /status 0x0069 \(unsupported encapsulation protocol revision\)/],
    ['hangs up', (socket) => socket.once('data', () => socket.destroy()), 'ECONNRESET', /closed the connection/],
  ]
  for (const [name, behave, code, message] of cases) {
    const peer = await rawServer(behave)
    const started = Date.now()
    const e = (await t.throwsAsync(connect(`eip://127.0.0.1:${peer.port}?connect-timeout=500`))) as BifrostError
    t.is(e.code, code, `${name}: ${e.message}`)
    t.regex(e.message, message, name)
    t.true(Date.now() - started < 10_000, `${name} settled in ${Date.now() - started} ms`)
    await peer.close()
  }
  // A session, then a Forward Open answered with half a frame: the connect times out, and the process lives.
  const half = await rawServer((socket) => {
    register(socket, 0)
    socket.on('data', (request: Buffer) => {
      if (request.readUInt16LE(0) === 0x6f) socket.write(request.subarray(0, 30))
    })
  })
  const e = (await t.throwsAsync(connect(`eip://127.0.0.1:${half.port}?connect-timeout=500`))) as BifrostError
  t.is(e.code, 'ETIMEDOUT', e.message)
  await half.close()
})

test('prepared plans, group reads and the poller read EtherNet/IP devices', async (t) => {
  const sim = await simulator()
  const devices = await Promise.all([connect(sim.url), connect(`${sim.url}?connected=false`)])
  const plans = devices.map((dev) => dev.prepare(['SCADA[1]{3}', 'Counter', 'Flags.1']))
  t.deepEqual(plans.map((p) => p.valueCount), [5, 5])
  const one = await plans[0]!.read()
  t.deepEqual(Array.from(one.values), [1, 2, 3, 0, 0])
  const group = await readPlans(plans)
  t.deepEqual(group.map((g) => Array.from(g.values)), [[1, 2, 3, 0, 0], [1, 2, 3, 0, 0]])
  const values = new Float64Array(10)
  t.is((await readPlansInto(plans, values)).errors.size, 0)
  t.deepEqual(Array.from(values), [1, 2, 3, 0, 0, 1, 2, 3, 0, 0])

  const poller = createPoller({ intervalMs: 50 })
  poller.add(devices[0]!, ['SCADA[7]', 'Temp'])
  for await (const batch of poller) {
    t.deepEqual(Array.from(batch[0]!.values), [7, 0])
    break
  }
  await Promise.all(devices.map((d) => d.close()))
})

test('a controller that drops its CIP connection: the request times out, the client opens a new connection', async (t) => {
  const sim = await simulator({ dropConnectionsEvery: 6 })
  const dev = await connect(`${sim.url}?request-timeout=300`)
  const outcomes: string[] = []
  for (let i = 0; i < 12; i++) outcomes.push(await dev.read(`SCADA[${i}]`).then(String, (e: BifrostError) => e.code))
  t.true(outcomes.includes('ETIMEDOUT'), outcomes.join())
  t.true(outcomes.every((o, i) => o === String(i) || o === 'ETIMEDOUT'), outcomes.join())
  // After each lost connection the next read works on a new one.
  t.is(outcomes[outcomes.indexOf('ETIMEDOUT') + 1], String(outcomes.indexOf('ETIMEDOUT') + 1))
  t.true(dev.stats().connects >= 2)
  await dev.close()
})

test('browse() lists the controller, a program, and many tags page by page; Modbus devices cannot', async (t) => {
  const sim = await simulator()
  const dev = await connect(sim.url)
  const controller = await dev.browse()
  t.deepEqual(
    controller.map((tag) => `${tag.name} ${tag.type} ${tag.dimensions.join('x')}`.trim()),
    ['SCADA INT 1000', 'Counter DINT', 'Temp REAL', 'Big DINT 3000', 'Name STRING', 'Note STRING', 'L LINT', 'U ULINT', 'Flags DINT', 'B BOOL 64', 'Program:Main PROGRAM'],
  )
  t.deepEqual(await dev.browse('Program:Main'), [{ name: 'Program:Main.Speed', type: 'REAL', dimensions: [] }])
  t.is(await dev.read((await dev.browse('Program:Main'))[0]!.name), 0)
  t.is(((await t.throwsAsync(dev.browse('Main'))) as BifrostError).code, 'EADDRESS')
  t.is(((await t.throwsAsync(dev.browse('Program:Nope'))) as BifrostError).code, 'CIP_STATUS')
  await dev.close()

  // 400 tags do not fit one 504-byte reply: the listing continues after the last instance it got.
  const many = await startEnipSimulator({ tags: Array.from({ length: 400 }, (_, i) => `Tag_${i}=DINT`) })
  simulators.push(many)
  const unconnected = await connect(`${many.url}?connected=false`)
  const before = many.requests
  const listed = await unconnected.browse()
  t.deepEqual(listed.map((tag) => tag.name), Array.from({ length: 400 }, (_, i) => `Tag_${i}`))
  t.true(many.requests - before > 5, `${many.requests - before} pages`)
  await unconnected.close()

  const modbus = await startSimulator()
  const device = await connect(modbus.url)
  t.is(((await t.throwsAsync(device.browse())) as BifrostError).code, 'EINVAL')
  await device.close()
  modbus.stop()
})

test('the connection size follows what the controller takes, and packets follow the size', async (t) => {
  const tags = Array.from({ length: 300 }, (_, i) => `SCADA[${i}]`)
  const requestsFor = async (maxConnectionSize: number) => {
    const sim = await simulator({ maxConnectionSize })
    const dev = await connect(sim.url)
    const before = sim.requests
    const values = await dev.readTags(tags)
    t.true(values.every((r, i) => r.value === i), `${maxConnectionSize}: ${values.find((r) => r.error)?.error?.message}`)
    const used = sim.requests - before
    await dev.close()
    return used
  }
  // 4002: the Large Forward Open as asked. 1000: refused, naming 1000, and opened at that size.
  // 504: no Large Forward Open; a classic one. 0: no connection, unconnected messages of 504 bytes.
  const [large, named, classic, none] = [await requestsFor(4002), await requestsFor(1000), await requestsFor(504), await requestsFor(0)]
  t.true(large < named && named < classic, `${large} < ${named} < ${classic}`)
  t.is(none, classic, 'unconnected messages are as large as a classic connection')
})

test('an idle connection keeps itself alive (keep-alive), or is dropped by an idle-closing controller without it', async (t) => {
  // The controller closes a session that stays silent for 600 ms.
  const sim = await simulator({ idleTimeoutMs: 600 })
  const alive = await connect(`${sim.url}?keep-alive=150`)
  const silent = await connect(`${sim.url}?keep-alive=0`)
  t.deepEqual([await alive.read('Counter'), await silent.read('Counter')], [0, 0])
  const before = sim.requests
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.true(sim.requests - before >= 4, `${sim.requests - before} keep-alives in 1.5 s`)
  t.deepEqual([await alive.read('Counter'), await silent.read('Counter')], [0, 0])
  t.is(alive.stats().connects, 1, 'kept alive: never reconnected')
  t.is(silent.stats().connects, 2, 'dropped while idle, reconnected for the read')
  await Promise.all([alive.close(), silent.close()])
})

test('structures (UDTs): whole values read into plain objects by their template, read once; members by path; browse names their types', async (t) => {
  const sim = await startEnipSimulator({
    udts: ['POINT=X:REAL,Y:REAL', 'RECIPE=Temp:REAL,Speed:DINT,Steps:INT[4],Active:BOOL,Done:BOOL,Name:STRING,At:POINT,Total:LINT'],
    tags: ['Recipe=RECIPE[3]', 'Program:Main.Line=RECIPE'],
  })
  simulators.push(sim)
  for (const query of ['path=1,0', 'connected=false']) {
    const dev = await connect(`${sim.url}?${query}`)
    const written = await dev.writeTags({
      'Recipe[2].Temp': 71.5,
      'Recipe[2].Steps[1]{2}': [7, -8],
      'Recipe[2].Done': true,
      'Recipe[2].Name': 'bread',
      'Recipe[2].At.Y': -1.5,
      'Recipe[2].Total': 2n ** 60n,
      'Program:Main.Line.Speed': 5,
    })
    t.deepEqual(written.map((r) => r.error?.message ?? 'ok'), Array(7).fill('ok'), query)
    const recipe = { Temp: 71.5, Speed: 0, Steps: [0, 7, -8, 0], Active: false, Done: true, Name: 'bread', At: { X: 0, Y: -1.5 }, Total: 2n ** 60n }
    t.deepEqual(await dev.read('Recipe[2]'), recipe, query)
    // The template was read once: another whole read is one request.
    const requests = async (tag: string) => {
      const before = sim.requests
      await dev.read(tag)
      return sim.requests - before
    }
    t.is(await requests('Recipe[0]'), 1, query)
    const results = await dev.readTags(['Recipe[1]{2}', 'Recipe[2].At', 'Program:Main.Line', 'Recipe[2].Done'])
    t.deepEqual(results[0]!.value, [{ ...recipe, Temp: 0, Steps: [0, 0, 0, 0], Done: false, Name: '', At: { X: 0, Y: 0 }, Total: 0n }, recipe])
    t.deepEqual(results[1]!.value, { X: 0, Y: -1.5 })
    t.is((results[2]!.value as { Speed: number }).Speed, 5)
    t.is(results[3]!.value, true)
    // A path the controller does not know says its program may have changed: the templates are read again.
    t.like(await dev.readTags(['Recipe[2].Nope']).then((r) => r[0]!.error), { code: 'CIP_STATUS', status: 0x04 })
    t.true((await requests('Recipe[0]')) > 1, query)
    t.is(await requests('Recipe[0]'), 1, query)
    // In one call with such a refusal, structures still decode (their templates read again).
    const mixed = await dev.readTags(['Recipe[2]', 'Nope', 'Program:Main.Line', 'Recipe[2].At'])
    t.like(mixed[1]!.error, { code: 'CIP_STATUS', status: 0x04 })
    t.deepEqual([mixed[0]!.value, (mixed[2]!.value as { Speed: number }).Speed, mixed[3]!.value], [recipe, 5, { X: 0, Y: -1.5 }])
    const whole = (await t.throwsAsync(dev.write('Recipe[0]', 1))) as BifrostError
    t.is(whole.code, 'EINVAL')
    t.regex(whole.message, /is a structure: write its members/)
    await dev.close()
  }
  const dev = await connect(sim.url)
  t.deepEqual(await dev.browse(), [
    { name: 'Recipe', type: 'RECIPE', dimensions: [3] },
    { name: 'Program:Main', type: 'PROGRAM', dimensions: [] },
  ])
  t.deepEqual(await dev.browse('Program:Main'), [{ name: 'Program:Main.Line', type: 'RECIPE', dimensions: [] }])
  // A prepared plan reads numbers: a member does, a whole structure fails alone.
  const columns = await dev.prepare(['Recipe[2].Temp', 'Recipe[2]']).read()
  t.deepEqual([columns.values[0], [...columns.quality], [...columns.errors.keys()]], [71.5, [0, 1], [1]])
  await dev.close()
})

test('a program download (another controller behind the same address): structures decode by the new templates, never the old', async (t) => {
  // Two programs of one controller: RECIPE laid out differently, so its handle differs too.
  const before = await startEnipSimulator({ udts: ['RECIPE=Temp:REAL,Speed:DINT'], tags: ['Recipe=RECIPE[2]'] })
  const after = await startEnipSimulator({ udts: ['RECIPE=Speed:DINT,Extra:INT,Temp:REAL'], tags: ['Recipe=RECIPE[2]'] })
  simulators.push(before, after)
  // The address the client dials leads to `before`, then (its connections dropped, as a download does) to `after`.
  let target = before.port
  const plc = await rawServer((socket) => {
    const upstream = net.connect(target, '127.0.0.1')
    socket.pipe(upstream).pipe(socket)
    upstream.on('error', () => socket.destroy())
    socket.on('close', () => upstream.destroy())
  })
  const dev = await connect(`eip://127.0.0.1:${plc.port}`)
  await dev.write('Recipe[1].Speed', 7)
  t.deepEqual(await dev.read('Recipe[1]'), { Temp: 0, Speed: 7 })
  target = after.port
  await plc.dropConnections()
  const direct = await connect(after.url)
  await direct.writeTags({ 'Recipe[1].Temp': 2.5, 'Recipe[1].Extra': -3 })
  await direct.close()
  // The first read after the drop may fail with it; the next decodes by the new template.
  const read = await dev.read('Recipe[1]').catch(() => dev.read('Recipe[1]'))
  t.deepEqual(read, { Speed: 0, Extra: -3, Temp: 2.5 })
  await dev.close()
  await plc.close()
})

test('close() says goodbye: Forward Close (when connected) and UnRegisterSession', async (t) => {
  for (const [query, farewell] of [['path=1,0', 2], ['connected=false', 1]] as const) {
    const sim = await simulator()
    const dev = await connect(`${sim.url}?${query}`)
    t.is(await dev.read('Counter'), 0)
    const before = sim.requests
    await dev.close()
    const until = Date.now() + 5000
    while (sim.requests < before + farewell && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 10))
    t.is(sim.requests, before + farewell, query)
  }
})

test('discover() finds a simulator by address; nobody there is an empty list; bad options are EINVAL; identity() tells the same', async (t) => {
  const sim = await simulator()
  const [found, ...more] = await discover({ address: '127.0.0.1', port: sim.port, timeoutMs: 500 })
  t.is(more.length, 0)
  t.like(found, { address: '127.0.0.1', port: sim.port, vendorId: 1, deviceType: 0x0e, productName: 'Bifrost Logix Simulator', revision: '32.11', state: 3 })
  t.deepEqual(await discover({ address: '127.0.0.1', port: await freePort(), timeoutMs: 200 }), [])
  const code = async (options: Parameters<typeof discover>[0]) => ((await t.throwsAsync(discover(options))) as BifrostError).code
  t.is(await code({ address: 'plc.local' }), 'EINVAL')
  t.is(await code({ address: '127.0.0.1', port: 0 }), 'EINVAL')
  t.is(await code({ address: '127.0.0.1', timeoutMs: -1 }), 'EINVAL')
  t.is(await code({ address: '127.0.0.1', bind: '203.0.113.9' }), 'EINVAL')
  // identity(): the same over TCP; a Modbus device cannot tell.
  const dev = await connect(sim.url)
  const { address: _, port: __, state: ___, ...identity } = found!
  t.deepEqual(await dev.identity(), identity)
  await dev.close()
  const modbus = await startSimulator()
  const device = await connect(modbus.url)
  t.is(((await t.throwsAsync(device.identity())) as BifrostError).code, 'EINVAL')
  await device.close()
  modbus.stop()
})

test('bifrost simulate enip serves tags and structure types the CLI reads and writes', async (t) => {
  const port = await freePort()
  const args = ['--tag', 'Level=REAL', '--tag', 'Count=DINT[4]', '--udt', 'PAIR=A:INT,On:BOOL', '--tag', 'P=PAIR[2]']
  const child = await startProcess(process.execPath, [BIN, 'simulate', 'enip', '--port', String(port), ...args], 'listening')
  try {
    const url = `eip://127.0.0.1:${port}?path=1,0`
    t.is((await run(process.execPath, [BIN, 'write', url, 'Level', '2.5'])).trim(), 'Level\tok')
    t.is((await run(process.execPath, [BIN, 'write', url, 'P[1].On', 'true'])).trim(), 'P[1].On\tok')
    t.is(
      (await run(process.execPath, [BIN, 'read', url, 'Level', 'Count[1]{3}', 'P[1]'])).trim(),
      'Level\t2.5\nCount[1]{3}\t[1,2,3]\nP[1]\t{"A":0,"On":true}',
    )
    const help = await run(process.execPath, [BIN, 'simulate', '--help'])
    t.regex(help, /modbus\|enip/)
  } finally {
    await stopProcess(child)
  }
})
