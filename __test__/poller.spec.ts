// The gateway API against the simulator: the poller (1,000 devices, 10,000
// devices, a device that dies and comes back, a slow consumer, deadbands,
// overruns, a plugin's device) and group reads with readPlans and readPlansInto.
import test from 'ava'
import type { ExecutionContext } from 'ava'
import { join } from 'node:path'
import { BifrostError, connect, createPoller, PreparedRead, readPlans, readPlansInto, registerPlugin, startSimulator } from '../src/index.js'
import type { Device, PollEntry, Poller, ProtocolPlugin, Simulator, TagValue } from '../src/index.js'
import { freePort, startProcess, stopProcess } from './helpers.js'

const BIN = join(__dirname, '..', 'bin', 'bifrost.js')
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Register `i` of the simulator holds `i`; coil `i` is `i % 2 == 1`. */
const TAGS = ['holding-register:0:UINT[10]', 'holding-register:20:INT', 'coil:3', 'holding-register:40:DINT']
const EXPECTED = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 20, 1, 40 * 65536 + 41]

/** Opens `count` devices, at most `limit` connecting at once. */
async function connectMany(url: string, count: number, limit = 100): Promise<Device[]> {
  const devices: Device[] = []
  for (let i = 0; i < count; i += limit) {
    devices.push(...(await Promise.all(Array.from({ length: Math.min(limit, count - i) }, () => connect(url)))))
  }
  return devices
}

/** Consumes a poller in the background; `until` waits for a condition on what arrived. */
function collect(poller: Poller) {
  const entries: PollEntry[] = []
  let batches = 0
  const done = (async () => {
    for await (const batch of poller) {
      batches++
      entries.push(...batch)
    }
  })()
  return {
    entries,
    get batches() {
      return batches
    },
    done,
    async until(t: ExecutionContext, what: string, ok: () => boolean, timeoutMs = 20_000) {
      const end = Date.now() + timeoutMs
      while (!ok()) {
        if (Date.now() > end) t.fail(`timed out waiting for ${what}`)
        if (Date.now() > end) return
        await sleep(20)
      }
    },
  }
}

test.serial('1,000 devices in one poller: every poll delivered with exact values, many polls per batch', async (t) => {
  const sim = await startSimulator()
  const devices = await connectMany(sim.url, 1000)
  const poller = createPoller({ intervalMs: 500 })
  const handles = new Map(devices.map((device) => [poller.add(device, TAGS), device]))
  const seen = collect(poller)
  const polls = new Map<number, number>()
  await seen.until(t, 'two polls of every device', () => {
    for (const entry of seen.entries.splice(0)) {
      t.is(entry.device, handles.get(entry.handle), 'the entry names its device')
      t.deepEqual(entry.tags, TAGS)
      t.deepEqual(Array.from(entry.values), EXPECTED)
      t.deepEqual(Array.from(entry.quality), [0, 0, 0, 0])
      t.is(entry.errors.size, 0)
      polls.set(entry.handle, (polls.get(entry.handle) ?? 0) + 1)
    }
    return polls.size === 1000 && [...polls.values()].every((n) => n >= 2)
  })
  const delivered = [...polls.values()].reduce((a, b) => a + b, 0)
  t.true(seen.batches * 10 < delivered, `${seen.batches} batches carried ${delivered} polls: JavaScript runs per batch, not per device`)
  const health = poller.health()
  t.is(health.length, 1000)
  for (const h of health) {
    t.is(h.failures, 0)
    t.is(h.state, 'good')
    t.true(h.latencyMs !== undefined && h.latencyMs.p50 <= h.latencyMs.p99)
  }
  await poller.close()
  await seen.done
  await Promise.all(devices.map((d) => d.close()))
  sim.stop()
})

