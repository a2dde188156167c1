// OPC UA through the public API against the built-in simulator, the simulator
// against a third-party client (node-opcua-client 2.186.4, an npm
// devDependency), the CLI, and a server that misbehaves.
import test from 'ava'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import type { AddressInfo, Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { createRequire } from 'node:module'
import { connect, createPoller, decodeReadResponse, findServers, getEndpoints, startOpcuaSimulator } from '../src/index.js'
import type { BifrostError } from '../src/index.js'
import { failure, freePort } from './helpers.js'
import type { Simulator } from '../src/index.js'

const ROOT = join(__dirname, '..')
const BIN = join(ROOT, 'bin', 'bifrost.js')

/** The error `run` throws. */
function failureOf(run: () => unknown): BifrostError {
  try {
    run()
  } catch (e) {
    return e as BifrostError
  }
  throw new Error('it did not throw')
}

/** Runs a command to its end (waiting for its output to close); rejects on a non-zero exit. */
function output(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (err += c))
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited ${code}:\n${err}\n${out}`))))
  })
}

test('the simulator: readTags of each type, nsu=, a missing node OPCUA_STATUS, a malformed NodeId EADDRESS', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 100 })
  t.regex(sim.url, /^opc\.tcp:\/\/127\.0\.0\.1:\d+$/)
  const dev = await connect(sim.url)
  const results = await dev.readTags(['ns=1;s=V10', 'ns=1;s=V11', 'ns=1;s=V12', 'ns=1;s=V13', 'ns=1;s=V14', 'nsu=urn:bifrost:simulator;s=V20', 'ns=1;s=V100', 'ns=1;q=1'])
  t.deepEqual(results.slice(0, 6).map((r) => r.value), [5, 11, false, 3.25, 'v14', 10])
  t.is(results[6]!.error?.code, 'OPCUA_STATUS')
  t.is(results[6]!.error?.statusName, 'BadNodeIdUnknown')
  t.is(results[6]!.error?.statusCode, 0x80340000)
  t.is(results[7]!.error?.code, 'EADDRESS')
  const ticks = (await dev.read('ns=1;s=Ticks')) as number
  await new Promise((resolve) => setTimeout(resolve, 300))
  t.true(((await dev.read('ns=1;s=Ticks')) as number) > ticks, 'Ticks changes')
  await dev.close()
  sim.stop()
})

test('the simulator: writes take the node type; read-only and mistyped values are refused, alone', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 20 })
  const dev = await connect(sim.url)
  const written = await dev.writeTags([
    ['ns=1;s=V1', -12],
    ['ns=1;s=V3', 0.5],
    ['ns=1;s=V4', 'hello'],
    ['ns=1;s=V6', 1],
    ['ns=1;s=V11', 2.5],
    ['ns=1;s=V2', true],
  ])
  t.deepEqual(
    written.map((r) => r.error?.statusName ?? r.error?.code),
    [undefined, undefined, undefined, 'BadNotWritable', 'EINVAL', undefined],
  )
  t.deepEqual((await dev.readTags(['ns=1;s=V1', 'ns=1;s=V3', 'ns=1;s=V4', 'ns=1;s=V6', 'ns=1;s=V2'])).map((r) => r.value), [-12, 0.5, 'hello', 6, true])
  await dev.close()
  sim.stop()
})

test('the simulator: a prepared read of 2,000 nodes lands in columns, split to MaxNodesPerRead', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 2000, maxNodesPerRead: 500 })
  const dev = await connect(sim.url)
  const tags = Array.from({ length: 400 }, (_, i) => `ns=1;s=V${i * 5}`) // every Double
  const plan = dev.prepare(tags)
  const before = sim.requests
  const data = await plan.read()
  t.is(sim.requests - before, 1)
  t.deepEqual(Array.from(data.values), tags.map((_, i) => i * 2.5))
  t.is(data.errors.size, 0)
  const wide = dev.prepare(Array.from({ length: 2000 }, (_, i) => `ns=1;s=V${i}`))
  const all = await wide.read()
  t.is(sim.requests - before, 1 + 4, '2,000 nodes in four Reads of 500')
  t.is(all.values[5], 2.5)
  t.is(all.errors.get(4)?.code, 'EINVAL', 'a String is not a number')
  await dev.close()
  sim.stop()
})

test('the simulator: browse lists the Objects folder, then the variables with their types', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 12 })
  const dev = await connect(sim.url)
  t.deepEqual(
    (await dev.browse()).map((n) => [n.name, n.type, n.displayName]),
    [
      ['i=2253', 'Object', 'Server'],
      ['ns=1;s=Simulation', 'Object', 'Simulation'],
    ],
  )
  const variables = await dev.browse('ns=1;s=Simulation')
  t.deepEqual(
    variables.slice(0, 5).map((n) => n.type),
    ['Double', 'Int32', 'Boolean', 'Float', 'String'],
  )
  t.deepEqual(variables.map((n) => [n.displayName, n.type]).slice(-4), [['V11', 'Int32'], ['Ticks', 'UInt32'], ['Sine', 'Double'], ['Add', 'Method']])
  // What browse lists reads as a tag.
  t.deepEqual((await dev.readTags(variables.slice(0, 3).map((n) => n.name))).map((r) => r.value), [0, 1, false])
  await dev.close()
  sim.stop()
})

test('the simulator: call of Add sends Int32 arguments as its InputArguments say; refusals are OPCUA_STATUS', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 5 })
  const dev = await connect(sim.url)
  t.deepEqual(await dev.call('ns=1;s=Simulation', 'ns=1;s=Add', [40, 2]), [42])
  t.is((await failure(dev.call('ns=1;s=Simulation', 'ns=1;s=Add', [2 ** 31 - 1, 1]))).statusName, 'BadOutOfRange')
  t.is((await failure(dev.call('ns=1;s=Server', 'ns=1;s=Add', [1, 1]))).statusName, 'BadMethodInvalid')
  t.is((await failure(dev.call('ns=1;s=Simulation', 'ns=1;s=Add', [1, 'x' as unknown as number]))).code, 'EINVAL')
  t.is((await failure(dev.call('ns=1;s=Simulation', 'ns=1;s=Add', 5 as unknown as number[]))).code, 'EINVAL')
  await dev.close()
  sim.stop()
})

test('the simulator: an OPC UA device in the poller, beside others, in the same batch shape; a deadband holds back what did not move', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 20 })
  const devices = await Promise.all([connect(sim.url), connect(sim.url)])
  const poller = createPoller({ intervalMs: 100, batchMs: 20 })
  const plain = poller.add(devices[0]!, ['ns=1;s=V10', 'ns=1;s=V11', 'ns=1;s=Ticks'])
  const banded = poller.add(devices[1]!, ['ns=1;s=V10', 'ns=1;s=Ticks'], { deadband: { type: 'absolute', value: 0.5 } })
  const entries = []
  for await (const batch of poller) {
    entries.push(...batch)
    if (entries.filter((e) => e.handle === plain).length >= 8) break
  }
  await poller.close()
  const first = entries.find((e) => e.handle === plain)!
  t.deepEqual(Array.from(first.values.subarray(0, 2)), [5, 11])
  t.deepEqual(Array.from(first.quality), [0, 0, 0])
  const ticks = entries.filter((e) => e.handle === plain).map((e) => e.values[2]!)
  t.true(ticks.at(-1)! > ticks[0]!, 'Ticks moves between polls')
  // Under the deadband, V10 (constant) comes once; Ticks comes as it moves.
  const bandedEntries = entries.filter((e) => e.handle === banded)
  const v10 = bandedEntries.filter((e) => e.indices && Array.from(e.indices).includes(0))
  t.is(v10.length, 1)
  t.true(bandedEntries.length >= 2)
  await Promise.all(devices.map((d) => d.close()))
  sim.stop()
})

test('decodeReadResponse decodes a ReadResponse node-opcua-client encodes: numbers into the array, the rest listed; a cut body is EPROTO', (t) => {
  // node-opcua-client's own encoder writes the body: the encoding's NodeId (i=634), then the response.
  const opcua = createRequire(__filename)('node-opcua-client')
  const { BinaryStream } = createRequire(createRequire(__filename).resolve('node-opcua-client'))('node-opcua-binary-stream')
  const variant = (dataType: number, value: unknown) => new opcua.Variant({ dataType, value })
  const response = new opcua.ReadResponse({
    results: [
      new opcua.DataValue({ value: variant(opcua.DataType.Double, 1.5), sourceTimestamp: new Date() }),
      new opcua.DataValue({ value: variant(opcua.DataType.Int32, -7) }),
      new opcua.DataValue({ value: variant(opcua.DataType.String, 'x') }),
      new opcua.DataValue({ statusCode: opcua.StatusCodes.BadNodeIdUnknown }),
      new opcua.DataValue({ value: variant(opcua.DataType.Boolean, true), serverTimestamp: new Date(), serverPicoseconds: 5 }),
    ],
  })
  const stream = new BinaryStream(response.binaryStoreSize() + 4)
  stream.writeUInt8(1)
  stream.writeUInt8(0)
  stream.writeUInt16(634)
  response.encode(stream)
  const body: Uint8Array = stream.buffer.subarray(0, stream.length)
  const values = new Float64Array(5)
  t.deepEqual(decodeReadResponse(body, values), [2, 3], 'the String and the bad status')
  t.deepEqual(Array.from(values), [1.5, -7, NaN, NaN, 1])
  t.is(failureOf(() => decodeReadResponse(body, new Float64Array(3))).code, 'EPROTO', 'five results, not three')
  t.is(failureOf(() => decodeReadResponse(body.subarray(0, body.length - 10), values)).code, 'EPROTO', 'the last value cut')
  t.is(failureOf(() => decodeReadResponse(body, [1, 2] as unknown as Float64Array)).code, 'EINVAL')
})

test('node-opcua-client reads, writes and is refused by the simulator as by any OPC UA server', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 20 })
  const home = mkdtempSync(join(tmpdir(), 'bifrost-node-opcua-client-'))
  try {
    const out = await output(process.execPath, [join(__dirname, 'peers', 'node_opcua_client.mjs'), sim.url], { ...process.env, HOME: home })
    // node-opcua logs to stdout too: the peer's answer is its one JSON line.
    const line = out.split('\n').find((l) => l.startsWith('{"values"'))
    t.truthy(line, out)
    const seen = JSON.parse(line!)
    t.deepEqual(
      seen.values.map((v: { status: string; value: unknown; type: string }) => [v.status, v.value, v.type]),
      [
        ['Good', 5, 'Double'],
        ['Good', 11, 'Int32'],
        ['Good', false, 'Boolean'],
        ['Good', 3.25, 'Float'],
        ['Good', 'v14', 'String'],
        ['Good', 0, 'Int32'],
        ['BadNodeIdUnknown', null, 'Null'],
      ],
    )
    t.is(seen.written, 'Good')
    t.is(seen.refused, 'BadNotWritable')
    t.deepEqual(seen.readBack, { status: 'Good', value: -3, type: 'Int32' })
    t.deepEqual(seen.namespaces, ['http://opcfoundation.org/UA/', 'urn:bifrost:simulator'])
  } finally {
    rmSync(home, { recursive: true, force: true })
    sim.stop()
  }
})

test('the CLI reads from the OPC UA simulator it serves', async (t) => {
  const sim = spawn(process.execPath, [BIN, 'simulate', 'opcua', '--port', '0', '--variables', '30'], { stdio: ['ignore', 'pipe', 'pipe'] })
  try {
    const url = await new Promise<string>((resolve, reject) => {
      let out = ''
      sim.stdout.on('data', (c) => {
        out += c
        const found = /listening on (\S+)/.exec(out)
        if (found) resolve(found[1]!)
      })
      sim.once('exit', (code) => reject(new Error(`the simulator exited ${code}`)))
    })
    const out = await output(process.execPath, [BIN, 'read', url, 'ns=1;s=V25', 'ns=1;s=V24'])
    t.regex(out, /ns=1;s=V25\s.*12\.5/)
    t.regex(out, /ns=1;s=V24\s.*v24/)
  } finally {
    sim.kill('SIGTERM')
  }
})

/** A TCP server that answers each connection with `reply(socket, data)`. */
async function rawServer(reply: (socket: Socket, data: Buffer) => void): Promise<{ url: string; close: () => void }> {
  const sockets = new Set<Socket>()
  const server = createServer((socket) => {
    sockets.add(socket)
    socket.on('data', (data) => reply(socket, data))
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `opc.tcp://127.0.0.1:${port}?connect-timeout=1000&request-timeout=1000`,
    close: () => {
      for (const s of sockets) s.destroy()
      server.close()
    },
  }
}

