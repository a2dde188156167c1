// Client behaviour over real sockets: exceptions, timeouts, late replies,
// garbage, reconnects, pipelining, the planner's split on refusal, prepared
// reads, watch, and the plugin registry.
import test from 'ava'
import { BifrostError, columnValue, connect, registerPlugin, startSimulator } from '../src/index.js'
import type { TagResult, TagValue } from '../src/index.js'
import { freePort, rawServer, stats } from './helpers.js'


test('an exception reply is MODBUS_EXCEPTION with its code, and the connection goes on', async (t) => {
  const sim = await startSimulator({ invalid: ['holding-register:100-109'] })
  const dev = await connect(sim.url)
  const error = await t.throwsAsync(dev.read('holding-register:105:UINT'))
  t.true(error instanceof BifrostError)
  t.is((error as BifrostError).code, 'MODBUS_EXCEPTION')
  t.is((error as BifrostError).exceptionCode, 2)
  const unknownUnit = await t.throwsAsync(dev.read('holding-register:1:UINT{unit-id: 200}'))
  t.is((unknownUnit as BifrostError).exceptionCode, 11)
  t.is(await dev.read('holding-register:110:UINT'), 110)
  await dev.close()
  sim.stop()
})

test('a merged read refused with exception 2 is split until only the refused tag is bad, and the limit is kept', async (t) => {
  const sim = await startSimulator({ invalid: ['holding-register:105'] })
  const dev = await connect(`${sim.url}?max-in-flight=4`)
  const tags = Array.from({ length: 11 }, (_, i) => `holding-register:${100 + i}:UINT`)
  const first = await dev.readTags(tags)
  t.deepEqual(
    first.map((r) => r.quality),
    tags.map((_, i) => (i === 5 ? 'bad' : 'good')),
  )
  t.is(first[5]!.error?.exceptionCode, 2)
  t.deepEqual(
    first.filter((r) => r.quality === 'good').map((r) => r.value),
    [100, 101, 102, 103, 104, 106, 107, 108, 109, 110],
  )
  const before = stats(dev).requests
  const again = await dev.readTags(tags)
  const second = stats(dev).requests - before
  t.deepEqual(
    again.map((r) => r.quality),
    first.map((r) => r.quality),
  )
  // The first read needed the failed merged request plus its splits; the learned plan does not.
  t.true(second < before, `second read used ${second} requests, first ${before}`)
  t.true(second <= 3, `the refused tag is read alone beside at most two merged blocks (${second})`)
  await dev.close()
  sim.stop()
})

test('a server that never answers gives ETIMEDOUT on time', async (t) => {
  const silent = await rawServer(() => {})
  const dev = await connect(`modbus-tcp://127.0.0.1:${silent.port}?request-timeout=300`)
  const started = Date.now()
  const error = (await t.throwsAsync(dev.read('holding-register:0'))) as BifrostError
  const elapsed = Date.now() - started
  t.is(error.code, 'ETIMEDOUT')
  t.true(elapsed >= 280 && elapsed < 1500, `timed out after ${elapsed} ms`)
  await dev.close()
  await silent.close()
})

test('a reply that arrives after its timeout is dropped and the next request gets its own answer', async (t) => {
  const sim = await startSimulator({ latencyMs: 300 })
  const dev = await connect(`${sim.url}?max-in-flight=4`)
  const late = (await t.throwsAsync(dev.read('holding-register:1:UINT', { timeout: 100 }))) as BifrostError
  t.is(late.code, 'ETIMEDOUT')
  t.is(await dev.read('holding-register:2:UINT', { timeout: 3000 }), 2)
  t.is(await dev.read('holding-register:3:UINT', { timeout: 3000 }), 3)
  t.is(stats(dev).unmatched, 1)
  t.is(stats(dev).timeouts, 1)
  await dev.close()
  sim.stop()
})

