// The device runtime under both I/O drivers (the suite runs once per driver):
// the circuit breaker, a busy event loop, and a device closed from its own callback.
import test from 'ava'
import type net from 'node:net'
import { connect, startSimulator } from '../src/index.js'
import type { BifrostError } from '../src/index.js'
import { failure, rawServer, stats } from './helpers.js'

/** A Modbus TCP device that answers FC3 reads (register i = i) only while `answering` is set. */
async function switchableDevice() {
  const state = { answering: false, requests: 0 }
  const server = await rawServer((socket: net.Socket) => {
    let input = Buffer.alloc(0)
    socket.on('data', (chunk) => {
      input = Buffer.concat([input, chunk])
      while (input.length >= 12) {
        const frame = input.subarray(0, 12)
        input = input.subarray(12)
        state.requests++
        if (!state.answering) continue
        const address = frame.readUInt16BE(8)
        const reply = Buffer.from([frame[0]!, frame[1]!, 0, 0, 0, 5, frame[6]!, 3, 2, address >> 8, address & 0xff])
        socket.write(reply)
      }
    })
  })
  return { ...server, state }
}

test('the breaker opens after timeouts in a row, fails calls fast with the cause, and a half-open probe closes it', async (t) => {
  const device = await switchableDevice()
  const dev = await connect(`modbus-tcp://127.0.0.1:${device.port}?request-timeout=1000&breaker-threshold=2`)
  for (let i = 0; i < 2; i++) t.is((await failure(dev.read('holding-register:1:UINT'))).code, 'ETIMEDOUT')
  // Open: the next call fails at once, with the cause, and is never sent.
  const sent = device.state.requests
  const started = performance.now()
  const fast = await failure(dev.read('holding-register:1:UINT'))
  // Open for at least one request timeout: the call neither waits for it nor reaches the device.
  t.true(performance.now() - started < 500, `a call took ${performance.now() - started} ms while the breaker was open`)
  t.is(fast.code, 'ETIMEDOUT')
  t.regex(fast.message, /did not answer 2 request\(s\) in a row.*backed off/)
  t.is(device.state.requests, sent)
  t.true(stats(dev).breakerOpens >= 1)
  // The device comes back; once the breaker's wait is over, one probe goes out and closes it.
  device.state.answering = true
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.is(await dev.read('holding-register:7:UINT'), 7)
  const values = await Promise.all(Array.from({ length: 20 }, (_, i) => dev.read(`holding-register:${i}:UINT`)))
  t.deepEqual(values, Array.from({ length: 20 }, (_, i) => i))
  await dev.close()
  await device.close()
})

// Serial: it blocks the thread, which other tests in this file must not feel.
test.serial('a blocked event loop loses and mixes up no reply', async (t) => {
  const sim = await startSimulator({ latencyMs: 20 })
  const dev = await connect(`${sim.url}?max-in-flight=16&request-timeout=2000`)
  const reads: Array<Promise<unknown>> = []
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 40; i++) reads.push(dev.read(`holding-register:${round * 40 + i}:UINT`))
    // Replies arrive while JavaScript holds the thread for 200 ms.
    await new Promise((resolve) => setTimeout(resolve, 5))
    const until = Date.now() + 200
    while (Date.now() < until);
  }
  t.deepEqual(await Promise.all(reads), Array.from({ length: 200 }, (_, i) => i))
  t.is(stats(dev).unmatched, 0)
  t.is(stats(dev).timeouts, 0)
  await dev.close()
  sim.stop()
})

test('a device closed from inside its own callback settles every call and stays usable for errors', async (t) => {
  const sim = await startSimulator()
  const dev = await connect(`${sim.url}?max-in-flight=64`)
  let closedBy = -1
  const reads = Array.from({ length: 64 }, (_, i) =>
    dev.read(`holding-register:${i}:UINT`).then(
      async (value) => {
        if (closedBy < 0) {
          closedBy = i
          await dev.close() // from the continuation of a read the driver just settled
        }
        return value
      },
      (e: BifrostError) => e.code,
    ),
  )
  const outcomes = await Promise.all(reads)
  t.true(closedBy >= 0)
  // Every call settled: with its own value, or with ECLOSED if the close overtook it.
  outcomes.forEach((outcome, i) => t.true(outcome === i || outcome === 'ECLOSED', `read ${i}: ${String(outcome)}`))
  t.is((await failure(dev.read('holding-register:0:UINT'))).code, 'ECLOSED')
  sim.stop()
})