test('a server that is not OPC UA, closes mid-message, or never answers: a clean error, and the process lives', async (t) => {
  const http = await rawServer((socket) => socket.end('HTTP/1.1 400 Bad Request\r\n\r\n'))
  const notOpcua = await failure(connect(http.url))
  t.is(notOpcua.code, 'EPROTO')
  t.regex(notOpcua.message, /not an OPC UA message/)
  http.close()

  // An Acknowledge cut off in the middle, then the connection closed.
  const cut = await rawServer((socket) => socket.end(Buffer.from('41434b461c0000000000', 'hex')))
  const closed = await failure(connect(cut.url))
  t.true(['ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT'].includes(closed.code), `${closed.code}: ${closed.message}`)
  cut.close()

  const silent = await rawServer(() => {})
  const started = Date.now()
  const timedOut = await failure(connect(silent.url))
  t.is(timedOut.code, 'ETIMEDOUT')
  t.true(Date.now() - started < 10_000)
  silent.close()

  // A malformed chunk mid-session: that call fails, the next sets up afresh.
  const sim: Simulator = await startOpcuaSimulator({ variables: 10, malformedEvery: 9 })
  const dev = await connect(`${sim.url}?request-timeout=2000`)
  const results = []
  for (let i = 0; i < 12; i++) results.push(await dev.readTags(['ns=1;s=V5']))
  const errors = results.flat().filter((r) => r.error)
  t.true(errors.length >= 1 && errors.every((r) => ['EPROTO', 'ECONNRESET'].includes(r.error!.code)), errors.map((r) => r.error!.message).join('\n'))
  t.true(results.flat().filter((r) => !r.error).every((r) => r.value === 2.5))
  // The call after each failed one reads: a fresh connection (its session activated again).
  const failedAt = results.flatMap((r, i) => (r[0]!.error ? [i] : [])).filter((i) => i < results.length - 1)
  t.true(failedAt.length >= 1)
  t.deepEqual(failedAt.map((i) => results[i + 1]![0]!.value), failedAt.map(() => 2.5), 'the device still reads')
  await dev.close()
  sim.stop()
})

