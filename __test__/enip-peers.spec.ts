// EtherNet/IP against third-party peers over real sockets: cpppo's server for
// our client (its own client judging the values) and for discovery, and cpppo's
// client, st-ethernet-ip and pylogix against our simulator (each judging what
// our client wrote, and our client reading what they wrote). Broadcast
// discovery runs inside a network namespace of its own.
import test from 'ava'
import type { ChildProcess } from 'node:child_process'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { connect, discover, startEnipSimulator } from '../src/index.js'
import type { Simulator } from '../src/index.js'
import { PEERS, available, freePort, peerTest, run, startProcess, stopProcess } from './helpers.js'

/** The Python on PATH, where .ci/run installs cpppo and pylogix from PyPI. */
const PYTHON = 'python3'
const cpppo = { name: 'cpppo 5.2.5 (pip, python3 on PATH)', present: available(PYTHON, ['-c', 'import cpppo']) }
const pycomm3 = { name: 'pycomm3 1.2.16 (pip, python3 on PATH)', present: available(PYTHON, ['-c', 'import pycomm3']) }
const pylogix = { name: 'pylogix 1.1.6 (pip, python3 on PATH)', present: available(PYTHON, ['-c', 'import pylogix']) }
const namespaces = {
  name: 'unshare and ip (util-linux, iproute2): a network namespace of our own',
  present: available('unshare', ['--net', '--map-root-user', 'ip', 'link', 'add', 'v0', 'type', 'veth', 'peer', 'name', 'v1']),
}
const stEthernetIp = { name: 'st-ethernet-ip (npm devDependency)', present: available(process.execPath, ['-e', "require('st-ethernet-ip')"]) }

const TAGS = ['SCADA=INT[1000]', 'Counter=DINT', 'Temp=REAL', 'Big=DINT[500]', 'Name=STRING', 'Note=CIP_STRING', 'Flags=DINT']

const children: ChildProcess[] = []
const simulators: Simulator[] = []
test.after.always(async () => {
  simulators.forEach((sim) => sim.stop())
  for (const child of children) await stopProcess(child)
})