test('a malformed reply is EPROTO for that request only', async (t) => {
  const sim = await startSimulator({ malformedEvery: 2 })
  const dev = await connect(sim.url)
  t.is(await dev.read('holding-register:7:UINT'), 7)
  const error = (await t.throwsAsync(dev.read('holding-register:8:UINT'))) as BifrostError
  t.is(error.code, 'EPROTO')
  t.is(await dev.read('holding-register:9:UINT'), 9)
  await dev.close()
  sim.stop()
})

test('a server that sends garbage gives clean errors, never a hang or a crash', async (t) => {
  const garbage = await rawServer((socket) => {
    socket.on('data', () => socket.write(Buffer.from('HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff\x13\x37 garbage')))
  })
  // Garbage does come back, so ETIMEDOUT would be wrong; the long timeout is slack for a busy machine.
  const dev = await connect(`modbus-tcp://127.0.0.1:${garbage.port}?request-timeout=10000`)
  for (let i = 0; i < 3; i++) {
    const error = (await t.throwsAsync(dev.read('holding-register:0:UINT'))) as BifrostError
    t.true(['EPROTO', 'ECONNRESET'].includes(error.code), error.code)
  }
  // Random bytes of every length, each on a fresh connection.
  const random = await rawServer((socket) => {
    socket.on('data', () => socket.end(Buffer.from(Array.from({ length: 1 + Math.floor(Math.random() * 300) }, () => Math.floor(Math.random() * 256)))))
  })
  const dev2 = await connect(`modbus-tcp://127.0.0.1:${random.port}?request-timeout=500`)
  for (let i = 0; i < 20; i++) {
    const result = (await dev2.readTags(['holding-register:0:UINT[4]']))[0]!
    t.is(result.quality, 'bad')
    t.true(['EPROTO', 'ECONNRESET', 'ETIMEDOUT', 'ECONNREFUSED'].includes(result.error!.code), result.error!.code)
  }
  await dev.close()
  await dev2.close()
  await garbage.close()
  await random.close()
})

test('the device reconnects after the server restarts', async (t) => {
  const port = await freePort()
  let sim = await startSimulator({ port })
  const dev = await connect(`modbus-tcp://127.0.0.1:${port}?request-timeout=500`)
  t.is(await dev.read('holding-register:11:UINT'), 11)
  sim.stop()
  const down = (await t.throwsAsync(dev.read('holding-register:11:UINT'))) as BifrostError
  t.true(['ECONNRESET', 'ECONNREFUSED'].includes(down.code), down.code)
  sim = await startSimulator({ port })
  let value: TagValue | undefined
  const deadline = Date.now() + 10_000
  while (value === undefined && Date.now() < deadline) {
    const r = (await dev.readTags(['holding-register:12:UINT']))[0]!
    value = r.value
  }
  t.is(value, 12)
  t.true(stats(dev).connects >= 2)
  await dev.close()
  sim.stop()
})

test('requests in flight when the connection breaks fail with ECONNRESET; the next request reconnects', async (t) => {
  const sim = await startSimulator({ disconnectAfter: 3, latencyMs: 50 })
  const dev = await connect(`${sim.url}?max-in-flight=8&max-gap=0`)
  const tags = Array.from({ length: 8 }, (_, i) => `holding-register:${i * 10}:UINT`)
  const results = await dev.readTags(tags)
  const codes = results.map((r) => r.error?.code ?? 'ok')
  t.true(codes.includes('ECONNRESET'), codes.join(','))
  t.true(codes.filter((c) => c === 'ok').length >= 1, codes.join(','))
  t.is(await dev.read('holding-register:5:UINT'), 5)
  await dev.close()
  sim.stop()
})

test('10,000 reads pipelined on one connection all get the right answers', async (t) => {
  const sim = await startSimulator()
  const dev = await connect(`${sim.url}?max-in-flight=16`)
  const reads = Array.from({ length: 10_000 }, (_, i) => dev.read(`holding-register:${i}:UINT`))
  const values = await Promise.all(reads)
  t.true(values.every((v, i) => v === i))
  t.is(stats(dev).connects, 1)
  await dev.close()
  sim.stop()
})