test('the simulator: getEndpoints and findServers describe it; a closed port is ECONNREFUSED, an unknown key EADDRESS', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 10 })
  const server = { applicationUri: 'urn:bifrost:simulator', productUri: 'urn:bifrost', applicationName: 'Bifrost OPC UA Simulator', applicationType: 'Server', discoveryUrls: [] }
  t.deepEqual(await getEndpoints(sim.url), [
    {
      endpointUrl: sim.url,
      server,
      securityMode: 'None',
      securityPolicyUri: 'http://opcfoundation.org/UA/SecurityPolicy#None',
      securityLevel: 0,
      userIdentityTokens: [{ policyId: 'anonymous', tokenType: 'Anonymous' }],
    },
  ])
  t.deepEqual(await findServers(sim.url), [server])
  const closed = await freePort()
  t.is((await failure(getEndpoints(`opc.tcp://127.0.0.1:${closed}`))).code, 'ECONNREFUSED')
  t.is((await failure(findServers(sim.url, { bogus: 1 }))).code, 'EADDRESS')
  t.is((await failure(getEndpoints('modbus-tcp://127.0.0.1:502'))).code, 'EADDRESS')
  sim.stop()
})

test('the simulator: translate follows browse paths to NodeIds in requests split to its limit; nowhere is BadNoMatch, malformed EADDRESS', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 10, maxNodesPerRead: 5 })
  const dev = await connect(sim.url)
  const paths = [
    '/Objects/1:Simulation/1:V3',
    '/Objects/Server/NamespaceArray',
    '/Objects/1:Simulation/1:Add.1:InputArguments',
    '/Objects/1:Simulation/1:Sine',
    '/Objects/1:Simulation/1:Ticks',
    '/Objects/1:Simulation/1:V99',
    '/Objects/1:Simulation<HasChild>x',
    'Simulation',
  ]
  const results = await dev.translate(paths)
  t.deepEqual(results.map((r) => r.tag), paths)
  // Six paths to follow, five at most a request: two requests (one would be BadTooManyOperations).
  t.deepEqual(results.slice(0, 5).map((r) => r.value), ['ns=1;s=V3', 'i=2255', 'ns=1;s=Add.InputArguments', 'ns=1;s=Sine', 'ns=1;s=Ticks'])
  t.is(results[5]!.error?.statusName, 'BadNoMatch')
  t.deepEqual(results.slice(6).map((r) => r.error?.code), ['EADDRESS', 'EADDRESS'])
  t.is(await dev.read(results[0]!.value as string), 0.75, 'the NodeId found reads')
  t.deepEqual((await dev.translate(['/1:Ticks'], { from: 'ns=1;s=Simulation' })).map((r) => r.value), ['ns=1;s=Ticks'])
  t.is((await dev.translate(['/1:Ticks'], { from: 'ns=1;s=Nope' }))[0]!.error?.statusName, 'BadNodeIdUnknown')
  await dev.close()
  sim.stop()
})

