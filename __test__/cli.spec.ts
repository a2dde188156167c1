// The `bifrost` command line and the demo, run as a user would run them.
import test from 'ava'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { connect, startSimulator } from '../src/index.js'
import type { Simulator } from '../src/index.js'
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
    // 'close', not 'exit': output may still be arriving when the process has exited.
    child.on('close', (code) => resolve({ code, stdout, stderr }))
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
    t.is(refused.code, 3)
    t.regex(refused.stderr, /^error ECONNREFUSED: /)

    const usage = await cli([])
    t.is(usage.code, 2)
    t.regex(usage.stderr, /usage:/)
    t.is(usage.stdout, '')
  } finally {
    await stopProcess(sim)
  }
})

/** Runs `body` against an in-process simulator, stopped afterwards whatever happens. */
async function withSimulator(options: Parameters<typeof startSimulator>[0], body: (sim: Simulator) => Promise<void>): Promise<void> {
  const sim = await startSimulator(options)
  try {
    await body(sim)
  } finally {
    sim.stop()
  }
}

const COMMAND_FLAGS: Record<string, string[]> = {
  read: ['--json', '--timeout MS'],
  write: ['--json', '--timeout MS'],
  watch: ['--interval MS', '--count N', '--json', '--timeout MS'],
  simulate: ['--host H', '--port N', '--framing tcp|rtu', '--units 1,2', '--latency-ms N', '--drop-every N', '--disconnect-after N', '--malformed-every N', '--invalid RANGE', '--idle-timeout-ms N', '--max-connections N'],
}

test.serial('--help, -h and help print the help to stdout and exit 0; no arguments is a usage error', async (t) => {
  for (const args of [['--help'], ['-h'], ['help']]) {
    const r = await cli(args)
    t.is(r.code, 0, args.join(' '))
    t.is(r.stderr, '')
    t.regex(r.stdout, /^usage: bifrost <command> \[options\]\n/)
    for (const command of Object.keys(COMMAND_FLAGS)) t.regex(r.stdout, new RegExp(`^  ${command} `, 'm'))
    t.regex(r.stdout, /exit status:\n  0  success\n  1  a tag failed.*\n  2  usage error.*\n  3  could not connect/)
  }
  const none = await cli([])
  t.is(none.code, 2)
  t.is(none.stdout, '')
  t.regex(none.stderr, /^usage: bifrost <command>/)
})

test.serial('each command has its own help, from --help, -h and help <command>', async (t) => {
  for (const [command, flags] of Object.entries(COMMAND_FLAGS)) {
    const [long, short, viaHelp] = await Promise.all([cli([command, '--help']), cli([command, '-h']), cli(['help', command])])
    for (const r of [long, short, viaHelp]) {
      t.is(r.code, 0, `${command}: ${r.stderr}`)
      t.is(r.stderr, '')
    }
    t.is(short.stdout, long.stdout)
    t.is(viaHelp.stdout, long.stdout)
    t.regex(long.stdout, new RegExp(`^usage: bifrost ${command} `))
    for (const flag of [...flags, '-h, --help']) t.true(long.stdout.includes(`\n  ${flag} `), `${command} help lists ${flag}`)
  }
  const unknown = await cli(['help', 'frobnicate'])
  t.is(unknown.code, 2)
  t.regex(unknown.stderr, /unknown command 'frobnicate'/)
})

test.serial('--version and -V print the version from package.json', async (t) => {
  const { version } = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }
  for (const flag of ['--version', '-V']) {
    const r = await cli([flag])
    t.is(r.code, 0, r.stderr)
    t.is(r.stdout, `${version}\n`)
  }
})