test('writes to unit 0 are broadcast and do not wait for a reply', async (t) => {
  const sim = await startSimulator({ units: [1, 2, 3] })
  const dev = await connect(sim.url)
  await dev.write('holding-register:70:UINT{unit-id: 0}', 777)
  // The broadcast is on the wire before the next request on the same connection.
  t.deepEqual(
    (await dev.readTags(['holding-register:70:UINT', 'holding-register:70:UINT{unit-id: 2}', 'holding-register:70:UINT{unit-id: 3}'])).map((r) => r.value),
    [777, 777, 777],
  )
  await dev.close()
  sim.stop()
})

test('prepared reads return typed columns from one call', async (t) => {
  const sim = await startSimulator({ invalid: ['input-register:50'] })
  const dev = await connect(`${sim.url}?max-in-flight=8`)
  await dev.write('holding-register:200:REAL{byte-order: CDAB}', 21.5)
  const plan = dev.prepare(['holding-register:0:UINT[3]', 'holding-register:200:REAL{byte-order: CDAB}', 'coil:1', 'input-register:50:INT', 'holding-register:10:LINT'])
  const data = await plan.read()
  t.true(data.values instanceof Float64Array)
  t.deepEqual([...data.offsets], [0, 3, 4, 5, 6, 7])
  t.deepEqual([...data.quality], [0, 0, 0, 1, 0])
  t.deepEqual(columnValue(data, 0), [0, 1, 2])
  t.is(columnValue(data, 1), 21.5)
  t.is(columnValue(data, 2), 1)
  t.true(Number.isNaN(columnValue(data, 3) as number))
  t.is(data.errors.get(3)?.exceptionCode, 2)
  t.is(columnValue(data, 4), 10 * 2 ** 48 + 11 * 2 ** 32 + 12 * 2 ** 16 + 13)
  // A read where no tag failed shares one read-only empty map: a read makes no map.
  const good = await dev.prepare(['holding-register:0:UINT']).read()
  t.is(good.errors.size, 0)
  t.throws(() => good.errors.set(0, new BifrostError('EPROTO', 'x')), { instanceOf: TypeError })
  t.is(good.errors.size, 0)
  const error = t.throws(() => dev.prepare(['holding-register:0:FLOAT']))
  t.is((error as BifrostError).code, 'EADDRESS')
  t.regex(error!.message, /column 20/)
  await dev.close()
  sim.stop()
})

test('watch yields one batch per cycle until the loop ends', async (t) => {
  const sim = await startSimulator()
  const dev = await connect(sim.url)
  const batches: TagResult[][] = []
  const started = Date.now()
  for await (const batch of dev.watch(['holding-register:1:UINT', 'coil:1'], { intervalMs: 100 })) {
    batches.push(batch)
    if (batches.length === 4) break
  }
  const elapsed = Date.now() - started
  t.is(batches.length, 4)
  t.true(elapsed >= 290, `four cycles of 100 ms took ${elapsed} ms`)
  t.true(batches.every((b) => b.length === 2 && b[0]!.value === 1 && b[1]!.value === true))
  await dev.close()
  sim.stop()
})

test('bad URLs, bad addresses, refused connections and closed devices are clear BifrostErrors', async (t) => {
  const codeOf = async (p: Promise<unknown>) => ((await t.throwsAsync(p)) as BifrostError).code
  t.is(await codeOf(connect('not a url')), 'EADDRESS')
  t.is(await codeOf(connect('nosuch://host')), 'EADDRESS')
  t.is(await codeOf(connect('modbus-tcp://127.0.0.1:1?colour=red')), 'EADDRESS')
  t.is(await codeOf(connect('modbus-tcp://127.0.0.1:1?unit-id=300')), 'EINVAL')
  // Port 1: nothing listens there, and no test's simulator can be handed it (a port just freed could be).
  t.is(await codeOf(connect('modbus-tcp://127.0.0.1:1')), 'ECONNREFUSED')
  const sim = await startSimulator()
  const dev = await connect(sim.url, { maxInFlight: 4, requestTimeout: 500 })
  const [bad] = await dev.readTags(['holding-register:20:FLOT'])
  t.is(bad!.error?.code, 'EADDRESS')
  t.regex(bad!.error!.message, /FLOT.*column 21/)
  await dev.close()
  t.is(await codeOf(dev.read('holding-register:0')), 'ECLOSED')
  sim.stop()
})

