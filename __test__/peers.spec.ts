// Third-party peers over real sockets and pseudo-terminals: pymodbus as TCP and
// serial (RTU) server for our client, and mbpoll as client of our simulator,
// which also verifies what our client wrote.
import test from 'ava'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, startSimulator } from '../src/index.js'
import type { BifrostError } from '../src/index.js'
import { DEBIAN_PYTHON, PEERS, freePort, hasMbpoll, hasPymodbus, hasSocat, peerTest, run, startProcess, stopProcess, waitForPort } from './helpers.js'

const pymodbus = { name: 'python3-pymodbus (Debian, /usr/bin/python3)', present: hasPymodbus() }
const mbpoll = { name: 'mbpoll', present: hasMbpoll() }
const pymodbusAndSocat = { name: 'python3-pymodbus and socat', present: pymodbus.present && hasSocat() }

const children: ChildProcess[] = []
test.after.always(async () => {
  for (const child of children) await stopProcess(child)
})

/** mbpoll's values from its "[ref]: value" lines. */
function mbpollValues(output: string): string[] {
  return [...output.matchAll(/^\[\d+\]:\s+(\S+)/gm)].map((m) => m[1]!)
}

peerTest('our client reads and writes a pymodbus TCP server', pymodbus, async (t) => {
  const port = await freePort()
  children.push(await startProcess(DEBIAN_PYTHON, [join(PEERS, 'pymodbus_server.py'), 'tcp', String(port)], 'listening'))
  await waitForPort(port)
  const dev = await connect(`modbus-tcp://127.0.0.1:${port}?max-in-flight=1&request-timeout=2000`)
  const results = await dev.readTags([
    'holding-register:0:UINT[5]',
    'input-register:10:UINT[2]',
    'coil:0:BOOL[6]',
    'discrete-input:0:BOOL[6]',
    'holding-register:20:DINT',
  ])
  t.deepEqual(results.map((r) => r.error?.message ?? r.value), [
    [1000, 1001, 1002, 1003, 1004],
    [2010, 2011],
    [true, false, false, true, false, false],
    [true, false, false, false, false, true],
    1020 * 65536 + 1021,
  ])
  await dev.write('holding-register:30:REAL{byte-order: CDAB}', -7.25)
  await dev.write('coil:7', true)
  await dev.write('holding-register:40:UINT[3]', [7, 8, 9])
  t.is(await dev.read('holding-register:30:REAL{byte-order: CDAB}'), -7.25)
  t.is(await dev.read('coil:7'), true)
  t.deepEqual(await dev.read('holding-register:40:UINT[3]'), [7, 8, 9])
  const error = (await t.throwsAsync(dev.read('holding-register:999:UINT[5]'))) as BifrostError
  t.is(error.code, 'MODBUS_EXCEPTION')
  t.is(error.exceptionCode, 2)
  await dev.close()
})