/** cpppo's client: `-p` prints a line per operation, `<tag> == [values]: 'OK'` or `<= [values]` for writes. */
async function cpppoClient(port: number, ...operations: string[]): Promise<string[]> {
  const out = await run(PYTHON, ['-m', 'cpppo.server.enip.client', '-p', '-t', '10', '-a', `127.0.0.1:${port}`, ...operations])
  return out
    .split('\n')
    .filter((line) => /[=<]= \[/.test(line))
    .map((line) => line.replace(/\s+/g, ' ').trim())
}

async function cpppoServer(): Promise<number> {
  const port = await freePort()
  const args = ['-m', 'cpppo.server.enip', '-A', '-a', `127.0.0.1:${port}`, ...TAGS.map((t) => t.replace('CIP_STRING', 'STRING')).filter((t) => !t.startsWith('Name='))]
  // It announces TCP, then UDP: ready once both listen (discovery needs the UDP one).
  children.push(await startProcess(PYTHON, args, 'Network UDP Server address'))
  return port
}

peerTest("our client reads and writes cpppo's server, connected and not; cpppo's client sees the values", cpppo, async (t) => {
  const port = await cpppoServer()
  // cpppo is slow (a few hundred requests a second): generous request timeouts.
  for (const [round, query] of ['request-timeout=10000', 'connected=false&request-timeout=10000'].entries()) {
    const dev = await connect(`eip://127.0.0.1:${port}?${query}`)
    const results = await dev.readTags(['SCADA[5]', 'SCADA[0]{4}', 'Counter', 'Temp', 'Nope', 'Note'])
    t.deepEqual(results.slice(0, 4).map((r) => r.error?.message ?? r.value), round === 1 ? [1234, [0, 0, 0, 0], -7, 21.5] : [0, [0, 0, 0, 0], 0, 0])
    // An unknown tag inside a Multiple Service Packet fails alone, as status 0x05.
    t.is(results[4]!.error?.code, 'CIP_STATUS')
    t.is(results[4]!.error?.status, 0x05)
    // 500 DINTs are 2,000 bytes; cpppo stops every reply at 488 (status 0x06): fragmented reads continue it.
    const big = Array<number>(500).fill(0)
    if (round === 1) big.splice(10, 3, 7, 8, 9) // written in the first round
    t.deepEqual(await dev.read('Big[0]{500}'), big)
    const written = await dev.writeTags({ 'SCADA[5]': 1234, Temp: 21.5, Counter: -7, 'Big[10]{3}': [7, 8, 9], Note: 'odd' })
    t.deepEqual(written.map((r) => r.error?.message ?? 'ok'), Array(5).fill('ok'))
    await dev.close()
  }
  t.deepEqual(await cpppoClient(port, 'SCADA[5]', 'Temp', 'Counter', 'Big[9-13]', 'Note'), [
    "SCADA[5][ 5-5 ]+ 0 == [1234]: 'OK'",
    "Temp == [21.5]: 'OK'",
    "Counter == [-7]: 'OK'",
    "Big[9][ 9-13 ]+ 0 == [0, 7, 8, 9, 0]: 'OK'",
    "Note == ['odd']: 'OK'",
  ])
  // And cpppo's client writes, our client reads.
  await cpppoClient(port, 'SCADA[6]=(INT)-4321', 'Note=(STRING)written by cpppo')
  const dev = await connect(`eip://127.0.0.1:${port}?request-timeout=10000`)
  t.deepEqual(await Promise.all([dev.read('SCADA[6]'), dev.read('Note')]), [-4321, 'written by cpppo'])
  await dev.close()
})

peerTest("discover() finds cpppo's server by its UDP ListIdentity; identity() reads the same over TCP", cpppo, async (t) => {
  const port = await cpppoServer()
  // cpppo answers slowly on a busy machine: gather answers for a long while.
  const found = await discover({ address: '127.0.0.1', port, timeoutMs: 8000 })
  t.is(found.length, 1)
  t.is(found[0]!.address, '127.0.0.1')
  t.is(found[0]!.vendorId, 1)
  t.regex(found[0]!.productName, /1756-L61/)
  // The same identity over TCP: identity() (the Identity object's attributes), and attribute 7 alone (a short string).
  const dev = await connect(`eip://127.0.0.1:${port}?request-timeout=10000`)
  const { address, port: _, state, ...listed } = found[0]!
  t.deepEqual(await dev.identity(), listed)
  const name = (await dev.read('@1/1/7')) as number[]
  t.is(String.fromCharCode(...name.slice(1, 1 + name[0]!)), found[0]!.productName)
  await dev.close()
})

peerTest('discover() broadcasts on a network (inside a network namespace of its own) and a simulator answers', namespaces, async (t) => {
  // Broadcasts never leave the namespace: its only network is a veth pair, 10.9.0.1 and 10.9.0.2.
  const script = [
    'set -e',
    'ip link set lo up',
    'ip link add v0 type veth peer name v1',
    'ip addr add 10.9.0.1/24 brd 10.9.0.255 dev v0',
    'ip addr add 10.9.0.2/24 brd 10.9.0.255 dev v1',
    'ip link set v0 up',
    'ip link set v1 up',
    `exec "${process.execPath}" --import tsx "${join(__dirname, 'fixtures', 'discover-broadcast.mts')}" 44818`,
  ].join('\n')
  const out = await run('unshare', ['--net', '--map-root-user', 'sh', '-c', script])
  t.deepEqual(JSON.parse(out), [{ productName: 'Bifrost Logix Simulator', port: 44818 }])
})

peerTest("cpppo's list_services parses our simulator's ListServices and ListIdentity, over TCP and UDP", cpppo, async (t) => {
  const sim = await startEnipSimulator({ tags: TAGS })
  simulators.push(sim)
  for (const udp of [[], ['-u']]) {
    const out = await run(PYTHON, ['-m', 'cpppo.server.enip.list_services', '-a', `127.0.0.1:${sim.port}`, '-i', ...udp])
    const via = udp.length ? 'UDP' : 'TCP'
    t.regex(out, /communications_service\.capability': +288,/, via) // 0x0120: CIP over TCP, class 0/1 over UDP
    t.regex(out, /communications_service\.service_name': +'Communications'/, via)
    t.regex(out, /identity_object\.product_name': +'Bifrost Logix Simulator'/, via)
    t.regex(out, new RegExp(`identity_object\\.sin_port': +${sim.port},`), via)
  }
})

peerTest("cpppo's client reads and writes our simulator", cpppo, async (t) => {
  const sim = await startEnipSimulator({ tags: TAGS })
  simulators.push(sim)
  const dev = await connect(sim.url)
  await dev.writeTags({ 'SCADA[5]': 1234, Temp: 21.5, Note: 'odd' })
  t.deepEqual(await cpppoClient(sim.port, 'SCADA[5]', 'Temp', 'Big[9-13]', 'Note'), [
    "SCADA[5][ 5-5 ]+ 0 == [1234]: 'OK'",
    "Temp == [21.5]: 'OK'",
    "Big[9][ 9-13 ]+ 0 == [9, 10, 11, 12, 13]: 'OK'",
    "Note == ['odd']: 'OK'",
  ])
  // Read Tag Fragmented (-f), and a Multiple Service Packet (-m).
  // cpppo's client shows what one reply holds (it does not continue a partial one): 100 DINTs fit.
  t.deepEqual(await cpppoClient(sim.port, '-f', 'Big[0-99]'), [`Big[0][ 0-99 ]+ 0 == [${Array.from({ length: 100 }, (_, i) => i).join(', ')}]: 'OK'`])
  t.deepEqual(await cpppoClient(sim.port, '-m', 'SCADA[1]', 'Counter'), ["SCADA[1][ 1-1 ]+ 0 == [1]: 'OK'", "Counter == [0]: 'OK'"])
  await cpppoClient(sim.port, 'SCADA[7]=(INT)-77', 'Counter=(DINT)99', 'Note=(STRING)from cpppo')
  t.deepEqual(await Promise.all(['SCADA[7]', 'Counter', 'Note'].map((tag) => dev.read(tag))), [-77, 99, 'from cpppo'])
  await dev.close()
})

peerTest('st-ethernet-ip (pure JS) reads and writes our simulator, one tag and a tag group', stEthernetIp, async (t) => {
  const sim = await startEnipSimulator({ tags: TAGS })
  simulators.push(sim)
  const require = createRequire(__filename)
  // It dials port 44818 unless its config says otherwise; connect(host, 0, false) skips its tag-list upload.
  require('st-ethernet-ip/dist/config').EIP_PORT = sim.port
  const { Controller, Tag, TagGroup } = require('st-ethernet-ip')
  const plc = new Controller(true)
  await plc.connect('127.0.0.1', 0, false)
  await plc.readControllerProps()
  t.is(plc.properties.name, 'Bifrost Logix Simulator')
  const counter = new Tag('Counter')
  const temp = new Tag('Temp')
  await plc.readTag(counter)
  await plc.readTag(temp)
  t.deepEqual([counter.value, temp.value], [0, 0])
  const group = new TagGroup()
  for (let i = 0; i < 50; i++) group.add(new Tag(`SCADA[${i}]`))
  await plc.readTagGroup(group)
  const values: number[] = []
  group.forEach((tag: { value: number }) => values.push(tag.value))
  t.deepEqual(values, Array.from({ length: 50 }, (_, i) => i))
  counter.value = -123
  await plc.writeTag(counter)
  const dev = await connect(sim.url)
  t.is(await dev.read('Counter'), -123)
  await dev.write('Temp', 7.25)
  await plc.readTag(temp)
  t.is(temp.value, 7.25)
  await dev.close()
  plc.destroy()
})

peerTest('pylogix reads and writes our simulator: numbers, a Logix STRING, a bit, BOOL array elements', pylogix, async (t) => {
  const sim = await startEnipSimulator({ tags: [...TAGS, 'Bits=BOOL[64]'] })
  simulators.push(sim)
  const dev = await connect(sim.url)
  await dev.writeTags({ 'SCADA[5]': 555, Temp: 1.5, Name: 'from bifrost', Flags: 0b1001, 'Bits[40]': true, 'Bits[31]': true })
  const seen = JSON.parse(await run(PYTHON, [join(PEERS, 'pylogix_judge.py'), String(sim.port)])) as Record<string, unknown>
  t.deepEqual(seen['SCADA[5]'], [555, 'Success'])
  t.deepEqual(seen.Temp, [1.5, 'Success'])
  t.deepEqual(seen.Name, ['from bifrost', 'Success'])
  t.deepEqual(seen.Flags, [0b1001, 'Success'])
  t.deepEqual(seen['SCADA[0..4]'], [0, 1, 2, 3, 4])
  // Odd elements start on; ours set Bits[40] and Bits[31].
  t.deepEqual([seen['Bits[1]'], seen['Bits[40]'], seen['Bits[30..33]']], [true, true, [false, true, false, true]])
  for (const tag of ['Counter', 'Temp', 'Name', 'Flags.4', 'Bits[33]', 'Bits[34]']) t.is(seen[`write ${tag}`], 'Success', tag)
  t.deepEqual(await Promise.all(['Counter', 'Temp', 'Name', 'Flags', 'Flags.4'].map((tag) => dev.read(tag))), [123456, 3.5, 'from pylogix', 0b11001, true])
  t.deepEqual(await dev.read('Bits[30]{6}'), [false, true, false, false, true, true])
  await dev.close()
})

peerTest("pycomm3 uploads our simulator's tag list and structure templates, and reads and writes by them; our browse() lists the same", pycomm3, async (t) => {
  const sim = await startEnipSimulator({
    udts: ['POINT=X:REAL,Y:REAL', 'RECIPE=Temp:REAL,Speed:DINT,Steps:INT[4],Active:BOOL,Done:BOOL,Name:STRING,At:POINT'],
    tags: ['SCADA=INT[1000]', 'Counter=DINT', 'Flags=DINT', 'Program:Main.Speed=REAL', 'Recipe=RECIPE[3]'],
  })
  simulators.push(sim)
  const dev = await connect(sim.url)
  await dev.writeTags({ 'SCADA[5]': 555, 'Recipe[1].Temp': 71.5, 'Recipe[1].Steps[2]': -3, 'Recipe[1].Active': true, 'Recipe[1].Name': 'rye', 'Recipe[1].At.Y': -2 })
  const seen = JSON.parse(await run(PYTHON, [join(PEERS, 'pycomm3_judge.py'), String(sim.port)])) as {
    tags: Record<string, [string, number]>
    read: Record<string, unknown>
    write: Array<string | null>
    recipe: Record<string, unknown>
    recipe_write: Array<string | null>
  }
  t.deepEqual(seen.tags, {
    SCADA: ['INT', 1000],
    Counter: ['DINT', 0],
    Flags: ['DINT', 0],
    'Program:Main.Speed': ['REAL', 0],
    Recipe: ['RECIPE', 3],
  })
  t.deepEqual(seen.read, { 'SCADA[5]': 555, Counter: 0, 'Program:Main.Speed': 0, SCADA: [0, 1, 2] })
  t.deepEqual(seen.write, [null, null, null, null])
  t.deepEqual(await Promise.all(['Counter', 'Flags', 'SCADA[2]{2}', 'Program:Main.Speed'].map((tag) => dev.read(tag))), [4242, 8, [7, 8], 2.5])
  // pycomm3 decodes our structure by the template we served; our client by the same template.
  const recipe = { Temp: 71.5, Speed: 0, Steps: [0, 0, -3, 0], Active: true, Done: false, Name: 'rye', At: { X: 0, Y: -2 } }
  t.deepEqual(seen.recipe, { 'Recipe[1]': recipe, 'Recipe[1].Temp': 71.5, 'Recipe[1].At': { X: 0, Y: -2 } })
  t.deepEqual(await dev.read('Recipe[1]'), recipe)
  t.deepEqual(seen.recipe_write, [null, null, null, null])
  t.deepEqual(await dev.read('Recipe[2]'), { Temp: 0, Speed: 77, Steps: [0, 0, 0, 0], Active: false, Done: true, Name: 'pycomm3', At: { X: 1.25, Y: 0 } })
  // Two independent listings agree, structure types named alike.
  const ours = [...(await dev.browse()), ...(await dev.browse('Program:Main'))].filter((tag) => tag.type !== 'PROGRAM')
  t.deepEqual(Object.fromEntries(ours.map((tag) => [tag.name, [tag.type, tag.dimensions[0] ?? 0]])), seen.tags)
  await dev.close()
})