test('a pure-TypeScript plugin registered under its own scheme gets the same Device API', async (t) => {
  const store = new Map<string, TagValue>([['speed', 42]])
  registerPlugin('memory', () => ({
    async connect() {},
    async readTags(tags) {
      return tags.map((tag) =>
        store.has(tag)
          ? { tag, value: store.get(tag)!, quality: 'good' as const, timestamp: Date.now() }
          : { tag, quality: 'bad' as const, error: new BifrostError('EADDRESS', `no tag ${tag}`), timestamp: Date.now() },
      )
    },
    async writeTags(values) {
      return values.map(([tag, value]) => (store.set(tag, value), { tag, quality: 'good' as const, timestamp: Date.now() }))
    },
    async disconnect() {},
  }))
  const dev = await connect('memory://local')
  t.is(await dev.read('speed'), 42)
  await dev.write('speed', 43)
  t.is(await dev.read('speed'), 43)
  t.is(((await t.throwsAsync(dev.read('missing'))) as BifrostError).code, 'EADDRESS')
  t.deepEqual([...(await dev.prepare(['speed']).read()).values], [43])
  await dev.close()
})

test('a device that refuses long reads teaches the planner a shorter request length', async (t) => {
  // Tags 100, 110 and 135 answer on their own, but one read spanning them reaches into the
  // refused 120..129, as on a device with holes or a shorter block limit.
  const sim = await startSimulator({ invalid: ['holding-register:120-129'] })
  const dev = await connect(`${sim.url}?max-in-flight=8&max-gap=30`)
  const tags = ['holding-register:100:UINT', 'holding-register:110:UINT', 'holding-register:135:UINT']
  const first = await dev.readTags(tags)
  t.deepEqual(first.map((r) => r.value), [100, 110, 135])
  // 100..135 refused; halves [100] and [110..135]; the latter refused and split again.
  t.is(stats(dev).requests, 5)
  const again = await dev.readTags(tags)
  t.deepEqual(again.map((r) => r.value), [100, 110, 135])
  t.is(stats(dev).requests - 5, 2, 'the learned limit plans [100..110] and [135], and nothing is refused')
  await dev.close()
  sim.stop()
})

test('close() overtakes queued requests: they all fail with ECLOSED at once', async (t) => {
  const silent = await rawServer(() => {})
  const dev = await connect(`modbus-tcp://127.0.0.1:${silent.port}?request-timeout=10000`)
  const reads = Array.from({ length: 50 }, (_, i) => dev.readTags([`holding-register:${i}:UINT`]))
  await new Promise((resolve) => setTimeout(resolve, 50))
  const started = Date.now()
  await dev.close()
  const results = (await Promise.all(reads)).flat()
  t.true(Date.now() - started < 2000, `close took ${Date.now() - started} ms`)
  t.true(results.every((r) => r.error?.code === 'ECLOSED'), [...new Set(results.map((r) => r.error?.code))].join())
  await silent.close()
})

