// The README's examples are run as written, so the documentation cannot rot.
import test from 'ava'
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort, peerTest, run, startProcess, stopProcess } from './helpers.js'

test('the README Modbus example runs and prints what it promises', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, startSimulator[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has a Modbus example')
  const file = join(__dirname, '.readme-example.mts')
  writeFileSync(file, example!)
  try {
    const output = await run(process.execPath, ['--import', 'tsx', file])
    t.regex(output, /^21\.5$/m)
    t.regex(output, /holding-register:20:UINT\[10\] good \[\s*20, 21, 22/)
    t.regex(output, /^coil:5 good true$/m)
    t.regex(output, /^400021:UINT good 20$/m)
    t.regex(output, /^EADDRESS .*column 18/m)
  } finally {
    rmSync(file, { force: true })
  }
})

test('the README gateway example runs and prints what it promises', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, createPoller[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has a gateway example')
  const file = join(__dirname, '.readme-gateway.mts')
  writeFileSync(file, example!)
  try {
    const output = await run(process.execPath, ['--import', 'tsx', file])
    t.regex(output, /^polled modbus-tcp:\/\/127\.0\.0\.1:5021\?unit-id=[123] 3 \[ 0, 7, 1 \] \[ 0, 0, 0 \]$/m)
    t.regex(output, /^changed modbus-tcp:\/\/127\.0\.0\.1:5021\?unit-id=1 1 \[ 20 \] \[ 0 \]$/m)
    t.is(output.match(/^changed /gm)?.length, 1, 'an unchanging tag under a deadband is delivered once')
    t.is(output.match(/^health \d+ good 0 0 true$/gm)?.length, 4)
    t.regex(output, /^group \[ \[ 3, 8, 9, 0 \], \[ 3, 8, 9, 0 \], \[ 3, 8, 9, 0 \] \]$/m)
    t.is(output.match(/^round [012] 3,8,9,0,3,8,9,0,3,8,9,0 failed plans 0$/gm)?.length, 3)
    t.regex(output, /^frames \{ frames: 2, failed: 0 \} \[ 42, -3, 42, -3 \]$/m)
  } finally {
    rmSync(file, { force: true })
  }
})

test('the README EtherNet/IP example runs and prints what it promises', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, startEnipSimulator[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has an EtherNet/IP example')
  const file = join(__dirname, '.readme-enip.mts')
  writeFileSync(file, example!)
  try {
    const output = await run(process.execPath, ['--import', 'tsx', file])
    t.regex(output, /productName: 'Bifrost Logix Simulator'/)
    t.regex(output, /^21\.5 Recipe A \[ false, true, true, true \]$/m)
    t.regex(output, /^\{ Temp: 180, Steps: \[ 0, 0, 5, 0 \], Active: false, Name: 'rye' \}$/m)
    t.regex(output, /^SCADA\[10\]\{3\} good \[ 1, 2, 3 \]$/m)
    t.regex(output, /^Flags good 32$/m)
    t.regex(output, /^Flags\.5 good true$/m)
    t.regex(output, /^Nope bad CIP_STATUS status=4$/m)
    t.regex(output, /^\[ 0, 1, 2, 3, 4, 21\.5 \]$/m)
  } finally {
    rmSync(file, { force: true })
  }
})

test('the README install examples run as written, CommonJS and ESM, through the package name', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const blocks = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]!)
  const cjs = blocks.find((b) => b.includes("require('@bifrost/protocols')"))
  const esm = blocks.find((b) => b.includes("from '@bifrost/protocols'"))
  t.truthy(cjs && esm, 'the README has a CommonJS and an ESM example')
  for (const [name, code] of [['.readme-install.cjs', cjs!], ['.readme-install.mjs', esm!]] as const) {
    // The package resolves its own name (package.json "exports"), as an installed copy would.
    const file = join(__dirname, name)
    writeFileSync(file, code)
    try {
      t.regex(await run(process.execPath, [file]), /\[ 0, 1, 2, 3 \]/, name)
    } finally {
      rmSync(file, { force: true })
    }
  }
})

test('the README OPC UA example runs and prints what it promises', async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, getEndpoints, startOpcuaSimulator[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has an OPC UA example')
  const file = join(__dirname, '.readme-opcua.mts')
  writeFileSync(file, example!)
  try {
    const output = await run(process.execPath, ['--import', 'tsx', file])
    t.regex(output, /'None http:\/\/opcfoundation\.org\/UA\/SecurityPolicy#None'/)
    t.regex(output, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/m)
    t.regex(output, /^\[ 42 \]$/m)
    t.regex(output, /^ns=1;s=Sine$/m)
    t.regex(output, /^ns=1;s=Ticks = \d+, ns=1;s=Sine = /m)
    t.regex(output, /^200$/m)
    // After the removal, Ticks alone, every 200 ms (two ticks apart) once the modify took.
    const ticks = [...output.matchAll(/^ns=1;s=Ticks = (\d+)$/gm)].map((m) => Number(m[1]))
    t.true(ticks.length >= 3 && ticks.at(-1)! > 20, String(ticks))
    t.regex(output, /^0 0 \d{13}/m, 'a column: V0, its value and timestamp')
    t.regex(output, /^1 -?[\d.e-]+ \d{13}/m, 'a column: Sine')
  } finally {
    rmSync(file, { force: true })
  }
})

const OPEN62541 = join(__dirname, '..', 'target', 'open62541', 'bin', 'open62541_server')

peerTest('the README secure OPC UA example runs against open62541: refused until the server is trusted, then reads as the user', { name: 'open62541 (node scripts/open62541.mjs builds it)', present: existsSync(OPEN62541) }, async (t) => {
  const readme = readFileSync(join(__dirname, '..', 'README.md'), 'utf8')
  const example = /```ts\n(import \{ connect, BifrostError[\s\S]*?)```/.exec(readme)?.[1]
  t.truthy(example, 'the README has a secure OPC UA example')
  const port = await freePort()
  const server = await startProcess(OPEN62541, [String(port), '10', 'secure'], `listening ${port}`, process.env, 90_000)
  // The example's store is the default one: under a configuration folder of the test's own.
  const config = mkdtempSync(join(tmpdir(), 'bifrost-readme-config-'))
  const file = join(__dirname, '.readme-secure.mts')
  writeFileSync(file, example!.replace('opc.tcp://10.0.0.7:4840', `opc.tcp://127.0.0.1:${port}`))
  const env = { ...process.env, XDG_CONFIG_HOME: config, OPCUA_PASSWORD: 'secret-pw' }
  try {
    const first = await run(process.execPath, ['--import', 'tsx', file], env)
    const pki = join(config, 'bifrost', 'pki')
    t.regex(first, /is not trusted: it was saved to '.*rejected\/certs\/[0-9a-f]{40}\.der'/)
    const rejected = readdirSync(join(pki, 'rejected', 'certs'))
    mkdirSync(join(pki, 'trusted', 'certs'), { recursive: true })
    copyFileSync(join(pki, 'rejected', 'certs', rejected[0]!), join(pki, 'trusted', 'certs', rejected[0]!))
    const second = await run(process.execPath, ['--import', 'tsx', file], env)
    t.regex(second, /tag: 'ns=2;s=V0'[\s\S]*value: 0[\s\S]*tag: 'ns=2;s=V4'[\s\S]*value: 'v4'/)
    t.false(second.includes('secret-pw'))
  } finally {
    rmSync(file, { force: true })
    rmSync(config, { recursive: true, force: true })
    await stopProcess(server)
  }
})