test('the simulator: subscribeColumns gives each change as typed columns, and results() the same changes as objects', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 10 })
  const dev = await connect(sim.url)
  const tags = ['ns=1;s=V1', 'ns=1;s=V3', 'ns=1;s=V4', 'ns=1;s=V99', 'ns=1;s=V2', 'ns=1;s=Ticks']
  const byTag = new Map<string, Array<{ value: number; quality: number }>>()
  for await (const batch of dev.subscribeColumns(tags, { intervalMs: 50 })) {
    const results = batch.results()
    t.is(results.length, batch.values.length)
    results.forEach((r, i) => {
      t.is(r.tag, tags[batch.indices[i]!])
      t.is(batch.quality[i], r.quality === 'good' ? 0 : 1)
      t.is(batch.timestamps[i], r.timestamp)
      if (typeof r.value === 'number' || typeof r.value === 'boolean') t.is(batch.values[i], Number(r.value))
      else t.true(Number.isNaN(batch.values[i]), `${r.tag}: no number`)
      byTag.set(r.tag, [...(byTag.get(r.tag) ?? []), { value: batch.values[i]!, quality: batch.quality[i]! }])
    })
    if ((byTag.get('ns=1;s=Ticks')?.length ?? 0) >= 3) break
  }
  t.deepEqual(byTag.get('ns=1;s=V1'), [{ value: 1, quality: 0 }], 'an Int32')
  t.deepEqual(byTag.get('ns=1;s=V3'), [{ value: 0.75, quality: 0 }], 'a Float')
  t.deepEqual(byTag.get('ns=1;s=V2'), [{ value: 0, quality: 0 }], 'a Boolean as 0')
  t.deepEqual(byTag.get('ns=1;s=V4')?.map((c) => c.quality), [0], 'a String: good, its value in results()')
  t.deepEqual(byTag.get('ns=1;s=V99')?.map((c) => c.quality), [1], 'an unknown node: bad')
  const ticks = byTag.get('ns=1;s=Ticks')!.map((c) => c.value)
  t.true(ticks.every((v, i) => i === 0 || v > ticks[i - 1]!), String(ticks))
  t.is(await dev.read('i=2285'), 0, 'ending the loop deleted the subscription on the server')
  await dev.close()
  sim.stop()
})