test('a device that stops reading cannot block the client past its deadlines', async (t) => {
  let first = true
  const stalled = await rawServer((socket) => {
    if (first) socket.pause() // never reads: the socket buffers fill up
    else socket.destroy()
    first = false
  })
  const dev = await connect(`modbus-tcp://127.0.0.1:${stalled.port}?request-timeout=1000&max-in-flight=20000&max-queued=20000`)
  const block = Array.from({ length: 120 }, (_, i) => i)
  const writes: Array<[string, number[]]> = Array.from({ length: 20_000 }, (_, i) => [`holding-register:${i}:UINT[120]`, block])
  const started = Date.now()
  const results = await dev.writeTags(writes)
  const elapsed = Date.now() - started
  t.true(results.every((r) => r.quality === 'bad'))
  t.true(results.some((r) => r.error?.code === 'ETIMEDOUT' && /stopped reading/.test(r.error.message)))
  t.true(elapsed < 20_000, `took ${elapsed} ms`)
  await dev.close()
  await stalled.close()
})

test('a device that accepts and hangs up at once is not hammered: reconnects back off', async (t) => {
  let connections = 0
  const hangup = await rawServer((socket) => {
    connections++
    socket.destroy()
  })
  const dev = await connect(`modbus-tcp://127.0.0.1:${hangup.port}?request-timeout=100`)
  for (let i = 0; i < 30; i++) {
    const [r] = await dev.readTags(['holding-register:0:UINT'])
    t.is(r!.quality, 'bad')
  }
  t.true(connections < 15, `30 failed reads made ${connections} connections`)
  await dev.close()
  await hangup.close()
})

test('RTU framing: a reply that arrives after its timeout is dropped, not taken as the next answer', async (t) => {
  const sim = await startSimulator({ framing: 'rtu', latencyMs: 150 })
  const dev = await connect(sim.url)
  const late = (await t.throwsAsync(dev.read('holding-register:1:UINT', { timeout: 100 }))) as BifrostError
  t.is(late.code, 'ETIMEDOUT')
  t.is(await dev.read('holding-register:2:UINT', { timeout: 3000 }), 2)
  // RTU over TCP resynchronises by reconnecting: the late reply goes with the old connection.
  t.is(stats(dev).resyncs, 1)
  t.is(stats(dev).connects, 2)
  await dev.close()
  sim.stop()
})

test('devices behind one RTU-over-TCP gateway share its one connection and take turns on it', async (t) => {
  const sim = await startSimulator({ framing: 'rtu' })
  const unit1 = await connect(`${sim.url}?unit-id=1`)
  const [unit2, unit3] = await Promise.all([connect(`${sim.url}?unit-id=2`), connect(`${sim.url}?unit-id=3`)])
  await unit1.write('holding-register:0:UINT', 111)
  await unit2.write('holding-register:0:UINT', 222)
  await unit3.write('holding-register:0:UINT', 333)
  // Called at once, answered in turn: every reply reaches the unit that asked.
  const reads = Array.from({ length: 20 }, () => [unit1, unit2, unit3].map((dev) => dev.read('holding-register:0:UINT'))).flat()
  t.deepEqual(await Promise.all(reads), Array.from({ length: 20 }, () => [111, 222, 333]).flat())
  t.is(sim.connections, 1)
  t.is(stats(unit1).requests, stats(unit3).requests) // one link, one set of counters

  const mismatch = (await t.throwsAsync(connect(`${sim.url}?unit-id=4&request-timeout=50`))) as BifrostError
  t.is(mismatch.code, 'EADDRESS')
  t.regex(mismatch.message, /already open as request-timeout=1000ms.*asks for request-timeout=50ms/)

  // Closing one device leaves the connection to the others; the last one closes it.
  await unit1.close()
  t.is(((await t.throwsAsync(unit1.read('holding-register:0:UINT'))) as BifrostError).code, 'ECLOSED')
  t.is(await unit2.read('holding-register:0:UINT'), 222)
  await unit2.close()
  await unit3.close()
  const again = await connect(`${sim.url}?unit-id=2`)
  t.is(await again.read('holding-register:0:UINT'), 222)
  t.is(sim.connections, 2)
  await again.close()
  sim.stop()
})