test.serial('unknown flags, bad flag values, commands and arguments exit 2 before anything is sent', async (t) => {
  await withSimulator({}, async (sim) => {
    const tag = 'holding-register:0:UINT'
    const cases: Array<{ args: string[]; stderr: RegExp }> = [
      { args: ['read', sim.url, tag, '--jsn'], stderr: /unknown flag --jsn for 'bifrost read' \(its flags: --json, --timeout MS, -h, --help\)/ },
      // Before the fix, --jsn took the tag as its value and the read went on with no tags.
      { args: ['read', sim.url, '--jsn', tag], stderr: /unknown flag --jsn/ },
      { args: ['watch', sim.url, tag, '--intervall', '100'], stderr: /unknown flag --intervall for 'bifrost watch' \(its flags: --interval MS, --count N, --json, --timeout MS/ },
      { args: ['write', sim.url, tag, '1', '--count', '1'], stderr: /unknown flag --count for 'bifrost write'/ },
      { args: ['read', sim.url, tag, '--json=yes'], stderr: /--json takes no value/ },
      { args: ['read', sim.url, tag, '--timeout'], stderr: /--timeout needs a value/ },
      { args: ['read', sim.url, tag, '--timeout', '0'], stderr: /--timeout must be a whole number from 1 to 2147483647, not '0'/ },
      { args: ['write', sim.url, tag, '1', '--timeout', '1.5'], stderr: /--timeout must be a whole number/ },
      { args: ['watch', sim.url, tag, '--timeout=-5'], stderr: /--timeout must be a whole number/ },
      { args: ['watch', sim.url, tag, '--count', '0'], stderr: /--count must be a whole number of at least 1, not '0'/ },
      { args: ['watch', sim.url, tag, '--count', '-1'], stderr: /--count must be a whole number/ },
      { args: ['watch', sim.url, tag, '--count', '2.5'], stderr: /--count must be a whole number/ },
      { args: ['watch', sim.url, tag, '--interval', 'soon'], stderr: /--interval must be a whole number/ },
      { args: ['read', sim.url], stderr: /read needs <url> and at least one <tag>/ },
      { args: ['write', sim.url, tag], stderr: /write needs <url> <tag> <value>/ },
      { args: ['read', 'not-a-url', tag], stderr: /^error EADDRESS: / },
      { args: ['simulate', 'modbus', '--framing', 'udp'], stderr: /--framing must be tcp or rtu/ },
      { args: ['simulate', 'ftp'], stderr: /simulate takes 'modbus', 'enip' or 'opcua', not 'ftp'/ },
      { args: ['simulate', 'modbus', '--variables', '5'], stderr: /--variables is for the opcua simulator/ },
      { args: ['simulate', 'modbus', '--tag', 'A=INT'], stderr: /--tag is for the enip simulator/ },
      { args: ['simulate', 'enip', '--units', '1'], stderr: /--units is for the modbus simulator/ },
      { args: ['frobnicate', sim.url], stderr: /unknown command 'frobnicate'/ },
      { args: ['--frobnicate'], stderr: /unknown flag --frobnicate/ },
    ]
    const results = await Promise.all(cases.map(({ args }) => cli(args)))
    results.forEach((r, i) => {
      const { args, stderr } = cases[i]!
      t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`)
      t.regex(r.stderr, stderr)
      t.is(r.stdout, '', args.join(' '))
    })
    t.is(sim.requests, 0, 'no usage error reached the device')
  })
})

test.serial('--flag=value, -- and negative values', async (t) => {
  await withSimulator({}, async (sim) => {
    const watch = await cli(['watch', sim.url, 'holding-register:3:UINT', '--interval=100', '--count=2'])
    t.is(watch.code, 0, watch.stderr)
    t.is(watch.stdout.trim().split('\n').filter((l) => l.endsWith('holding-register:3:UINT=3')).length, 2)

    const dashed = await cli(['write', sim.url, 'holding-register:60:STRING(8)', '--', '--dash'])
    t.is(dashed.code, 0, dashed.stderr)
    const negative = await cli(['write', sim.url, 'holding-register:70:INT', '-3'])
    t.is(negative.code, 0, negative.stderr)
    const read = await cli(['read', sim.url, 'holding-register:60:STRING(8)', 'holding-register:70:INT'])
    t.is(read.stdout, 'holding-register:60:STRING(8)\t"--dash"\nholding-register:70:INT\t-3\n')
  })
})

test.serial('--timeout is the per-call timeout of read, write and watch', async (t) => {
  // Replies take 1.5 s: past the default 1 s request timeout, well within --timeout 10000.
  await withSimulator({ latencyMs: 1500 }, async (sim) => {
    const tag = 'holding-register:5:UINT'
    const [read, write, watch] = await Promise.all([
      cli(['read', sim.url, tag, '--timeout', '10000']),
      cli(['write', sim.url, 'holding-register:6:UINT', '6', '--timeout=10000']),
      cli(['watch', sim.url, tag, '--count', '1', '--timeout', '10000']),
    ])
    t.is(read.code, 0, read.stdout + read.stderr)
    t.is(read.stdout, `${tag}\t5\n`)
    t.is(write.code, 0, write.stdout + write.stderr)
    t.is(write.stdout, 'holding-register:6:UINT\tok\n')
    t.is(watch.code, 0, watch.stdout + watch.stderr)
    t.regex(watch.stdout, /holding-register:5:UINT=5\n$/)

    // The same calls without --timeout time out, so the flag is what made them succeed.
    const [shortRead, shortWatch] = await Promise.all([cli(['read', sim.url, tag]), cli(['watch', sim.url, tag, '--count', '1'])])
    t.is(shortRead.code, 1)
    t.regex(shortRead.stdout, /ERROR ETIMEDOUT/)
    t.is(shortWatch.code, 1)
    t.regex(shortWatch.stdout, /holding-register:5:UINT=ETIMEDOUT/)
  })
})

test.serial('watch polls on through failed polls and exits 1 when any tag failed', async (t) => {
  // Every 3rd request gets no reply: poll 3 times out, and the polls after it succeed again.
  await withSimulator({ dropEvery: 3 }, async (sim) => {
    const r = await cli(['watch', sim.url, 'holding-register:1:UINT', '--interval', '100', '--count', '5', '--timeout', '1000'])
    t.is(r.code, 1, r.stderr)
    const lines = r.stdout.trim().split('\n')
    t.is(lines.length, 5, r.stdout)
    const failed = lines.findIndex((l) => l.endsWith('holding-register:1:UINT=ETIMEDOUT'))
    t.true(failed >= 0, r.stdout)
    t.true(lines.slice(failed + 1).some((l) => l.endsWith('holding-register:1:UINT=1')), r.stdout)
  })
  await withSimulator({ invalid: ['holding-register:100-109'] }, async (sim) => {
    const r = await cli(['watch', sim.url, 'holding-register:1:UINT', 'holding-register:100:UINT', '--interval', '100', '--count', '3', '--json'])
    t.is(r.code, 1, r.stderr)
    const polls = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Array<{ value?: number; error?: { code: string } }>)
    t.is(polls.length, 3)
    for (const [good, bad] of polls) {
      t.is(good!.value, 1)
      t.is(bad!.error!.code, 'MODBUS_EXCEPTION')
    }
  })
})

test.serial('watch ends on SIGINT or SIGTERM with 0 when every poll was good, 1 when a tag failed', async (t) => {
  await withSimulator({ invalid: ['holding-register:100-109'] }, async (sim) => {
    const cases = [
      { signal: 'SIGINT', tag: 'holding-register:1:UINT', seen: 'holding-register:1:UINT=1', code: 0 },
      { signal: 'SIGTERM', tag: 'holding-register:100:UINT', seen: 'holding-register:100:UINT=MODBUS_EXCEPTION', code: 1 },
    ] as const
    for (const c of cases) {
      // Started with no --count, so only the signal can end it.
      const child = await startProcess(process.execPath, [BIN, 'watch', sim.url, c.tag, '--interval', '100'], c.seen)
      const exited = new Promise<[number | null, string | null]>((resolve) => child.once('exit', (code, signal) => resolve([code, signal])))
      child.kill(c.signal)
      t.deepEqual(await exited, [c.code, null], c.signal)
    }
  })
})

test.serial('64-bit integers are written and printed with every digit, in text and JSON', async (t) => {
  await withSimulator({}, async (sim) => {
    const lint = 'holding-register:40:LINT'
    const ulint = 'holding-register:44:ULINT'
    const pair = 'holding-register:48:LINT[2]'
    for (const [tag, value] of [[lint, '9007199254740993'], [ulint, '18446744073709551615'], [pair, '[9007199254740993,-9223372036854775808]']]) {
      const w = await cli(['write', sim.url, tag!, value!])
      t.is(w.code, 0, w.stderr)
      t.is(w.stdout, `${tag}\tok\n`)
    }

    const text = await cli(['read', sim.url, lint, ulint, pair])
    t.is(text.code, 0, text.stderr)
    t.is(text.stdout, `${lint}\t9007199254740993\n${ulint}\t18446744073709551615\n${pair}\t[9007199254740993,-9223372036854775808]\n`)

    const json = await cli(['read', sim.url, lint, ulint, pair, '--json'])
    t.is(json.code, 0, json.stderr)
    t.regex(json.stdout, /"tag":"holding-register:40:LINT",[^}]*"value":9007199254740993[,}]/)
    t.regex(json.stdout, /"tag":"holding-register:44:ULINT",[^}]*"value":18446744073709551615[,}]/)
    t.regex(json.stdout, /"value":\[9007199254740993,-9223372036854775808\]/)
    t.is((JSON.parse(json.stdout) as unknown[]).length, 3, 'still valid JSON')

    const dev = await connect(sim.url)
    try {
      t.is(await dev.read(lint), 9007199254740993n)
      t.is(await dev.read(ulint), 18446744073709551615n)
      t.deepEqual(await dev.read(pair), [9007199254740993n, -9223372036854775808n])
    } finally {
      await dev.close()
    }
  })
})

test.serial('exit statuses: 0 success, 1 a tag failed, 2 usage error, 3 could not connect', async (t) => {
  await withSimulator({}, async (sim) => {
    const closed = `modbus-tcp://127.0.0.1:${await freePort()}`
    const [ok, tagFailed, usage, unreachable, unreachableWatch] = await Promise.all([
      cli(['read', sim.url, 'coil:1']),
      cli(['write', sim.url, 'holding-register:0:UINT', '70000']),
      cli(['read', sim.url, 'coil:1', '--jsn']),
      cli(['read', closed, 'coil:1']),
      cli(['watch', closed, 'coil:1', '--count', '1']),
    ])
    t.is(ok.code, 0, ok.stderr)
    t.is(tagFailed.code, 1, tagFailed.stderr)
    t.regex(tagFailed.stdout, /^holding-register:0:UINT\tERROR EINVAL: /)
    t.is(usage.code, 2)
    t.is(unreachable.code, 3)
    t.regex(unreachable.stderr, /^error ECONNREFUSED: /)
    t.is(unreachableWatch.code, 3)
  })
})

test.serial('the demo shows live values from the simulator and exits by itself', async (t) => {
  const demo = spawn(process.execPath, [join(ROOT, 'scripts', 'demo.mjs')], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  demo.stdout.on('data', (c) => (out += c))
  const code = await new Promise((resolve) => demo.on('close', resolve))
  t.is(code, 0)
  t.regex(out, /simulator listening on modbus-tcp:\/\/127\.0\.0\.1:\d+/)
  t.regex(out, /cycle 12\/12/)
  t.regex(out, /holding-register:400:STRING\(12\)\s+"Bifrost demo"\s+good/)
  t.regex(out, /holding-register:200:DINT\s+-100000\s+good/)
  t.regex(out, /simulator listening on eip:\/\/127\.0\.0\.1:\d+/)
  t.regex(out, /eip\s+Recipe\s+"Bifrost PLC"\s+good/)
  t.regex(out, /eip\s+Batch\[0\]\{4\}\s+\[0,1,2,3\]\s+good/)
  t.regex(out, /eip\s+Oven\s+\{"Temp":192,"Door":false,"Loads":12\}\s+good/)
  t.regex(out, /simulator listening on opc\.tcp:\/\/127\.0\.0\.1:\d+/)
  t.regex(out, /opc\.tcp\s+ns=1;s=V11\s+12\s+good/, 'the value written in the last cycle')
  t.regex(out, /opc\.tcp\s+ns=1;s=V14\s+"v14"\s+good/)
  t.regex(out, /done: the simulators served \d+ Modbus, \d+ EtherNet\/IP and \d+ OPC UA requests/)
})