test.serial('a read of several requests on a device that takes one at a time: every poll reads every tag', async (t) => {
  const sim = await startSimulator()
  const device = await connect(`${sim.url}?max-in-flight=1`)
  // Six blocks far apart: six requests per poll, each written after the reply before it.
  const tags = [0, 200, 400, 600, 800, 1000].map((address) => `holding-register:${address}:UINT`)
  const poller = createPoller({ intervalMs: 40, batchMs: 0 })
  poller.add(device, tags)
  const seen = collect(poller)
  await seen.until(t, 'ten polls', () => seen.entries.length >= 10)
  for (const entry of seen.entries) {
    t.deepEqual(Array.from(entry.values), [0, 200, 400, 600, 800, 1000])
    t.is(entry.errors.size, 0)
  }
  t.is(poller.health()[0]!.failures, 0)
  await poller.close()
  await seen.done
  await device.close()
  sim.stop()
})

test.serial('a device that dies and comes back: its polls fail with the cause, then read again; the other device never stops', async (t) => {
  const port = await freePort()
  let dying: Simulator = await startSimulator({ port })
  const steady = await startSimulator()
  const [flaky, stable] = await Promise.all([
    connect(`modbus-tcp://127.0.0.1:${port}?request-timeout=300&connect-timeout=300`),
    connect(steady.url),
  ])
  const poller = createPoller({ intervalMs: 50, batchMs: 20 })
  const flakyHandle = poller.add(flaky, ['holding-register:7:UINT'])
  const stableHandle = poller.add(stable, ['holding-register:8:UINT'])
  const seen = collect(poller)
  const of = (handle: number) => seen.entries.filter((e) => e.handle === handle)
  await seen.until(t, 'good polls of the flaky device', () => of(flakyHandle).some((e) => e.values[0] === 7))

  dying.stop()
  await seen.until(t, 'failed polls', () => of(flakyHandle).some((e) => e.quality[0] === 1))
  const failed = of(flakyHandle).find((e) => e.quality[0] === 1)!
  t.true(Number.isNaN(failed.values[0]))
  t.true(failed.errors.get(0) instanceof BifrostError)
  t.regex(failed.errors.get(0)!.code, /^(ECONNRESET|ECONNREFUSED|ETIMEDOUT)$/)
  const during = poller.health().find((h) => h.handle === flakyHandle)!
  t.true(during.failures > 0)
  t.true(during.lastError instanceof BifrostError)

  await sleep(300) // an outage of several intervals
  const failedAt = seen.entries.length
  dying = await startSimulator({ port })
  await seen.until(t, 'good polls after the device came back', () => seen.entries.slice(failedAt).some((e) => e.handle === flakyHandle && e.values[0] === 7))
  const recovered = of(flakyHandle).at(-1)!.timestamp
  const stablePolls = of(stableHandle)
  t.true(stablePolls.some((e) => e.timestamp > failed.timestamp && e.timestamp < recovered), 'the other device read during the outage')
  t.true(stablePolls.every((e) => e.values[0] === 8 && e.quality[0] === 0), 'the other device read through it all')
  t.is(poller.health().find((h) => h.handle === flakyHandle)!.state, 'good')
  await poller.close()
  await seen.done
  await Promise.all([flaky.close(), stable.close()])
  dying.stop()
  steady.stop()
})

test.serial('a device that closes idle connections between polls: the close is seen when it comes, so every poll reads', async (t) => {
  // Each connection is closed 250 ms after its last poll, 150 ms before the next one: no poll races a close.
  const sim = await startSimulator({ idleTimeoutMs: 250 })
  const device = await connect(sim.url)
  const poller = createPoller({ intervalMs: 400, batchMs: 20 })
  const handle = poller.add(device, ['holding-register:7:UINT'])
  const seen = collect(poller)
  await seen.until(t, 'six polls', () => seen.entries.length >= 6)
  await poller.close()
  await seen.done
  t.true(device.stats().connects >= 4, `the device closed the idle connections: ${device.stats().connects} connects`)
  t.deepEqual(
    seen.entries.map((e) => [e.handle, e.values[0], e.errors.get(0)?.message]),
    seen.entries.map(() => [handle, 7, undefined]),
  )
  await device.close()
  sim.stop()
})

