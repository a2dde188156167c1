// The `bifrost` command line and the demo, run as a user would run them.
import test from 'ava'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { freePort, startProcess, stopProcess } from './helpers.js'

const ROOT = join(__dirname, '..')
const BIN = join(ROOT, 'bin', 'bifrost.js')

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (c) => (stdout += c))
    child.stderr.on('data', (c) => (stderr += c))
    child.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

test.serial('simulate, read, write and watch from the command line', async (t) => {
  const port = await freePort()
  const sim = await startProcess(process.execPath, [BIN, 'simulate', 'modbus', '--port', String(port)], 'listening')
  const url = `modbus-tcp://127.0.0.1:${port}`
  try {
    const read = await cli(['read', url, 'holding-register:0:UINT[4]', 'coil:5'])
    t.is(read.code, 0, read.stderr)
    t.is(read.stdout, 'holding-register:0:UINT[4]\t[0,1,2,3]\ncoil:5\ttrue\n')

    const write = await cli(['write', url, 'holding-register:10:REAL', '21.5'])
    t.is(write.code, 0, write.stderr)
    t.is(write.stdout, 'holding-register:10:REAL\tok\n')
    const json = await cli(['read', url, 'holding-register:10:REAL', '--json'])
    t.is(JSON.parse(json.stdout)[0].value, 21.5)

    const watch = await cli(['watch', url, 'holding-register:10:REAL', '--interval', '100', '--count', '3'])
    t.is(watch.code, 0, watch.stderr)
    t.is(watch.stdout.trim().split('\n').filter((l) => l.includes('holding-register:10:REAL=21.5')).length, 3)

    const bad = await cli(['read', url, 'holding-register:0:FLOT'])
    t.is(bad.code, 1)
    t.regex(bad.stdout, /ERROR EADDRESS: unknown data type 'FLOT' at column 20/)

    const refused = await cli(['read', `modbus-tcp://127.0.0.1:${await freePort()}`, 'coil:1'])
    t.is(refused.code, 1)
    t.regex(refused.stderr, /^error ECONNREFUSED: /)

    const usage = await cli([])
    t.is(usage.code, 2)
    t.regex(usage.stdout, /usage:/)
  } finally {
    await stopProcess(sim)
  }
})

test.serial('the demo shows live values from the simulator and exits by itself', async (t) => {
  const demo = spawn(process.execPath, [join(ROOT, 'scripts', 'demo.mjs')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  demo.stdout.on('data', (c) => (out += c))
  const code = await new Promise((resolve) => demo.on('exit', resolve))
  t.is(code, 0)
  t.regex(out, /simulator listening on modbus-tcp:\/\/127\.0\.0\.1:\d+/)
  t.regex(out, /cycle 12\/12/)
  t.regex(out, /holding-register:400:STRING\(12\)\s+"Bifrost demo"\s+good/)
  t.regex(out, /holding-register:200:DINT\s+-100000\s+good/)
  t.regex(out, /done: the simulator served \d+ requests/)
})
