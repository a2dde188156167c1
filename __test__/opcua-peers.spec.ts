// OPC UA through the public API against third-party servers over loopback:
// node-opcua-server 2.186.4 (an npm devDependency), serving the test variables
// of crates/bifrost-opcua/tests/peers/node_opcua_server.mjs; open62541 1.5
// (built by scripts/open62541.mjs), serving open62541_server.c's; and asyncua
// 2.1.0 (in the venv target/asyncua-venv), serving peers/asyncua_server.py's.
import test from 'ava'
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect, findServers, getEndpoints } from '../src/index.js'
import type { Device } from '../src/index.js'
import { failure, freePort, peerTest, readFor, startProcess, stopProcess } from './helpers.js'

const ROOT = join(__dirname, '..')
const SERVER = join(ROOT, 'crates', 'bifrost-opcua', 'tests', 'peers', 'node_opcua_server.mjs')

let server: ChildProcess | undefined
let home = ''
let url = ''

test.before(async () => {
  // node-opcua writes its PKI under HOME: a directory of its own, removed after.
  home = mkdtempSync(join(tmpdir(), 'bifrost-node-opcua-'))
  const child = spawn(process.execPath, [SERVER, '0'], { cwd: ROOT, env: { ...process.env, HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] })
  server = child
  let output = ''
  const port = await new Promise<number>((resolve, reject) => {
    // 2 to 5 s to start; far longer on a busy machine.
    const timer = setTimeout(() => reject(new Error(`node-opcua-server did not start in 90 s:\n${output}`)), 90_000)
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      const found = /listening (\d+)/.exec(output)
      if (found) {
        clearTimeout(timer)
        resolve(Number(found[1]))
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.once('exit', (code) => reject(new Error(`node-opcua-server exited (${code}) before it listened (npm ci installs it):\n${output}`)))
  })
  child.removeAllListeners('exit')
  url = `opc.tcp://127.0.0.1:${port}/bifrost`
})

test.after.always(async () => {
  await stopProcess(server)
  if (home) rmSync(home, { recursive: true, force: true })
})

async function withDevice(body: (dev: Device) => Promise<void>): Promise<void> {
  const dev = await connect(url)
  try {
    await body(dev)
  } finally {
    await dev.close()
  }
}

test.serial('node-opcua-server: readTags reads each built-in type, nsu= resolves, the server state is Running', async (t) => {
  await withDevice(async (dev) => {
    const results = await dev.readTags([
      'ns=2;s=Running',
      'ns=2;s=Name',
      'ns=2;s=Total',
      'ns=2;s=Samples',
      'nsu=urn:bifrost:test;s=Limit',
      'i=2259',
      'i=2255',
    ])
    t.deepEqual(results.slice(0, 6).map((r) => r.error?.message ?? r.value), [true, 'line 1', 5_000_000n, [1.5, 2.5, 3.5], 100, 0])
    // The namespace array: the standard's, the server's own (named after the host), ours.
    const namespaces = results[6]!.value as string[]
    t.deepEqual([namespaces[0], namespaces[2], namespaces.length], ['http://opcfoundation.org/UA/', 'urn:bifrost:test', 3])
    t.regex(namespaces[1]!, /NodeOPCUA-Server/)
    // CurrentTime is a DateTime: ISO text within a minute of ours.
    const now = (await dev.read('i=2258')) as string
    t.regex(now, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
    t.true(Math.abs(Date.parse(now) - Date.now()) < 60_000, now)
  })
})

test.serial('node-opcua-server: an unknown node is OPCUA_STATUS BadNodeIdUnknown, a malformed NodeId EADDRESS, alone', async (t) => {
  await withDevice(async (dev) => {
    const unknown = await failure(dev.read('ns=2;s=NoSuchNode'))
    t.is(unknown.code, 'OPCUA_STATUS')
    t.is(unknown.statusName, 'BadNodeIdUnknown')
    t.is(unknown.statusCode, 0x80340000)
    t.regex(unknown.message, /ns=2;s=NoSuchNode.*BadNodeIdUnknown \(0x80340000\)/)
    const results = await dev.readTags(['ns=2;s=Count', 'ns=2;x=bad', 'nsu=urn:nowhere;s=Speed', 'ns=2;s=Gone'])
    t.is(results[0]!.error, undefined)
    t.is(results[1]!.error?.code, 'EADDRESS')
    t.regex(results[2]!.error?.message ?? '', /no namespace 'urn:nowhere'/)
    t.is(results[3]!.error?.statusName, 'BadNodeIdUnknown')
    t.is(await dev.read('ns=2;s=Running'), true, 'the connection still works')
  })
})

test.serial('node-opcua-server: writes take the node DataType; read-only is BadNotWritable; a value that does not fit is EINVAL', async (t) => {
  await withDevice(async (dev) => {
    await dev.write('ns=2;s=Count', 7)
    await dev.write('ns=2;s=Speed', 3.25)
    t.deepEqual(
      (await dev.readTags(['ns=2;s=Count', 'ns=2;s=Speed'])).map((r) => r.value),
      [7, 3.25],
    )
    const written = await dev.writeTags([
      ['ns=2;s=Count', 1.5],
      ['ns=2;s=Count', 3_000_000_000],
      ['ns=2;s=Limit', 5],
      ['ns=2;s=Name', 'line 2'],
      ['ns=2;s=Speed', 'fast'],
    ])
    t.deepEqual(
      written.map((r) => r.error?.code),
      ['EINVAL', 'EINVAL', 'OPCUA_STATUS', undefined, 'EINVAL'],
      written.map((r) => r.error?.message).join('\n'),
    )
    t.is(written[2]!.error?.statusName, 'BadNotWritable')
    t.is(await dev.read('ns=2;s=Name'), 'line 2')
    t.is(await dev.read('ns=2;s=Limit'), 100, 'the read-only node kept its value')
    await dev.write('ns=2;s=Samples', [4, 5, 6])
    t.deepEqual(await dev.read('ns=2;s=Samples'), [4, 5, 6])
  })
})

test.serial('node-opcua-server: a prepared read lands numbers in columns, a failed node flagged alone', async (t) => {
  await withDevice(async (dev) => {
    await dev.write('ns=2;s=Count', 42)
    const plan = dev.prepare(['ns=2;s=Count', 'ns=2;s=Running', 'ns=2;s=Gone', 'ns=2;s=Name', 'nsu=urn:bifrost:test;s=Limit'])
    for (let round = 0; round < 3; round++) {
      const data = await plan.read()
      t.deepEqual(Array.from(data.values.subarray(0, 2)), [42, 1])
      t.true(Number.isNaN(data.values[2]!) && Number.isNaN(data.values[3]!))
      t.is(data.values[4], 100)
      t.deepEqual(Array.from(data.quality), [0, 0, 1, 1, 0])
      t.is(data.errors.get(2)?.statusName, 'BadNodeIdUnknown')
      t.is(data.errors.get(3)?.code, 'EINVAL', 'a String node is not a number')
    }
  })
})

test.serial('node-opcua-server: browse lists a folder, then one of more references than a page, with types and names', async (t) => {
  await withDevice(async (dev) => {
    const objects = await dev.browse()
    t.truthy(objects.find((n) => n.name === 'ns=2;s=Bifrost' && n.type === 'Object' && n.displayName === 'Bifrost'))
    const folder = await dev.browse('ns=2;s=Bifrost')
    const byName = new Map(folder.map((n) => [n.displayName, n]))
    t.deepEqual(byName.get('Speed'), { name: 'ns=2;s=Speed', type: 'Double', dimensions: [], displayName: 'Speed' })
    t.deepEqual(byName.get('Samples'), { name: 'ns=2;s=Samples', type: 'Float', dimensions: [3], displayName: 'Samples' })
    t.is(byName.get('Total')?.type, 'Int64')
    t.is(byName.get('Many')?.type, 'Object')
    const many = await dev.browse('nsu=urn:bifrost:test;s=Many')
    t.is(many.length, 1500)
    t.deepEqual(
      many.map((n) => n.name),
      Array.from({ length: 1500 }, (_, i) => `ns=2;s=M${i}`),
    )
    t.true(many.every((n) => n.type === 'UInt16'))
    t.is((await failure(dev.browse('ns=2;s=NoSuchFolder'))).statusName, 'BadNodeIdUnknown')
  })
})

test.serial('node-opcua-server: call types arguments by the method (Int16, Double), returns its outputs, refusals are OPCUA_STATUS', async (t) => {
  await withDevice(async (dev) => {
    t.deepEqual(await dev.call('ns=2;s=Bifrost', 'ns=2;s=Scale', [7, 1.5]), [10.5])
    t.deepEqual(await dev.call('nsu=urn:bifrost:test;s=Bifrost', 'nsu=urn:bifrost:test;s=Scale', [-3, 2]), [-6])
    const refused = await failure(dev.call('ns=2;s=Bifrost', 'ns=2;s=Scale', [7, 0]))
    t.is(refused.code, 'OPCUA_STATUS')
    t.is(refused.statusName, 'BadInvalidArgument')
    t.is((await failure(dev.call('ns=2;s=Bifrost', 'ns=2;s=Scale', [70_000, 1]))).code, 'EINVAL', '70,000 is no Int16')
    t.is((await failure(dev.call('ns=2;s=Bifrost', 'ns=2;s=Scale', [1]))).code, 'EINVAL', 'one argument of two')
    t.is((await failure(dev.call('ns=2;s=Bifrost', 'ns=2;q'))).code, 'EADDRESS')
    t.deepEqual(await dev.call('ns=2;s=Bifrost', 'ns=2;s=Scale', [2, 2]), [4], 'the session still calls')
  })
})

test.serial('node-opcua-server: subscribe yields the changes of a counter; the subscription exists while the loop runs, not after', async (t) => {
  await withDevice(async (dev) => {
    const before = (await dev.read('i=2285')) as number
    const seen: number[] = []
    let during = -1
    for await (const batch of dev.subscribe(['ns=2;s=Counter', 'ns=2;s=NoSuchNode'], { intervalMs: 100 })) {
      for (const r of batch) {
        if (r.tag === 'ns=2;s=NoSuchNode') t.is(r.error?.statusName, 'BadNodeIdUnknown')
        else seen.push(r.value as number)
      }
      if (during < 0) during = (await dev.read('i=2285')) as number
      if (seen.length >= 4) break
    }
    t.true(seen.every((v, i) => i === 0 || v > seen[i - 1]!), String(seen))
    t.is(during, before + 1, 'one subscription more on the server while the loop runs')
    t.is(await dev.read('i=2285'), before, 'and none after')
  })
})

test.serial('node-opcua-server: subscribeColumns gives a counter\'s changes as typed columns and a refused node as bad', async (t) => {
  await withDevice(async (dev) => {
    const tags = ['ns=2;s=NoSuchNode', 'ns=2;s=Counter']
    const counts: number[] = []
    let refused: string | undefined
    for await (const batch of dev.subscribeColumns(tags, { intervalMs: 100 })) {
      const results = batch.results()
      for (let i = 0; i < batch.values.length; i++) {
        if (batch.indices[i] === 1) {
          t.is(batch.quality[i], 0)
          t.is(batch.values[i], results[i]!.value)
          counts.push(batch.values[i]!)
        } else {
          t.is(batch.quality[i], 1)
          refused = results[i]!.error?.statusName
        }
      }
      if (counts.length >= 4) break
    }
    t.is(refused, 'BadNodeIdUnknown')
    t.true(counts.every((v, i) => i === 0 || v > counts[i - 1]!), String(counts))
  })
})

test.serial('node-opcua-server: getEndpoints and findServers answer without a session', async (t) => {
  const endpoints = await getEndpoints(url)
  t.deepEqual(
    endpoints.map((e) => [e.endpointUrl, e.securityMode, e.securityPolicyUri, e.userIdentityTokens.map((token) => token.tokenType)]),
    [[url, 'None', 'http://opcfoundation.org/UA/SecurityPolicy#None', ['Anonymous']]],
  )
  t.regex(endpoints[0]!.server.applicationUri!, /NodeOPCUA-Server/)
  const servers = await findServers(url, { requestTimeout: 5000 })
  t.deepEqual(servers.map((s) => [s.applicationName, s.applicationType, s.discoveryUrls]), [['NodeOPCUA', 'Server', [url]]])
})

test.serial('node-opcua-server: translate follows hierarchical and aggregate steps to NodeIds; a path to nowhere is BadNoMatch', async (t) => {
  await withDevice(async (dev) => {
    const results = await dev.translate([
      '/Objects/2:Bifrost/2:Speed',
      '/Objects/2:Bifrost.2:Limit',
      '/Objects/2:Bifrost/2:Many/2:M1499',
      '/Objects/Server.ServerStatus.State',
      '/Objects/2:Bifrost/2:Nothing',
    ])
    t.deepEqual(results.slice(0, 4).map((r) => r.value), ['ns=2;s=Speed', 'ns=2;s=Limit', 'ns=2;s=M1499', 'i=2259'])
    t.is(results[4]!.error?.statusName, 'BadNoMatch')
    t.is(await dev.read(results[2]!.value as string), 1499)
    t.deepEqual((await dev.translate(['/2:Speed'], { from: 'ns=2;s=Bifrost' })).map((r) => r.value), ['ns=2;s=Speed'])
  })
})

test.serial('node-opcua-server: a running subscription takes a new interval and deadband, then stops watching the counter', async (t) => {
  await withDevice(async (dev) => {
    const changes = dev.subscribe(['ns=2;s=Counter', 'ns=2;s=Speed'], { intervalMs: 100 })
    let modified = false
    let removed = false
    const counts: number[] = []
    let countsAfterRemoval = 0
    for await (const batch of changes) {
      for (const r of batch) {
        if (r.tag !== 'ns=2;s=Counter') continue
        if (removed) countsAfterRemoval++
        else if (modified) counts.push(r.value as number)
      }
      if (!modified) {
        t.true((await changes.modify({ intervalMs: 300, deadband: { type: 'absolute', value: 7 } })) >= 300, 'the interval granted')
        modified = true
      } else if (!removed && counts.length >= 3) {
        t.deepEqual((await changes.remove(['ns=2;s=Counter'])).map((r) => r.quality), ['good'])
        removed = true
        // Still watched, the counter (sampled every 300 ms, a deadband of 7) would report about three times in this.
        await new Promise((resolve) => setTimeout(resolve, 3000))
        await dev.write('ns=2;s=Speed', 42)
      }
      if (batch.some((r) => r.tag === 'ns=2;s=Speed' && r.value === 42)) break
    }
    t.true(removed && counts.length >= 3, 'the loop ran past the modify and the removal')
    // Reported moves of the counter are past the deadband (the first after the change may be any).
    t.true(counts.slice(1).every((v, i) => v - counts[i]! > 7), String(counts))
    t.true(countsAfterRemoval <= 1, `${countsAfterRemoval} counter changes after the removal`)
  })
})

test.serial('node-opcua-server: many reads in flight on one session each get their own answer', async (t) => {
  await withDevice(async (dev) => {
    const reads = await Promise.all(Array.from({ length: 200 }, (_, i) => dev.read(i % 2 ? 'ns=2;s=Limit' : 'ns=2;s=Running')))
    t.deepEqual(reads, Array.from({ length: 200 }, (_, i) => (i % 2 ? 100 : true)))
    await dev.close()
    t.is((await failure(dev.read('ns=2;s=Limit'))).code, 'ECLOSED')
  })
})

const OPEN62541 = join(ROOT, 'target', 'open62541', 'bin', 'open62541_server')
const open62541 = { name: 'open62541 (node scripts/open62541.mjs builds it)', present: existsSync(OPEN62541) }

/** Runs `body` against an open62541 server of `variables` variables. */
async function withOpen62541(variables: number, body: (dev: Device, url: string) => Promise<void>): Promise<void> {
  const port = await freePort()
  const server = await startProcess(OPEN62541, [String(port), String(variables)], `listening ${port}`)
  try {
    const dev = await connect(`opc.tcp://127.0.0.1:${port}`)
    try {
      await body(dev, `opc.tcp://127.0.0.1:${port}`)
    } finally {
      await dev.close()
    }
  } finally {
    await stopProcess(server)
  }
}

peerTest('open62541: reads of each type by nsu=, typed writes, BadNotWritable, BadNodeIdUnknown', open62541, async (t) => {
  await withOpen62541(50, async (dev) => {
    const ns = ((await dev.read('i=2255')) as string[]).indexOf('urn:bifrost:simulator')
    t.true(ns > 0)
    const tag = (name: string) => `nsu=urn:bifrost:simulator;s=${name}`
    t.deepEqual((await dev.readTags(['V10', 'V11', 'V12', 'V13', 'V14'].map(tag))).map((r) => r.value), [5, 11, false, 3.25, 'v14'])
    const written = await dev.writeTags([
      [tag('V1'), -9],
      [tag('V6'), 1],
      [tag('V3'), 7.5],
      [tag('V11'), 0.5],
    ])
    t.deepEqual(written.map((r) => r.error?.statusName ?? r.error?.code), [undefined, 'BadNotWritable', undefined, 'EINVAL'])
    t.deepEqual((await dev.readTags([tag('V1'), tag('V3'), `ns=${ns};s=V6`])).map((r) => r.value), [-9, 7.5, 6])
    t.is((await failure(dev.read(`ns=${ns};s=V50`))).statusName, 'BadNodeIdUnknown')
  })
})

peerTest('open62541: translate follows a browse path to a NodeId, and reads it', open62541, async (t) => {
  await withOpen62541(10, async (dev) => {
    const ns = ((await dev.read('i=2255')) as string[]).indexOf('urn:bifrost:simulator')
    const [found, nowhere] = await dev.translate([`/Objects/${ns}:Simulation/${ns}:V6`, `/Objects/${ns}:Simulation/${ns}:V70`])
    t.is(found!.value, `ns=${ns};s=V6`)
    t.is(await dev.read(found!.value as string), 6)
    t.is(nowhere!.error?.statusName, 'BadNoMatch')
  })
})

peerTest('open62541: getEndpoints lists its endpoint and its anonymous identity; findServers names it', open62541, async (t) => {
  await withOpen62541(10, async (_, url) => {
    const [endpoint, ...others] = await getEndpoints(url)
    t.is(others.length, 0)
    t.is(endpoint!.securityMode, 'None')
    // open62541 1.5.10 lists its anonymous policy twice (node-opcua-client sees the same).
    t.deepEqual(endpoint!.userIdentityTokens, Array(2).fill({ policyId: 'open62541-anonymous-policy-none#None', tokenType: 'Anonymous' }))
    t.is(endpoint!.server.applicationUri, 'urn:open62541.unconfigured.application')
    t.deepEqual((await findServers(url)).map((s) => s.productUri), ['http://open62541.org'])
  })
})

peerTest('open62541: a channel token of 2 s is renewed at 75% of its lifetime: reads go on for 5 s on one connection', open62541, async (t) => {
  await withOpen62541(10, async (_, url) => {
    // open62541 closes a channel whose token expired (without the renewal this test sees ECONNRESET and reconnects).
    const dev = await connect(url, { channelLifetime: 2000 })
    const { reads, errors } = await readFor(dev, 'i=2259', 5000)
    t.deepEqual(errors, [])
    t.true(reads >= 10, `${reads} reads`)
    t.is(dev.stats().connects, 1, 'one connection all along')
    await dev.close()
  })
})

peerTest('open62541: browse of its folder, a Read of 10,000 nodes chunked both ways, and a prepared read of 2,000 nodes into columns', open62541, async (t) => {
  await withOpen62541(10_000, async (dev) => {
    // open62541 takes and sends chunks of 64 KiB: the Read (about 270 KB) goes out in several, its answer comes in several.
    const all = await dev.readTags(Array.from({ length: 10_000 }, (_, i) => `nsu=urn:bifrost:simulator;s=V${i}`))
    const expected = (i: number) => [i * 0.5, i, i % 2 === 1, i * 0.25, `v${i}`][i % 5]
    t.deepEqual(all.filter((r, i) => r.value !== expected(i)).map((r) => r.tag), [])
    const folder = await dev.browse('nsu=urn:bifrost:simulator;s=Simulation')
    // open62541 lists references in an order of its own.
    const types = new Map(folder.map((n) => [n.displayName, n.type]))
    t.is(types.size, 10_000)
    t.deepEqual(['V0', 'V1', 'V2', 'V3', 'V4', 'V9999'].map((name) => types.get(name)), ['Double', 'Int32', 'Boolean', 'Float', 'String', 'String'])
    const plan = dev.prepare(Array.from({ length: 2000 }, (_, i) => `nsu=urn:bifrost:simulator;s=V${5 * i}`))
    const data = await plan.read()
    t.is(data.errors.size, 0)
    t.deepEqual(Array.from(data.values), Array.from({ length: 2000 }, (_, i) => 2.5 * i))
  })
})

const ASYNCUA_PYTHON = join(ROOT, 'target', 'asyncua-venv', 'bin', 'python')
const asyncua = { name: 'asyncua 2.1.0 (python3 -m venv target/asyncua-venv, then its pip install asyncua==2.1.0)', present: existsSync(ASYNCUA_PYTHON) }

peerTest('asyncua: reads, writes, call and browse, with the errors asyncua answers in its own way', asyncua, async (t) => {
  const port = await freePort()
  const server = await startProcess(ASYNCUA_PYTHON, [join(__dirname, 'peers', 'asyncua_server.py'), String(port)], `listening ${port}`)
  try {
    const dev = await connect(`opc.tcp://127.0.0.1:${port}/bifrost`)
    const tag = (name: string) => `nsu=urn:bifrost:asyncua;s=${name}`
    t.deepEqual((await dev.readTags(['Speed', 'Count', 'Limit'].map(tag))).map((r) => r.value), [12.5, 42, 100])
    const written = await dev.writeTags([
      [tag('Count'), 7],
      [tag('Speed'), 0.25],
      [tag('Limit'), 1],
    ])
    // asyncua refuses a read-only node as access denied (node-opcua and open62541: BadNotWritable).
    t.deepEqual(written.map((r) => r.error?.statusName), [undefined, undefined, 'BadUserAccessDenied'])
    t.deepEqual((await dev.readTags([tag('Count'), tag('Speed')])).map((r) => r.value), [7, 0.25])
    // Its Add of two Int32 answers an Int64: a bigint.
    t.deepEqual(await dev.call(tag('Bifrost'), tag('Add'), [2, 3]), [5n])
    t.deepEqual((await dev.browse(tag('Bifrost'))).map((n) => `${n.displayName}:${n.type}`), ['Speed:Double', 'Count:Int32', 'Limit:Double', 'Add:Method'])
    await dev.close()
  } finally {
    await stopProcess(server)
  }
})