test.serial('10,000 devices added, each polled, then removed: nothing is delivered after', async (t) => {
  t.timeout(110_000)
  const port = await freePort()
  // Another process serves them: 10,000 connections and their server ends would not fit one process's files.
  const server = await startProcess(process.execPath, [BIN, 'simulate', 'modbus', '--port', String(port)], 'listening')
  try {
    const devices = await connectMany(`modbus-tcp://127.0.0.1:${port}`, 10_000, 200)
    const poller = createPoller({ intervalMs: 2000, maxPending: 20_000 })
    const handles = devices.map((device) => poller.add(device, ['holding-register:3:UINT']))
    t.is(poller.size, 10_000)
    const seen = collect(poller)
    const polled = new Set<number>()
    await seen.until(t, 'a poll of every device', () => {
      for (const entry of seen.entries.splice(0)) {
        if (entry.values[0] === 3) polled.add(entry.handle)
      }
      return polled.size === 10_000
    }, 60_000)
    t.is(handles.filter((handle) => poller.remove(handle)).length, 10_000)
    t.is(poller.size, 0)
    t.deepEqual(poller.health(), [])
    t.false(poller.remove(handles[0]!), 'a removed handle is unknown')
    await sleep(2500) // longer than an interval
    t.deepEqual(seen.entries, [], 'no poll after removal')
    await poller.close()
    await seen.done
    for (let i = 0; i < devices.length; i += 500) await Promise.all(devices.slice(i, i + 500).map((d) => d.close()))
  } finally {
    await stopProcess(server)
  }
})

test.serial('a slow consumer: undelivered polls are bounded, the oldest dropped and counted', async (t) => {
  const sim = await startSimulator()
  const devices = await connectMany(sim.url, 5)
  const poller = createPoller({ intervalMs: 20, maxPending: 25 })
  for (const device of devices) poller.add(device, ['holding-register:2:UINT'])
  await sleep(1000) // nobody reads meanwhile
  const batch = (await poller.next())!
  const health = poller.health()
  const polls = health.reduce((sum, h) => sum + h.polls, 0)
  t.is(batch.length, 25)
  t.true(poller.dropped > 0)
  t.is(poller.dropped + batch.length, polls, 'every finished poll was either delivered or counted as dropped')
  t.is(health.reduce((sum, h) => sum + h.drops, 0), poller.dropped)
  const timestamps = batch.map((e) => e.timestamp)
  t.deepEqual(timestamps, [...timestamps].sort((a, b) => a - b), 'oldest first')
  t.true(Date.now() - timestamps[0]! < 500, 'the newest polls were kept')
  await poller.close()
  t.is(await poller.next(), undefined, 'a closed poller ends iteration')
  await Promise.all(devices.map((d) => d.close()))
  sim.stop()
})