peerTest('our client talks RTU over a serial line (socat pty pair) to a pymodbus serial server', pymodbusAndSocat, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'bifrost-pty-'))
  const ours = join(dir, 'client')
  const theirs = join(dir, 'server')
  try {
    children.push(
      await startProcess('socat', ['-d', '-d', `pty,raw,echo=0,link=${ours}`, `pty,raw,echo=0,link=${theirs}`], 'starting data transfer loop'),
    )
    children.push(await startProcess(DEBIAN_PYTHON, [join(PEERS, 'pymodbus_server.py'), 'serial', theirs, '38400'], 'listening'))
    const dev = await connect(`modbus-rtu://${ours}?baud-rate=38400&parity=none&request-timeout=2000`)
    t.deepEqual(await dev.read('holding-register:0:UINT[4]'), [1000, 1001, 1002, 1003])
    t.deepEqual(await dev.read('coil:0:BOOL[4]'), [true, false, false, true])
    await dev.write('holding-register:5:INT', -5)
    t.is(await dev.read('holding-register:5:INT'), -5)
    // Several tags in one batch: on a serial line they go one at a time.
    const results = await dev.readTags(['input-register:1:UINT', 'discrete-input:5', 'holding-register:900:UINT'])
    t.deepEqual(results.map((r) => r.value), [2001, true, 1900])

    // A second device on the same line (unit 2) shares the port: both poll at once, no garbled frames.
    const unit2 = await connect(`modbus-rtu://${ours}?baud-rate=38400&parity=none&unit-id=2&request-timeout=2000`)
    const both = await Promise.all(
      Array.from({ length: 10 }, (_, i) => [dev.read(`holding-register:${10 + i}:UINT`), unit2.read(`holding-register:${10 + i}:UINT`)]).flat(),
    )
    t.deepEqual(both, Array.from({ length: 10 }, (_, i) => [1010 + i, 5010 + i]).flat())
    const mismatch = (await t.throwsAsync(connect(`modbus-rtu://${ours}?baud-rate=9600&parity=none`))) as BifrostError
    t.is(mismatch.code, 'EADDRESS')
    t.regex(mismatch.message, /already open as 38400 baud.*asks for 9600 baud/)
    await dev.close()
    t.is(await unit2.read('holding-register:1:UINT'), 5001) // the port stays open for the other device
    await unit2.close()
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})

peerTest('mbpoll reads our simulator, and sees what our client wrote', mbpoll, async (t) => {
  const sim = await startSimulator()
  const dev = await connect(sim.url)
  const port = String(sim.port)
  const registers = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '10', '-c', '5', '-t', '4', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(registers), ['10', '11', '12', '13', '14'])
  const coils = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '4', '-c', '4', '-t', '0', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(coils), ['0', '1', '0', '1'])

  await dev.write('holding-register:100:REAL', 21.5)
  await dev.write('holding-register:110:DINT', -123456)
  await dev.write('holding-register:120:UINT[3]', [65535, 0, 4660])
  await dev.write('coil:20:BOOL[3]', [true, true, true])
  const real = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '100', '-c', '1', '-t', '4:float', '-B', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(real), ['21.5'])
  const dint = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '110', '-c', '1', '-t', '4:int', '-B', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(dint), ['-123456'])
  const raw = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '120', '-c', '3', '-t', '4:hex', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(raw), ['0xFFFF', '0x0000', '0x1234'])
  const written = await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '20', '-c', '3', '-t', '0', '-1', '127.0.0.1'])
  t.deepEqual(mbpollValues(written), ['1', '1', '1'])

  // And mbpoll writes, our client reads.
  await run('mbpoll', ['-m', 'tcp', '-p', port, '-a', '1', '-0', '-r', '130', '-t', '4', '-1', '127.0.0.1', '4321'])
  t.is(await dev.read('holding-register:130:UINT'), 4321)
  await dev.close()
  sim.stop()
})

test('RTU framing over TCP against the simulator in RTU mode', async (t) => {
  const sim = await startSimulator({ framing: 'rtu' })
  t.regex(sim.url, /^modbus-rtu-tcp:\/\//)
  const dev = await connect(`${sim.url}?max-in-flight=8`)
  const results = await dev.readTags(['holding-register:0:UINT[3]', 'coil:3', 'input-register:400:REAL'])
  const real = new DataView(new Uint8Array([0x01, 0x90, 0x01, 0x91]).buffer).getFloat32(0) // registers 400, 401
  t.deepEqual(results.map((r) => r.error?.message ?? r.value), [[0, 1, 2], true, real])
  await dev.write('holding-register:9:INT', -9)
  t.is(await dev.read('holding-register:9:INT'), -9)
  const many = await Promise.all(Array.from({ length: 200 }, (_, i) => dev.read(`holding-register:${i}:UINT`)))
  t.true(many.every((v, i) => v === (i === 9 ? 65527 : i)))
  await dev.close()
  sim.stop()
})