test('devices opened at the same moment on one RTU-over-TCP gateway end up on one link', async (t) => {
  const sim = await startSimulator({ framing: 'rtu' })
  const [a, b] = await Promise.all([connect(`${sim.url}?unit-id=1`), connect(`${sim.url}?unit-id=2`)])
  t.deepEqual(await Promise.all([a.read('holding-register:5:UINT'), b.read('holding-register:6:UINT')]), [5, 6])
  t.is(stats(a).requests, 2)
  t.is(stats(b).requests, 2)
  await a.close()
  await b.close()
  sim.stop()
})

test('Modbus TCP devices on one address keep a connection each (MBAP carries transaction ids)', async (t) => {
  const sim = await startSimulator()
  const a = await connect(`${sim.url}?unit-id=1`)
  const b = await connect(`${sim.url}?unit-id=2`)
  t.deepEqual(await Promise.all([a.read('holding-register:1:UINT'), b.read('holding-register:2:UINT')]), [1, 2])
  t.is(sim.connections, 2)
  await a.close()
  await b.close()
  sim.stop()
})

test('a dropped reply times out alone; the requests around it are answered', async (t) => {
  const sim = await startSimulator({ dropEvery: 2 })
  const dev = await connect(`${sim.url}?request-timeout=300`)
  t.is(await dev.read('holding-register:1:UINT'), 1)
  t.is(((await t.throwsAsync(dev.read('holding-register:2:UINT'))) as BifrostError).code, 'ETIMEDOUT')
  t.is(await dev.read('holding-register:3:UINT'), 3)
  t.is(sim.requests, 3)
  await dev.close()
  sim.stop()
})

test('reads of one prepared plan overlap on the wire', async (t) => {
  // This peer answers nothing until four requests are waiting, so reads that
  // took turns would all time out.
  const held: Buffer[] = []
  const peer = await rawServer((socket) => {
    let pending = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      pending = Buffer.concat([pending, chunk])
      while (pending.length >= 12) {
        held.push(pending.subarray(0, 12))
        pending = pending.subarray(12)
      }
      if (held.length < 4) return
      for (const request of held.splice(0)) {
        const address = request.readUInt16BE(8)
        socket.write(Buffer.from([request[0]!, request[1]!, 0, 0, 0, 5, request[6]!, 3, 2, address >> 8, address & 0xff]))
      }
    })
  })
  const dev = await connect(`modbus-tcp://127.0.0.1:${peer.port}?max-in-flight=4&request-timeout=2000`)
  const plan = dev.prepare(['holding-register:7:UINT'])
  const reads = await Promise.all([plan.read(), plan.read(), plan.read(), plan.read()])
  t.deepEqual(reads.map((r) => [r.values[0], r.quality[0]]), [[7, 0], [7, 0], [7, 0], [7, 0]])
  await dev.close()
  await peer.close()
})