test.serial('deadbands deliver only the tags that moved past them, and quality changes', async (t) => {
  const sim = await startSimulator({ invalid: ['holding-register:300-300'] })
  const device = await connect(sim.url)
  await device.writeTags({ 'holding-register:100:INT': 100, 'holding-register:101:INT': 50, 'holding-register:200:UINT': 200 })
  const poller = createPoller({ intervalMs: 20, batchMs: 0 })
  const absolute = poller.add(device, ['holding-register:100:INT', 'holding-register:101:INT'], { deadband: { type: 'absolute', value: 5 } })
  const percent = poller.add(device, ['holding-register:200:UINT'], { deadband: { type: 'percent', value: 10 } })
  const seen = collect(poller)
  const of = (handle: number) => seen.entries.filter((e) => e.handle === handle)
  const pollsOf = (handle: number) => poller.health().find((h) => h.handle === handle)!.polls
  await seen.until(t, 'first deliveries', () => of(absolute).length === 1 && of(percent).length === 1)
  t.deepEqual(Array.from(of(absolute)[0]!.indices!), [0, 1], 'the first poll delivers every tag')
  t.deepEqual(Array.from(of(absolute)[0]!.values), [100, 50])

  /** Writes, waits for three more polls of `handle`, and returns what it delivered meanwhile. */
  const after = async (values: Record<string, number>, handle: number) => {
    const before = of(handle).length
    await device.writeTags(values)
    const target = pollsOf(handle) + 3
    await seen.until(t, 'three more polls', () => pollsOf(handle) >= target)
    await sleep(30)
    return of(handle).slice(before)
  }
  t.deepEqual(await after({ 'holding-register:100:INT': 104 }, absolute), [], 'within the deadband')
  const moved = await after({ 'holding-register:101:INT': 44 }, absolute)
  t.is(moved.length, 1)
  t.deepEqual(moved[0]!.tags, ['holding-register:101:INT'])
  t.deepEqual(Array.from(moved[0]!.indices!), [1])
  t.deepEqual(Array.from(moved[0]!.values), [44])
  const fromLastDelivered = await after({ 'holding-register:100:INT': 106 }, absolute)
  t.deepEqual(Array.from(fromLastDelivered[0]!.values), [106], '106 is past 5 from the 100 last delivered')

  t.deepEqual(await after({ 'holding-register:200:UINT': 215 }, percent), [], '7.5% is within 10%')
  t.deepEqual(Array.from((await after({ 'holding-register:200:UINT': 225 }, percent))[0]!.values), [225])

  const failing = poller.add(device, ['holding-register:300:UINT', 'holding-register:299:UINT'], { deadband: { type: 'absolute', value: 0 } })
  await seen.until(t, 'the failing read', () => of(failing).length === 1)
  const first = of(failing)[0]!
  t.deepEqual(Array.from(first.quality), [1, 0])
  t.is(first.errors.get(0)?.code, 'MODBUS_EXCEPTION')
  t.is(first.errors.get(0)?.exceptionCode, 2)
  const target = pollsOf(failing) + 3
  await seen.until(t, 'more polls', () => pollsOf(failing) >= target)
  t.is(of(failing).length, 1, 'a tag still failing is not delivered again')
  t.is(poller.health().find((h) => h.handle === failing)!.state, 'partial')
  await poller.close()
  await seen.done
  await device.close()
  sim.stop()
})

test.serial('a poll slower than its interval: ticks are skipped and counted as overruns, never queued', async (t) => {
  const sim = await startSimulator({ latencyMs: 150 })
  const device = await connect(sim.url)
  const poller = createPoller({ intervalMs: 50, batchMs: 0 })
  poller.add(device, ['holding-register:1:UINT'])
  const seen = collect(poller)
  await seen.until(t, 'four polls', () => seen.entries.length >= 4)
  const [health] = poller.health()
  t.true(health!.overruns >= health!.polls, `${health!.overruns} overruns for ${health!.polls} polls`)
  t.true(health!.late >= 1)
  t.is(health!.failures, 0)
  t.true(sim.requests <= health!.polls + 2, 'one request per poll started, none queued')
  t.true(seen.entries.every((e) => e.values[0] === 1))
  await poller.close()
  await seen.done
  await device.close()
  sim.stop()
})

test.serial("a plugin's device is polled through its plugin, in the same batch shape", async (t) => {
  const sim = await startSimulator()
  // A plugin written in TypeScript (no prepare), reading a real device through a connection of its own.
  class Forwarding implements ProtocolPlugin {
    private inner?: Device
    async connect() {
      this.inner = await connect(sim.url)
    }
    readTags(tags: string[]) {
      return this.inner!.readTags(tags)
    }
    writeTags(values: Array<[string, TagValue]>) {
      return this.inner!.writeTags(values)
    }
    async disconnect() {
      await this.inner?.close()
    }
  }
  registerPlugin('forwarding', () => new Forwarding())
  const plugged = await connect('forwarding://anything')
  const native = await connect(sim.url)
  const poller = createPoller({ intervalMs: 30 })
  const viaPlugin = poller.add(plugged, ['holding-register:11:UINT', 'holding-register:999999'])
  const direct = poller.add(native, ['holding-register:12:UINT'])
  const seen = collect(poller)
  await seen.until(t, 'polls of both', () => [viaPlugin, direct].every((h) => seen.entries.some((e) => e.handle === h)))
  const entry = seen.entries.find((e) => e.handle === viaPlugin)!
  t.is(entry.device, plugged)
  t.deepEqual(entry.tags, ['holding-register:11:UINT', 'holding-register:999999'])
  t.is(entry.values[0], 11)
  t.deepEqual(Array.from(entry.quality), [0, 1])
  t.is(entry.errors.get(1)?.code, 'EADDRESS')
  t.is(seen.entries.find((e) => e.handle === direct)!.values[0], 12)
  await plugged.close()
  await seen.until(t, 'a failed poll of the closed device', () => seen.entries.some((e) => e.handle === viaPlugin && e.errors.get(0)?.code === 'ECLOSED'))
  t.is(poller.health().find((h) => h.handle === viaPlugin)!.state, 'failed')
  await poller.close()
  await seen.done
  await native.close()
  sim.stop()
})