test('the simulator: a running subscription is modified (a new interval and deadband) and stops watching a tag', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 10 })
  const dev = await connect(sim.url)
  const writer = await connect(sim.url)
  const changes = dev.subscribe(['ns=1;s=Ticks', 'ns=1;s=V0'], { intervalMs: 100 })
  t.is((await failure(changes.modify({ intervalMs: 0 }))).code, 'EINVAL')
  const after: Array<[string, unknown]> = []
  for await (const batch of changes) {
    if (after.length === 0 && !batch.some((r) => r.tag === 'ns=1;s=V0')) continue // the first batch holds V0's first value
    if (after.length === 0) {
      t.is(await changes.modify({ intervalMs: 200, deadband: { type: 'absolute', value: 5 } }), 200, 'the interval granted')
      const removed = await changes.remove(['ns=1;s=Ticks', 'ns=1;s=Nope'])
      t.deepEqual(removed.map((r) => r.error?.code), [undefined, 'EINVAL'])
      t.is((await changes.remove(['ns=1;s=Ticks']))[0]!.error?.code, 'EINVAL', 'removed once')
      await writer.write('ns=1;s=V0', 1) // within the new deadband
      // Still watched, Ticks (ten a second, sampled every 200 ms, a deadband of 5) would report about four times in this.
      await new Promise((resolve) => setTimeout(resolve, 2500))
      await writer.write('ns=1;s=V0', 10)
      after.push(['start', 0])
      continue
    }
    after.push(...batch.map((r): [string, unknown] => [r.tag, r.value]))
    if (after.some(([tag, value]) => tag === 'ns=1;s=V0' && value === 10)) break
  }
  const v0 = after.filter(([tag]) => tag === 'ns=1;s=V0').map(([, value]) => value)
  t.deepEqual(v0, [10], 'the move within the deadband was held back')
  // Removed, Ticks is at most in a batch already on its way.
  t.true(after.filter(([tag]) => tag === 'ns=1;s=Ticks').length <= 1, JSON.stringify(after))
  t.is((await failure(changes.modify({ intervalMs: 100 }))).code, 'ECLOSED', 'the loop ended it')
  await writer.close()
  await dev.close()
  sim.stop()
})

