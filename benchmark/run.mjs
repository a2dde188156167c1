// Benchmark: Modbus reads per second on one connection, with max-in-flight=16
// against max-in-flight=1, against the project's simulator running in its own
// process. Prints a table and writes benchmark/results/latest.json.
//   npm run bench              (5 s per run)
//   npm run bench -- --quick   (a smoke run of a few seconds, for CI)
import { spawn } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { build } from '../scripts/build.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const quick = process.argv.includes('--quick')
const SECONDS = quick ? 0.5 : 5
const ROUNDS = quick ? 1 : 3
const CALLERS = 32 // concurrent callers in both settings: only max-in-flight differs
const TAG = 'holding-register:0:UINT[10]'

build()
const require = createRequire(import.meta.url)
const { connect } = require('../dist/index.js')

async function startServer() {
  const child = spawn(process.execPath, [join(root, 'bin', 'bifrost.js'), 'simulate', 'modbus', '--port', '0'], { stdio: ['ignore', 'pipe', 'inherit'] })
  const url = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (c) => {
      out += c
      const m = /listening on (\S+)/.exec(out)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`simulator exited ${code}`)))
  })
  return { url, stop: () => child.kill('SIGTERM') }
}

async function measure(url, maxInFlight) {
  const dev = await connect(`${url}?max-in-flight=${maxInFlight}`)
  for (let i = 0; i < 200; i++) await dev.read(TAG) // warm-up
  let count = 0
  const end = performance.now() + SECONDS * 1000
  const cpu = process.cpuUsage()
  const started = performance.now()
  await Promise.all(
    Array.from({ length: CALLERS }, async () => {
      while (performance.now() < end) {
        await dev.read(TAG)
        count++
      }
    }),
  )
  const elapsed = (performance.now() - started) / 1000
  const used = process.cpuUsage(cpu)
  await dev.close()
  return { reqPerSec: count / elapsed, cpuMicrosPerReq: (used.user + used.system) / count }
}

const server = await startServer()
const runs = { 1: [], 16: [] }
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const inFlight of [1, 16]) {
      const r = await measure(server.url, inFlight)
      runs[inFlight].push(r)
      console.log(`round ${round + 1}/${ROUNDS}  max-in-flight=${String(inFlight).padEnd(2)}  ${Math.round(r.reqPerSec).toLocaleString('en')} req/s`)
    }
  }
} finally {
  server.stop()
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const summary = Object.fromEntries(
  Object.entries(runs).map(([k, rs]) => [k, { reqPerSec: median(rs.map((r) => r.reqPerSec)), cpuMicrosPerReq: median(rs.map((r) => r.cpuMicrosPerReq)) }]),
)
const ratio = summary[16].reqPerSec / summary[1].reqPerSec
const result = {
  date: new Date().toISOString(),
  quick,
  machine: { cpu: os.cpus()[0]?.model, cores: os.cpus().length, node: process.version, platform: `${process.platform}-${process.arch}` },
  workload: { tag: TAG, secondsPerRun: SECONDS, rounds: ROUNDS, concurrentCallers: CALLERS, server: 'bifrost simulator, own process, loopback' },
  pipelined: { maxInFlight1: summary[1], maxInFlight16: summary[16], ratio },
}
mkdirSync(join(root, 'benchmark', 'results'), { recursive: true })
writeFileSync(join(root, 'benchmark', 'results', quick ? 'quick.json' : 'latest.json'), JSON.stringify(result, null, 2) + '\n')

console.log(`
| one connection, ${TAG} | req/s | client CPU µs/req |
| --- | ---: | ---: |
| max-in-flight=1 | ${Math.round(summary[1].reqPerSec).toLocaleString('en')} | ${summary[1].cpuMicrosPerReq.toFixed(1)} |
| max-in-flight=16 | ${Math.round(summary[16].reqPerSec).toLocaleString('en')} | ${summary[16].cpuMicrosPerReq.toFixed(1)} |
| ratio 16 / 1 | ${ratio.toFixed(2)}x | |

machine: ${result.machine.cpu}, ${result.machine.cores} cores, Node ${process.version}`)