test.serial('readPlans reads many devices with one call, in order, a closed device failing alone', async (t) => {
  const [a, b] = await Promise.all([startSimulator(), startSimulator()])
  const devices = await Promise.all([connect(a.url), connect(b.url), connect(a.url), connect(b.url)])
  const plans = devices.map((device, i) => device.prepare([`holding-register:${i}:UINT`, 'coil:1', `holding-register:${50 + i}:DINT`]))
  const reads = await readPlans(plans)
  t.is(reads.length, 4)
  reads.forEach((read, i) => {
    t.deepEqual(Array.from(read.values), [i, 1, (50 + i) * 65536 + 51 + i])
    t.is(read.errors.size, 0)
  })
  await devices[2]!.close()
  const again = await readPlans(plans, { timeout: 2000 })
  t.deepEqual(Array.from(again[2]!.quality), [1, 1, 1])
  t.is(again[2]!.errors.get(0)?.code, 'ECLOSED')
  t.deepEqual(Array.from(again[3]!.values), [3, 1, 53 * 65536 + 54])
  t.deepEqual(await readPlans([]), [])
  await Promise.all(devices.map((d) => d.close()))
  a.stop()
  b.stop()
})

test.serial('readPlansInto reads many devices into one array, a closed device failing alone', async (t) => {
  const [a, b] = await Promise.all([startSimulator(), startSimulator()])
  const devices = await Promise.all([connect(a.url), connect(b.url), connect(a.url), connect(b.url)])
  const plans = devices.map((device, i) => device.prepare([`holding-register:${i}:UINT[3]`, 'coil:1', `holding-register:${50 + i}:DINT`]))
  t.deepEqual(plans.map((p) => p.valueCount), [5, 5, 5, 5], 'an array tag counts its elements')
  const expected = (i: number) => [i, i + 1, i + 2, 1, (50 + i) * 65536 + 51 + i]
  const values = new Float64Array(21).fill(-1)
  const read = await readPlansInto(plans, values)
  plans.forEach((_, i) => t.deepEqual(Array.from(values.subarray(i * 5, i * 5 + 5)), expected(i)))
  t.is(values[20], -1, 'nothing past the plans is written')
  t.is(read.errors.size, 0)
  t.true(Math.abs(read.timestamp - Date.now()) < 60_000)
  t.throws(() => (read.errors as Map<number, ReadonlyMap<number, BifrostError>>).set(0, new Map()), { instanceOf: TypeError })

  await devices[2]!.close()
  const again = await readPlansInto(plans, values, { timeout: 2000 })
  t.true(values.subarray(10, 15).every(Number.isNaN), "the closed device's values are NaN")
  t.deepEqual([...again.errors.keys()], [2])
  t.deepEqual([...again.errors.get(2)!.keys()], [0, 1, 2])
  t.is(again.errors.get(2)!.get(0)?.code, 'ECLOSED')
  t.deepEqual(Array.from(values.subarray(15, 20)), expected(3))

  const code = async (promise: Promise<unknown>) => ((await t.throwsAsync(promise)) as BifrostError).code
  t.is(await code(readPlansInto(plans, new Float64Array(19))), 'EINVAL', 'too short')
  t.is(await code(readPlansInto(plans, new Float32Array(20) as unknown as Float64Array)), 'EINVAL', 'not a Float64Array')
  t.is(await code(readPlansInto([{} as PreparedRead], values)), 'EINVAL', 'not a plan')
  // The array's buffer moves to another owner while the reads run: the call fails, nothing is written.
  const moving = new Float64Array(20)
  const pending = readPlansInto(plans, moving)
  structuredClone(moving.buffer, { transfer: [moving.buffer] })
  t.is(await code(pending), 'EINVAL', 'detached meanwhile')
  t.is((await readPlansInto([], values)).errors.size, 0, 'no plans: nothing read')
  // A TypeScript plugin's plan: its value count is known only once read.
  registerPlugin('into-forwarding', () => ({
    connect: async () => {},
    readTags: (tags: string[]) => devices[0]!.readTags(tags),
    writeTags: (writes: Array<[string, TagValue]>) => devices[0]!.writeTags(writes),
    disconnect: async () => {},
  }))
  const plugged = await connect('into-forwarding://anything')
  const pluginPlan = plugged.prepare(['holding-register:7:UINT'])
  t.is(pluginPlan.valueCount, undefined)
  t.is(await code(readPlansInto([plans[0]!, pluginPlan], values)), 'EINVAL', "a plugin's plan")
  t.deepEqual(Array.from((await pluginPlan.read()).values), [7], 'which readPlans and read() still take')
  await plugged.close()
  const last = await readPlansInto([plans[0]!, plans[3]!], values)
  t.is(last.errors.size, 0, 'later calls still work')
  t.deepEqual(Array.from(values.subarray(0, 10)), [...expected(0), ...expected(3)])
  await Promise.all(devices.map((d) => d.close()))
  a.stop()
  b.stop()
})

