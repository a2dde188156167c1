// One client running one workload in its own process, so its CPU time and
// peak RSS are its own. Prints one JSON line with the figures.
//   node benchmark/child.mjs <client> <workload> '<settings JSON>'
import { performance } from 'node:perf_hooks'
import { BLOCK, ENIP, OPCUA, POLL, check, makeFrames, opcuaReadResponse } from './workloads.mjs'

const [clientName, workload, settingsJson] = process.argv.slice(2)
const settings = JSON.parse(settingsJson)
const server = { host: settings.host, port: settings.port }
const { default: client } = await import(`./clients/${clientName}.mjs`)

const BLOCK_EXPECTED = Float64Array.from(POLL.expected.subarray(0, BLOCK.quantity), (v) => v & 0xffff)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
const peakRssMb = () => process.resourceUsage().maxRSS / 1024
const cpuSeconds = (since) => {
  const used = process.cpuUsage(since)
  return (used.user + used.system) / 1e6
}

/** Voluntary plus involuntary context switches of this process so far. */
const contextSwitches = () => {
  const usage = process.resourceUsage()
  return usage.voluntaryContextSwitches + usage.involuntaryContextSwitches
}

/** Runs `fn` over `items` with at most `limit` at once (connecting 10,000 at once would overflow the listen backlog). */
async function mapLimit(items, limit, fn) {
  const out = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const i = next++
      out[i] = await fn(items[i], i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
  return out
}

/** Calls `step` from `callers` concurrent loops until `seconds` pass; returns the calls made and the CPU used. */
async function timedLoop(callers, seconds, step) {
  let count = 0
  const switches = contextSwitches()
  const cpu = process.cpuUsage()
  const started = performance.now()
  const end = started + seconds * 1000
  await Promise.all(
    Array.from({ length: callers }, async (_, i) => {
      while (performance.now() < end) {
        await step(i)
        count++
      }
    }),
  )
  return { count, seconds: (performance.now() - started) / 1000, cpu: cpuSeconds(cpu), switches: contextSwitches() - switches }
}

async function requests(callers, seconds, inFlight) {
  const lib = client.load()
  const conn = await client.open(lib, server, { inFlight })
  const readBlock = client.blockReader(conn)
  check('first read', await readBlock(), BLOCK_EXPECTED)
  for (let i = 0; i < 200; i++) await readBlock()
  const run = await timedLoop(callers, seconds, readBlock)
  await client.close(conn)
  return {
    reqPerSec: run.count / run.seconds,
    cpuMicrosPerReq: (run.cpu / run.count) * 1e6,
    switchesPerReq: run.switches / run.count,
    peakRssMb: peakRssMb(),
  }
}

/** Opens `devices` connections and checks every device's first poll (also the warm-up). */
async function openPolled(devices) {
  const lib = client.load()
  const connectStart = performance.now()
  const conns = await mapLimit(Array.from({ length: devices }), 100, () => client.open(lib, server, { inFlight: 2 }))
  const connectSeconds = (performance.now() - connectStart) / 1000
  const pollers = conns.map((conn) => client.preparePoll(conn))
  await mapLimit(pollers, 100, async (p, i) => check(`device ${i}`, await p(), POLL.expected))
  return { lib, conns, pollers, connectSeconds }
}

/** Each device polls on its own fixed schedule, phases spread over the period: one timer per device. */
async function timersPerDevice(pollers, seconds, rateHz) {
  const period = 1000 / rateHz
  let count = 0
  let late = 0
  const started = performance.now()
  const end = started + seconds * 1000
  await Promise.all(
    pollers.map(async (p, i) => {
      for (let due = started + (i / pollers.length) * period; due < end; due += period) {
        await sleep(due - performance.now())
        await p()
        count++
        if (performance.now() > due + period) late++
      }
    }),
  )
  return { count, late }
}

/**
 * poll-1k (as fast as it goes), poll-1k-1hz (one timer per device, for every
 * client) and gateway (1 Hz: the project's poller, the peers' timers per device).
 */
async function poll(devices, seconds, rateHz, gateway = false) {
  const { lib, conns, pollers, connectSeconds } = await openPolled(devices)
  const runGateway = gateway && client.prepareGateway ? client.prepareGateway(lib, conns, { rateHz }) : undefined
  let run
  const cpu = process.cpuUsage()
  const started = performance.now()
  if (runGateway) {
    run = await runGateway(seconds)
  } else if (rateHz) {
    run = await timersPerDevice(pollers, seconds, rateHz)
  } else if (client.groupPoll) {
    // Every device's plan in one call per round: a round counts each device's poll.
    run = await timedLoop(1, seconds, client.groupPoll(lib, pollers))
    run.count *= devices
  } else {
    run = await timedLoop(devices, seconds, (i) => pollers[i]())
  }
  run.seconds = (performance.now() - started) / 1000
  run.cpu = cpuSeconds(cpu)
  await mapLimit(conns, 100, (c) => client.close(c))
  const tags = run.count * POLL.tags.length
  return {
    tagsPerSec: tags / run.seconds,
    cpuSecPerMillionTags: (run.cpu / tags) * 1e6,
    peakRssMb: peakRssMb(),
    connectSeconds,
    ...(rateHz ? { latePolls: run.late } : {}),
  }
}

/** decode: one frame per call; decode-many: the project decodes all the frames with one call, the peers as in decode. */
async function decode(frameCount, passes, many = false) {
  const { frames, expected } = makeFrames(frameCount)
  const decodeFrame = client.decoder(client.load())
  for (let f = 0; f < frames.length; f++) check(`frame ${f}`, await decodeFrame(frames[f]), expected[f]) // also the warm-up
  const decodeAll = many && client.manyDecoder ? client.manyDecoder(client.load(), frames.length) : undefined
  if (decodeAll) {
    const values = decodeAll(frames)
    const width = expected[0].length
    for (let f = 0; f < frames.length; f++) check(`frame ${f} of many`, values.subarray(f * width, (f + 1) * width), expected[f])
  }
  const cpu = process.cpuUsage()
  const started = performance.now()
  for (let pass = 0; pass < passes; pass++) {
    if (decodeAll) decodeAll(frames)
    else for (const frame of frames) await decodeFrame(frame)
  }
  const seconds = (performance.now() - started) / 1000
  const tags = frames.length * passes * expected[0].length
  return { tagsPerSec: tags / seconds, cpuSecPerMillionTags: (cpuSeconds(cpu) / tags) * 1e6, peakRssMb: peakRssMb() }
}

async function startup() {
  const started = performance.now()
  const lib = client.load()
  const conn = await client.open(lib, server)
  const values = await client.blockReader(conn)()
  const ms = performance.now() - started
  const rssMb = process.memoryUsage().rss / 2 ** 20
  check('first value', values, BLOCK_EXPECTED)
  await client.close(conn)
  return { ms, rssMb }
}

async function scale(connections) {
  const lib = client.load()
  const baseRssMb = process.memoryUsage().rss / 2 ** 20
  const started = performance.now()
  const conns = await mapLimit(Array.from({ length: connections }), 200, () => client.open(lib, server))
  const connectSeconds = (performance.now() - started) / 1000
  await sleep(1000) // held idle
  const rssMb = process.memoryUsage().rss / 2 ** 20
  check('a read on the last connection', await client.blockReader(conns.at(-1))(), BLOCK_EXPECTED)
  await mapLimit(conns, 200, (c) => client.close(c))
  return { connectSeconds, rssMb, peakRssMb: peakRssMb(), baseRssMb }
}

/** enip: one group read of the 1,000 tags per cycle, for `seconds`; the first cycle's values are checked. */
async function enip(seconds) {
  const reader = await client.enipReader(client.load(), { host: settings.enipHost, port: settings.enipPort })
  check('first enip cycle', await reader.read(), ENIP.values)
  for (let i = 0; i < 20; i++) await reader.read() // warm-up
  const run = await timedLoop(1, seconds, () => reader.read())
  await reader.close()
  const tags = run.count * ENIP.tags.length
  return { tagsPerSec: tags / run.seconds, cpuSecPerMillionTags: (run.cpu / tags) * 1e6, peakRssMb: peakRssMb() }
}

/**
 * opcua-read: one batched Read of the 2,000 nodes per cycle, for `seconds`; the first cycle's values
 * are checked. With `secure`, on a channel of Basic256Sha256 in SignAndEncrypt.
 */
async function opcuaRead(seconds, { url, ns }, secure = false) {
  const reader = await client.opcuaReader(client.load(), url, OPCUA.nodes(ns), secure)
  check('first opcua read', await reader.read(), OPCUA.values)
  for (let i = 0; i < 20; i++) await reader.read() // warm-up
  const run = await timedLoop(1, seconds, () => reader.read())
  await reader.close()
  const values = run.count * OPCUA.count
  return { valuesPerSec: values / run.seconds, cpuMicrosPerValue: (run.cpu / values) * 1e6, peakRssMb: peakRssMb() }
}

/**
 * opcua-startup: from loading the client to the first value of one node, and
 * the parts: loading (require), then the connection with its secure channel and session.
 */
async function opcuaStartup() {
  const started = performance.now()
  const lib = client.load()
  const loaded = performance.now()
  const reader = await client.opcuaReader(lib, settings.opcua.url, OPCUA.nodes(settings.opcua.ns).slice(1, 2))
  const connected = performance.now()
  const values = await reader.read()
  const ms = performance.now() - started
  const rssMb = process.memoryUsage().rss / 2 ** 20
  check('first opcua value', values, OPCUA.values.subarray(1, 2))
  await reader.close()
  return { ms, requireMs: loaded - started, connectMs: connected - loaded, rssMb }
}

/** opcua-decode: one ReadResponse of 2,000 Doubles, node-opcua's encoding, decoded into numbers `passes` times. */
async function opcuaDecode(passes) {
  const body = opcuaReadResponse()
  const decodeBody = client.opcuaDecoder(client.load(), OPCUA.count)
  check('decoded opcua values', decodeBody(body), OPCUA.values)
  for (let i = 0; i < 100; i++) decodeBody(body) // warm-up
  const cpu = process.cpuUsage()
  const started = performance.now()
  for (let pass = 0; pass < passes; pass++) decodeBody(body)
  const seconds = (performance.now() - started) / 1000
  const values = passes * OPCUA.count
  return { valuesPerSec: values / seconds, cpuMicrosPerValue: (cpuSeconds(cpu) / values) * 1e6 }
}

/**
 * Resolves once a batch has come and gone: `received()` grew, then held still
 * for 150 ms, so a window opened and closed this way spans whole publishing
 * intervals. Polls only while it waits, at most 10 s.
 */
async function afterBatch(received) {
  const began = performance.now()
  const start = received()
  let last = start
  let stillSince = began
  for (;;) {
    await sleep(25)
    const now = received()
    if (now !== last) [last, stillSince] = [now, performance.now()]
    else if (now !== start && performance.now() - stillSince >= 150) return
    if (performance.now() - began > 10_000) throw new Error('no notification came in 10 s')
  }
}

/**
 * opcua-subscribe: `count` monitored items (Doubles that all change each second)
 * sampled and published each second; once every item's first value came,
 * the notifications received over about `seconds` whole publishing intervals
 * (from just after one batch to just after another), and the client's CPU and RSS.
 */
async function opcuaSubscribe(count, seconds) {
  const { url, ns } = settings.open62541Changing
  // A plain loop: a callback called 10,000 times would be optimized by TurboFan, whose memory is not the client's.
  const nodes = []
  for (let i = 0; i < count; i++) nodes.push(`ns=${ns};s=V${5 * i}`)
  const subscriber = await client.opcuaSubscriber(client.load(), url, nodes, 1000)
  await subscriber.first
  await afterBatch(subscriber.received)
  const before = subscriber.received()
  const cpu = process.cpuUsage()
  const started = performance.now()
  await sleep((seconds - 0.5) * 1000)
  await afterBatch(subscriber.received)
  const elapsed = (performance.now() - started) / 1000
  const received = subscriber.received() - before
  const used = cpuSeconds(cpu)
  await subscriber.close()
  if (received < count * (seconds - 2)) throw new Error(`only ${received} notifications of ${count} items in ${seconds} s`)
  return { notificationsPerSec: received / elapsed, cpuPercent: (used / elapsed) * 100, peakRssMb: peakRssMb() }
}

const s = settings
const run = {
  startup: () => startup(),
  seq: () => requests(1, s.seqSeconds, 1),
  pipelined: () => requests(s.pipelinedCallers, s.pipelinedSeconds, s.pipelinedCallers),
  'poll-1k': () => poll(s.pollDevices, s.pollSeconds, 0),
  'poll-1k-1hz': () => poll(s.pollDevices, s.pollRateSeconds, 1),
  gateway: () => poll(s.pollDevices, s.pollRateSeconds, 1, true),
  decode: () => decode(s.decodeFrames, s.decodePasses),
  'decode-many': () => decode(s.decodeFrames, s.decodePasses, true),
  scale: () => scale(s.scaleConnections),
  enip: () => enip(s.enipSeconds),
  'opcua-read': () => opcuaRead(s.opcuaSeconds, s.opcua),
  'opcua-read-open62541': () => opcuaRead(s.opcuaSeconds, s.open62541),
  'opcua-read-secure': () => opcuaRead(s.opcuaSeconds, s.open62541Secure, true),
  'opcua-startup': () => opcuaStartup(),
  'opcua-decode': () => opcuaDecode(OPCUA.decodePasses),
  'opcua-subscribe-1k': () => opcuaSubscribe(1000, s.opcuaSubscribeSeconds),
  'opcua-subscribe-10k': () => opcuaSubscribe(10_000, s.opcuaSubscribeSeconds),
}[workload]
if (!run) throw new Error(`unknown workload ${workload}`)
const result = await run()
process.stdout.write(JSON.stringify({ client: client.name, version: client.version, workload, ...result }) + '\n')
process.exit(0)