test('a prepared plan adopts what the device learned from a refusal', async (t) => {
  const sim = await startSimulator({ invalid: ['holding-register:105'] })
  const dev = await connect(`${sim.url}?max-in-flight=4`)
  const plan = dev.prepare(Array.from({ length: 11 }, (_, i) => `holding-register:${100 + i}:UINT`))
  const first = await plan.read()
  const firstRequests = stats(dev).requests
  t.deepEqual(Array.from(first.quality), [0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  t.is(first.errors.get(5)?.exceptionCode, 2)
  for (let round = 0; round < 3; round++) {
    const before = stats(dev).requests
    const again = await plan.read()
    const used = stats(dev).requests - before
    t.deepEqual(Array.from(again.quality), Array.from(first.quality))
    t.deepEqual(Array.from(again.values.filter((v) => !Number.isNaN(v))), [100, 101, 102, 103, 104, 106, 107, 108, 109, 110])
    t.true(used < firstRequests && used <= 3, `read ${round + 2} used ${used} requests, the first ${firstRequests}`)
  }
  await dev.close()
  sim.stop()
})

test.serial('failover: reads go to the backup while the primary is down and come back; writes do not follow by default', async (t) => {
  const port = await freePort()
  let primary = await startSimulator({ port })
  const backup = await startSimulator()
  // Each side answers with its own value, so a read says who served it.
  const mark = async (url: string, value: number) => {
    const dev = await connect(url)
    await dev.write('holding-register:5:UINT', value)
    await dev.close()
  }
  await mark(primary.url, 111)
  await mark(backup.url, 222)
  const options = `request-timeout=300&connect-timeout=300&backup=127.0.0.1:${backup.port}`
  const pair = await connect(`modbus-tcp://127.0.0.1:${port}?${options}`)
  const plan = pair.prepare(['holding-register:5:UINT'])
  t.is(await pair.read('holding-register:5:UINT'), 111)
  t.is((await plan.read()).values[0], 111)

  primary.stop()
  /** Reads (failures allowed while the breaker decides) until one returns `want`. */
  const until = async (want: number) => {
    const end = Date.now() + 15_000
    while (Date.now() < end) {
      const value = await pair.read('holding-register:5:UINT').catch(() => undefined)
      if (value === want) return true
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    return false
  }
  t.true(await until(222), 'the backup serves reads while the primary is down')
  t.is((await plan.read()).values[0], 222, 'prepared plans fail over too')
  const write = await pair.writeTags({ 'holding-register:6:UINT': 7 })
  t.is(write[0]!.quality, 'bad', 'a write is not sent to the backup by default')
  t.regex(write[0]!.error!.code, /^(ECONNREFUSED|ECONNRESET|ETIMEDOUT)$/)
  const check = await connect(backup.url)
  t.is(await check.read('holding-register:6:UINT'), 6, 'the backup kept its value')

  primary = await startSimulator({ port })
  await mark(primary.url, 111)
  t.true(await until(111), 'reads return to the primary once it answers again')
  t.is((await plan.read()).values[0], 111)
  await pair.close()
  await check.close()
  primary.stop()
  backup.stop()
})

test.serial('failover: with failover-writes, writes go to the backup while the primary is down', async (t) => {
  const port = await freePort()
  const primary = await startSimulator({ port })
  const backup = await startSimulator()
  const pair = await connect(`modbus-tcp://127.0.0.1:${port}`, { requestTimeout: 300, connectTimeout: 300, backup: `127.0.0.1:${backup.port}`, failoverWrites: true })
  primary.stop()
  let written = false
  const end = Date.now() + 15_000
  while (!written && Date.now() < end) {
    written = (await pair.writeTags({ 'holding-register:9:UINT': 4321 }))[0]!.quality === 'good'
    if (!written) await new Promise((resolve) => setTimeout(resolve, 50))
  }
  t.true(written)
  const check = await connect(backup.url)
  t.is(await check.read('holding-register:9:UINT'), 4321, 'the write reached the backup')
  await Promise.all([pair.close(), check.close()])
  backup.stop()
})

test.serial('failover options: a bad backup is EADDRESS, failover-writes alone EINVAL, an unreachable backup fails connect naming it', async (t) => {
  const sim = await startSimulator()
  const code = async (url: string) => ((await t.throwsAsync(connect(url))) as BifrostError).code
  t.is(await code(`${sim.url}?backup=`), 'EADDRESS')
  t.is(await code(`${sim.url}?backup=host/path`), 'EADDRESS')
  t.is(await code(`${sim.url}?failover-writes=true`), 'EINVAL')
  t.is(await code(`${sim.url}?backup=127.0.0.1:1&failover-writes=maybe`), 'EINVAL')
  t.is(await code('modbus-rtu:///dev/ttyUSB0?backup=127.0.0.1'), 'EADDRESS')
  const closedPort = 1 // nothing listens there
  const e = (await t.throwsAsync(connect(`${sim.url}?connect-timeout=500&backup=127.0.0.1:${closedPort}`))) as BifrostError
  t.is(e.code, 'ECONNREFUSED')
  t.regex(e.message, new RegExp(`^backup 127\\.0\\.0\\.1:${closedPort}: `))
  sim.stop()
})