test.serial('bad poller options and bad plans are EINVAL, a bad tag EADDRESS, a closed poller ECLOSED', async (t) => {
  const sim = await startSimulator()
  const device = await connect(sim.url)
  const code = (fn: () => unknown) => (t.throws(fn) as BifrostError).code
  t.is(code(() => createPoller({ intervalMs: 0 })), 'EINVAL')
  t.is(code(() => createPoller({ batchMs: -1 })), 'EINVAL')
  t.is(code(() => createPoller({ maxPending: 0 })), 'EINVAL')
  const poller = createPoller()
  t.is(code(() => poller.add(device, ['holding-register:0'], { intervalMs: 1.5 })), 'EINVAL')
  t.is(code(() => poller.add(device, ['holding-register:0'], { deadband: { type: 'relative' as 'absolute', value: 1 } })), 'EINVAL')
  t.is(code(() => poller.add(device, ['holding-register:0'], { deadband: { type: 'absolute', value: -1 } })), 'EINVAL')
  t.is(code(() => poller.add(device, ['holding-register:0'], { deadband: { type: 'percent', value: NaN } })), 'EINVAL')
  t.is(code(() => poller.add({} as Device, ['holding-register:0'])), 'EINVAL')
  t.is(code(() => poller.add(device, [])), 'EINVAL')
  t.is(code(() => poller.add(device, ['holding-register:0:STRING(4)'])), 'EADDRESS')
  t.is(code(() => poller.add(device, ['no-such-table:1'])), 'EADDRESS')
  t.is(poller.size, 0)
  await t.throwsAsync(readPlans([{} as never]), { instanceOf: BifrostError, message: /readPlans takes an array/ })
  await t.throwsAsync(readPlans([], { timeout: -1 }), { instanceOf: BifrostError, message: /timeout must be/ })
  const concurrent = [poller.next(), poller.next()]
  await t.throwsAsync(concurrent[1]!, { instanceOf: BifrostError, message: /already awaited/ })
  await poller.close()
  t.is(await concurrent[0], undefined, 'closing ends the waiting next()')
  t.is(code(() => poller.add(device, ['holding-register:0'])), 'ECLOSED')
  await device.close()
  sim.stop()
})