test('the simulator: a subscription makes, modifies and removes its monitored items in calls of at most MaxMonitoredItemsPerCall', async (t) => {
  // The simulator refuses a call of more than five items (BadTooManyOperations): seven tags need two of each.
  const sim = await startOpcuaSimulator({ variables: 10, maxNodesPerRead: 5 })
  const dev = await connect(sim.url)
  const tags = Array.from({ length: 7 }, (_, i) => `ns=1;s=V${i}`)
  const changes = dev.subscribe(tags, { intervalMs: 50 })
  const seen = new Map<string, unknown>()
  for await (const batch of changes) {
    for (const r of batch) seen.set(r.tag, r.error?.code ?? r.value)
    if (seen.size === 7) break
  }
  t.deepEqual(tags.map((tag) => seen.get(tag)), [0, 1, false, 0.75, 'v4', 2.5, 6], 'every item made')
  await dev.close()
  const again = await connect(sim.url)
  const running = again.subscribe(tags, { intervalMs: 50 })
  let batches = 0
  for await (const batch of running) {
    batches++
    t.true(batch.length >= 1)
    t.is(await running.modify({ intervalMs: 100 }), 100, 'two ModifyMonitoredItems')
    t.deepEqual((await running.remove(tags.slice(0, 6))).map((r) => r.error?.code), Array(6).fill(undefined), 'two DeleteMonitoredItems')
    break
  }
  t.is(batches, 1, 'the subscription delivered a batch to modify and remove under')
  await again.close()
  sim.stop()
})

test('the simulator: subscribe yields changes per Publish, a deadband holds back small moves, ending the loop deletes it', async (t) => {
  const sim = await startOpcuaSimulator({ variables: 10 })
  const dev = await connect(sim.url)
  const writer = await connect(sim.url)
  const batches = []
  for await (const batch of dev.subscribe(['ns=1;s=V0', 'ns=1;s=Ticks'], { intervalMs: 50, deadband: { type: 'absolute', value: 0.5 } })) {
    batches.push(batch)
    if (batches.length === 1) {
      t.is(await writer.read('i=2285'), 1, 'the subscription lives on the server')
      await writer.write('ns=1;s=V0', 0.25) // within the deadband
    }
    if (batches.length === 6) await writer.write('ns=1;s=V0', 3)
    if (batches.flat().some((r) => r.tag === 'ns=1;s=V0' && r.value === 3)) break
  }
  const v0 = batches.flat().filter((r) => r.tag === 'ns=1;s=V0').map((r) => r.value)
  t.deepEqual(v0, [0, 3], 'the first value, then only the move past the deadband')
  const ticks = batches.flat().filter((r) => r.tag === 'ns=1;s=Ticks').map((r) => r.value as number)
  t.true(ticks.length >= 3 && ticks.every((v, i) => i === 0 || v > ticks[i - 1]!), String(ticks))
  t.true(batches.flat().every((r) => r.quality === 'good' && r.timestamp > Date.now() - 60_000))
  t.is(await writer.read('i=2285'), 0, 'ending the loop deleted the subscription on the server')
  t.is(await dev.read('ns=1;s=V1'), 1, 'the device reads on')
  // Closing the device ends a subscription's loop.
  const loop = (async () => {
    let count = 0
    for await (const batch of dev.subscribe(['ns=1;s=Ticks'], { intervalMs: 50 })) count += batch.length
    return count
  })()
  await new Promise((resolve) => setTimeout(resolve, 300))
  await dev.close()
  t.true((await loop) >= 1)
  await writer.close()
  sim.stop()
})
