// The project against the pure-JS Modbus and EtherNet/IP clients, side by side, in one run.
// Each client runs each workload in its own child process (benchmark/child.mjs)
// against one simulator process; clients alternate within every round.
//   npm run bench                    all six workloads, 3 rounds (about 4 minutes)
//   npm run bench -- --quick         a smoke run: small sizes, figures not comparable
//   npm run bench -- --only seq,decode
// A full run writes benchmark/results/latest.{json,md}, chart.svg and the README's
// Performance table; a quick run writes quick.* beside them (not committed).
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import os from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { createServer } from 'node:net'
import { build } from '../scripts/build.mjs'
import { ENIP, OPCUA, SETTINGS, POLL } from './workloads.mjs'
import { buildOpen62541 } from '../scripts/open62541.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const results = join(root, 'benchmark', 'results')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const only = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',') : null
const settings = quick ? SETTINGS.quick : SETTINGS.full
const CLIENTS = ['bifrost', 'modbus-serial', 'jsmodbus', 'st-ethernet-ip', 'node-opcua', 'open62541']
const OURS = CLIENTS[0]
const WORKLOADS = ['seq', 'pipelined', 'poll-1k', 'poll-1k-1hz', 'gateway', 'decode', 'decode-many', 'startup', 'scale', 'enip', 'opcua-read', 'opcua-read-open62541', 'opcua-read-secure', 'opcua-startup', 'opcua-decode', 'opcua-subscribe-1k', 'opcua-subscribe-10k']
/** Who runs each workload: the Modbus clients, except for EtherNet/IP and OPC UA. */
const clientsOf = (workload) =>
  workload === 'enip' ? ['bifrost', 'st-ethernet-ip'] : workload.startsWith('opcua') ? ['bifrost', 'node-opcua'] : ['bifrost', 'modbus-serial', 'jsmodbus']
/** Native clients shown beside a workload's figures, never in its ratios (they are not pure-JS peers): open62541's C client. */
const anchorsOf = (workload) => (['opcua-read', 'opcua-read-open62541'].includes(workload) ? ['open62541'] : [])
const CHILD_TIMEOUT_MS = 5 * 60_000

/** The figures reported, and which direction is better. */
const METRICS = [
  { workload: 'seq', key: 'reqPerSec', label: 'seq: requests/s', better: 'higher', digits: 0 },
  { workload: 'seq', key: 'cpuMicrosPerReq', label: 'seq: client CPU µs per request', better: 'lower', digits: 1 },
  { workload: 'pipelined', key: 'reqPerSec', label: 'pipelined: requests/s', better: 'higher', digits: 0 },
  { workload: 'pipelined', key: 'cpuMicrosPerReq', label: 'pipelined: client CPU µs per request', better: 'lower', digits: 1 },
  { workload: 'poll-1k', key: 'tagsPerSec', label: 'poll-1k: tags/s', better: 'higher', digits: 0 },
  { workload: 'poll-1k', key: 'cpuSecPerMillionTags', label: 'poll-1k: CPU-s per million tags', better: 'lower', digits: 3 },
  { workload: 'poll-1k', key: 'peakRssMb', label: 'poll-1k: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'poll-1k-1hz', key: 'tagsPerSec', label: 'poll-1k at 1 Hz: tags/s', better: 'higher', digits: 0 },
  { workload: 'poll-1k-1hz', key: 'cpuSecPerMillionTags', label: 'poll-1k at 1 Hz: CPU-s per million tags', better: 'lower', digits: 3 },
  { workload: 'poll-1k-1hz', key: 'peakRssMb', label: 'poll-1k at 1 Hz: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'gateway', key: 'tagsPerSec', label: 'gateway at 1 Hz: tags/s', better: 'higher', digits: 0 },
  { workload: 'gateway', key: 'cpuSecPerMillionTags', label: 'gateway at 1 Hz: CPU-s per million tags', better: 'lower', digits: 3 },
  { workload: 'gateway', key: 'peakRssMb', label: 'gateway at 1 Hz: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'decode', key: 'tagsPerSec', label: 'decode: tags/s', better: 'higher', digits: 0 },
  { workload: 'decode-many', key: 'tagsPerSec', label: 'decode-many: tags/s', better: 'higher', digits: 0 },
  { workload: 'startup', key: 'ms', label: 'startup: ms to first value', better: 'lower', digits: 1 },
  { workload: 'startup', key: 'rssMb', label: 'startup: RSS MB after first read', better: 'lower', digits: 0 },
  { workload: 'scale', key: 'connectSeconds', label: 'scale: seconds to connect all', better: 'lower', digits: 2 },
  { workload: 'scale', key: 'peakRssMb', label: 'scale: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'enip', key: 'tagsPerSec', label: 'enip: tags/s', better: 'higher', digits: 0 },
  { workload: 'enip', key: 'cpuSecPerMillionTags', label: 'enip: CPU-s per million tags', better: 'lower', digits: 3 },
  { workload: 'enip', key: 'peakRssMb', label: 'enip: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-read', key: 'valuesPerSec', label: 'opcua-read: values/s', better: 'higher', digits: 0 },
  { workload: 'opcua-read', key: 'cpuMicrosPerValue', label: 'opcua-read: client CPU µs per value', better: 'lower', digits: 3 },
  { workload: 'opcua-read', key: 'peakRssMb', label: 'opcua-read: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-read-open62541', key: 'valuesPerSec', label: 'opcua-read from open62541: values/s', better: 'higher', digits: 0 },
  { workload: 'opcua-read-open62541', key: 'cpuMicrosPerValue', label: 'opcua-read from open62541: client CPU µs per value', better: 'lower', digits: 3 },
  { workload: 'opcua-read-open62541', key: 'peakRssMb', label: 'opcua-read from open62541: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-read-secure', key: 'valuesPerSec', label: 'opcua-read Basic256Sha256 SignAndEncrypt (open62541): values/s', better: 'higher', digits: 0 },
  { workload: 'opcua-read-secure', key: 'cpuMicrosPerValue', label: 'opcua-read Basic256Sha256 SignAndEncrypt (open62541): client CPU µs per value', better: 'lower', digits: 3 },
  { workload: 'opcua-read-secure', key: 'peakRssMb', label: 'opcua-read Basic256Sha256 SignAndEncrypt (open62541): peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-subscribe-1k', key: 'notificationsPerSec', label: 'opcua-subscribe 1k items: notifications/s', better: 'higher', digits: 0 },
  { workload: 'opcua-subscribe-1k', key: 'cpuPercent', label: 'opcua-subscribe 1k items: client CPU %', better: 'lower', digits: 2 },
  { workload: 'opcua-subscribe-1k', key: 'peakRssMb', label: 'opcua-subscribe 1k items: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-subscribe-10k', key: 'notificationsPerSec', label: 'opcua-subscribe 10k items: notifications/s', better: 'higher', digits: 0 },
  { workload: 'opcua-subscribe-10k', key: 'cpuPercent', label: 'opcua-subscribe 10k items: client CPU %', better: 'lower', digits: 2 },
  { workload: 'opcua-subscribe-10k', key: 'peakRssMb', label: 'opcua-subscribe 10k items: peak RSS MB', better: 'lower', digits: 0 },
  { workload: 'opcua-decode', key: 'valuesPerSec', label: 'opcua-decode (a 2,000-value ReadResponse): values/s', better: 'higher', digits: 0 },
  { workload: 'opcua-decode', key: 'cpuMicrosPerValue', label: 'opcua-decode: CPU µs per value', better: 'lower', digits: 4 },
  { workload: 'opcua-startup', key: 'ms', label: 'opcua-startup: ms from require to first value', better: 'lower', digits: 1 },
  { workload: 'opcua-startup', key: 'requireMs', label: 'opcua-startup: ms to load (require)', better: 'lower', digits: 1 },
  { workload: 'opcua-startup', key: 'connectMs', label: 'opcua-startup: ms to connect (secure channel and session)', better: 'lower', digits: 1 },
  { workload: 'opcua-startup', key: 'rssMb', label: 'opcua-startup: RSS MB after first value', better: 'lower', digits: 0 },
]

/** Runs `args` with the soft file-descriptor limit raised to the hard one (10,000 sockets need it). */
function spawnRaised(args, options) {
  return spawn('/bin/sh', ['-c', 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"', 'sh', ...args], options)
}

/** Starts open62541's server (built by scripts/open62541.mjs) with the benchmark's variables, on a free loopback port. */
async function startOpen62541(variables, ...extra) {
  const bin = buildOpen62541()
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
  const child = spawn(join(bin, 'open62541_server'), [String(port), String(variables), ...extra], { stdio: ['ignore', 'pipe', 'ignore'] })
  await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (c) => {
      out += c
      if (out.includes(`listening ${port}`)) resolve()
    })
    child.on('exit', (code) => reject(new Error(`open62541 exited ${code}`)))
  })
  child.stdout.resume()
  return { url: `opc.tcp://127.0.0.1:${port}`, stop: () => child.kill('SIGTERM') }
}

/** Starts a simulator process (a worker per core, so it holds up under every client). */
async function startServer(protocol, extra = []) {
  const child = spawnRaised([process.execPath, join(root, 'bin', 'bifrost.js'), 'simulate', protocol, '--port', '0', ...extra], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, BIFROST_WORKER_THREADS: String(os.availableParallelism()) },
  })
  const url = await new Promise((resolve, reject) => {
    let out = ''
    child.stdout.on('data', (c) => {
      out += c
      const m = /listening on (\S+)/.exec(out)
      if (m) resolve(m[1])
    })
    child.on('exit', (code) => reject(new Error(`simulator exited ${code}`)))
  })
  const { hostname, port } = new URL(url)
  return { url, host: hostname, port: Number(port), stop: () => child.kill('SIGTERM') }
}

/** node-opcua keeps its PKI (a certificate it makes on first use) under HOME: one of its own, kept across its runs. */
const NODE_OPCUA_HOME = join(os.tmpdir(), 'bifrost-bench-node-opcua-home')

/** The native anchor: open62541's C client reads the same nodes, timing itself (its JSON line is the one starting with '{'). */
function runAnchor(workload, servers) {
  const { url, ns } = workload === 'opcua-read' ? servers.opcua : servers.open62541
  const bench = join(buildOpen62541(), 'open62541_read_bench')
  const child = spawn(bench, [url, String(ns), String(OPCUA.count), String(settings.opcuaSeconds)], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  let err = ''
  child.stdout.on('data', (c) => (out += c))
  child.stderr.on('data', (c) => (err += c))
  return new Promise((resolve) => {
    child.on('close', (code) => {
      const line = out.split('\n').find((l) => l.startsWith('{'))
      if (code === 0 && line) resolve({ client: 'open62541', version: '1.5.10 (C)', workload, ...JSON.parse(line) })
      else resolve({ client: 'open62541', workload, error: (err.trim() || `exited ${code}`).split('\n').slice(-8).join('\n') })
    })
  })
}

function runChild(client, workload, servers) {
  if (client === 'open62541') return runAnchor(workload, servers)
  const childSettings = JSON.stringify({ ...settings, ...servers })
  const child = spawnRaised([process.execPath, join(root, 'benchmark', 'child.mjs'), client, workload, childSettings], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: client === 'node-opcua' ? { ...process.env, HOME: NODE_OPCUA_HOME } : process.env,
  })
  let out = ''
  let err = ''
  child.stdout.on('data', (c) => (out += c))
  child.stderr.on('data', (c) => (err += c))
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS)
  return new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      const line = out.trim().split('\n').at(-1)
      if (code === 0 && line) resolve(JSON.parse(line))
      else resolve({ client, workload, error: (err.trim() || `exited ${code ?? signal}`).split('\n').slice(-8).join('\n') })
    })
  })
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}
const format = (value, digits) =>
  value === undefined ? 'n/a' : value.toLocaleString('en', { minimumFractionDigits: digits, maximumFractionDigits: digits })

/** How many times better the project is than the best peer (above 1: better). */
function advantage(metric, figures) {
  const ours = figures[OURS]
  const peers = clientsOf(metric.workload).slice(1).map((c) => figures[c]).filter((v) => v !== undefined)
  if (ours === undefined || peers.length === 0) return undefined
  if (metric.better === 'higher') return ours / Math.max(...peers)
  return Math.min(...peers) / ours
}

function barChart(rows, title) {
  const width = 860
  const labelWidth = 330
  const barHeight = 22
  const top = 48
  const plotWidth = width - labelWidth - 90
  const ratios = rows.map((r) => r.ratio)
  const lo = Math.min(0.5, ...ratios)
  const hi = Math.max(10, ...ratios)
  const x = (v) => labelWidth + ((Math.log10(v) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotWidth
  const height = top + rows.length * (barHeight + 8) + 52
  const esc = (s) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;')
  const ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500].filter((t) => t >= lo && t <= hi)
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="13">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="24" text-anchor="middle" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="${width / 2}" y="${height - 8}" text-anchor="middle" font-size="11" fill="#555">right of 1×: the project is better by that factor; left: the best peer is (log scale)</text>`,
  ]
  for (const t of ticks) {
    parts.push(`<line x1="${x(t)}" y1="${top - 6}" x2="${x(t)}" y2="${height - 42}" stroke="${t === 1 ? '#333' : '#ddd'}"/>`)
    parts.push(`<text x="${x(t)}" y="${height - 26}" text-anchor="middle" fill="#555">${t}×</text>`)
  }
  rows.forEach((r, i) => {
    const y = top + i * (barHeight + 8)
    const from = Math.min(x(1), x(r.ratio))
    const to = Math.max(x(1), x(r.ratio))
    parts.push(`<text x="${labelWidth - 8}" y="${y + barHeight * 0.7}" text-anchor="end">${esc(r.label)}</text>`)
    parts.push(`<rect x="${from}" y="${y}" width="${Math.max(1, to - from)}" height="${barHeight}" fill="${r.ratio >= 1 ? '#2a9d60' : '#e07a2f'}"/>`)
    parts.push(`<text x="${to + 6}" y="${y + barHeight * 0.7}">${r.ratio.toFixed(r.ratio < 10 ? 2 : 1)}×</text>`)
  })
  parts.push('</svg>')
  return parts.join('\n') + '\n'
}

/**
 * The engine issues' goals, as ratios against the best pure-JS peer (above 1× is
 * better). Part 2 (polling in Rust): gateway CPU per tag, poll-1k tags per
 * CPU-second and peak RSS, decode-many tags/s. Part 1: seq and pipelined client
 * CPU per request, scale's peak RSS, startup. And no other figure below 0.95×,
 * except the fixed-rate tags/s (equal by construction) and the time to connect
 * (kernel time).
 */
function goals(rows, fullSize) {
  const ratio = (label) => rows.find((r) => r.label === label)?.ratio
  const goal = (name, label, at, sized = false) => {
    const value = ratio(label)
    const met = sized && !fullSize ? undefined : value >= at
    return { goal: `${name}: at least ${at}× the best peer`, value, met, shown: `${value?.toFixed(2)}×` }
  }
  /** Our figure against a native anchor's: at most `times` its (lower is better). */
  const anchored = (name, label, anchor, times) => {
    const figures = rows.find((r) => r.label === label)?.figures
    const value = figures && figures[OURS] / figures[anchor]
    return { goal: name, value, met: value <= times, shown: `${value?.toFixed(2)}× the C client's` }
  }
  /** A figure of ours that must stay under a bound, whatever the peers do. */
  const under = (name, label, bound, unit) => {
    const value = rows.find((r) => r.label === label)?.figures[OURS]
    return { goal: `${name}: under ${bound} ${unit}`, value, met: value < bound, shown: `${value?.toFixed(1)} ${unit}` }
  }
  const exempt = new Set(['poll-1k at 1 Hz: tags/s', 'gateway at 1 Hz: tags/s', 'scale: seconds to connect all'])
  const others = rows.filter((r) => !exempt.has(r.label))
  const lowest = others.reduce((low, r) => (low === undefined || r.ratio < low.ratio ? r : low), undefined)
  // Sizes matter for gateway, poll-1k and scale: a quick run only shows their figures.
  return [
    goal('gateway at 1 Hz: CPU per tag', 'gateway at 1 Hz: CPU-s per million tags', 3, true),
    goal('poll-1k: tags per CPU-second', 'poll-1k: CPU-s per million tags', 4, true),
    goal('poll-1k: peak RSS', 'poll-1k: peak RSS MB', 2, true),
    goal('decode-many: tags/s', 'decode-many: tags/s', 10),
    goal('seq: client CPU per request', 'seq: client CPU µs per request', 2),
    goal('pipelined: client CPU per request', 'pipelined: client CPU µs per request', 1.25),
    goal('scale: peak RSS of 10,000 idle connections', 'scale: peak RSS MB', 1.5, true),
    goal('startup: time to the first value', 'startup: ms to first value', 5),
    goal('enip: tags per client CPU-second', 'enip: CPU-s per million tags', 10),
    goal('enip: peak RSS (at most half the peer\'s)', 'enip: peak RSS MB', 2),
    goal('opcua-read: client CPU per value (at most 1/15 of the peer\'s)', 'opcua-read: client CPU µs per value', 15),
    goal('opcua-read from open62541: client CPU per value (at most 1/15 of the peer\'s)', 'opcua-read from open62541: client CPU µs per value', 15),
    anchored('opcua-read from open62541: client CPU per value within 2× of the open62541 C client', 'opcua-read from open62541: client CPU µs per value', 'open62541', 2),
    goal('opcua-subscribe 10k items: client CPU (at most a tenth of the peer\'s)', 'opcua-subscribe 10k items: client CPU %', 10),
    goal('opcua-subscribe 10k items: peak RSS (at most a third of the peer\'s)', 'opcua-subscribe 10k items: peak RSS MB', 3),
    under('opcua-startup: require to the first value', 'opcua-startup: ms from require to first value', 50, 'ms'),
    lowest && { goal: 'no other figure below 0.95×', value: lowest.ratio, met: lowest.ratio >= 0.95, shown: `lowest ${lowest.ratio.toFixed(2)}× (${lowest.label})` },
  ].filter((g) => g && g.value !== undefined && !Number.isNaN(g.value))
}

// ---- the run ----

build()
mkdirSync(results, { recursive: true })
const workloads = WORKLOADS.filter((w) => !only || only.includes(w))
const server = await startServer('modbus')
const enipServer = workloads.includes('enip') ? await startServer('enip', ENIP.specs.flatMap((spec) => ['--tag', spec])) : undefined
const opcuaServer = workloads.some((w) => w.startsWith('opcua')) ? await startServer('opcua', ['--variables', String(OPCUA.variables)]) : undefined
const open62541 = workloads.includes('opcua-read-open62541') ? await startOpen62541(OPCUA.variables) : undefined
const open62541Secure = workloads.includes('opcua-read-secure') ? await startOpen62541(OPCUA.variables, 'secure') : undefined
const open62541Changing = workloads.some((w) => w.startsWith('opcua-subscribe')) ? await startOpen62541(OPCUA.changingVariables, 'changing') : undefined
const require = createRequire(import.meta.url)
const { connect } = require('../dist/index.js')
/** Where an OPC UA server keeps the benchmark's variables: its namespace index of urn:bifrost:simulator. */
async function opcuaTarget(url) {
  if (!url) return undefined
  const probe = await connect(url)
  const ns = (await probe.read('i=2255')).indexOf('urn:bifrost:simulator')
  await probe.close()
  return { url, ns }
}
const servers = {
  host: server.host,
  port: server.port,
  enipHost: enipServer?.host,
  enipPort: enipServer?.port,
  opcua: await opcuaTarget(opcuaServer?.url),
  open62541: await opcuaTarget(open62541?.url),
  open62541Changing: await opcuaTarget(open62541Changing?.url),
  open62541Secure: await opcuaTarget(open62541Secure?.url),
}
if (opcuaServer) {
  // node-opcua makes its certificate on first use (seconds): once, before anything is measured.
  mkdirSync(NODE_OPCUA_HOME, { recursive: true })
  const warm = await runChild('node-opcua', 'opcua-startup', servers)
  if (warm.error) console.log(`node-opcua warm-up FAILED: ${warm.error}`)
}
const setup = await connect(server.url)
for (const [tag, values] of POLL.setup) await setup.write(tag, values)
await setup.close()
if (enipServer) {
  const controller = await connect(enipServer.url)
  const written = await controller.writeTags(ENIP.tags.map((tag, i) => [tag, ENIP.values[i]]))
  if (written.some((r) => r.error)) throw written.find((r) => r.error).error
  await controller.close()
}

const plan = []
for (let round = 0; round < settings.rounds; round++) {
  for (const workload of workloads) {
    const repeats = workload === 'startup' ? settings.startupRuns : workload === 'opcua-startup' ? settings.opcuaStartupRuns : 1
    for (let r = 0; r < repeats; r++) {
      const clients = [...clientsOf(workload), ...anchorsOf(workload)]
      const shift = (round + r) % clients.length // alternate who goes first
      for (const client of [...clients.slice(shift), ...clients.slice(0, shift)]) plan.push({ round, workload, client })
    }
  }
}

const runs = []
const failures = []
const started = Date.now()
try {
  for (const [i, step] of plan.entries()) {
    const result = await runChild(step.client, step.workload, servers)
    const tag = `[${String(i + 1).padStart(String(plan.length).length)}/${plan.length}] round ${step.round + 1} ${step.workload.padEnd(11)} ${step.client.padEnd(13)}`
    if (result.error) {
      failures.push(result)
      console.log(`${tag} FAILED: ${result.error}`)
      continue
    }
    runs.push({ round: step.round, ...result })
    const shown = METRICS.filter((m) => m.workload === step.workload)
      .map((m) => `${format(result[m.key], m.digits)} ${m.label.split(': ')[1]}`)
      .join(', ')
    console.log(`${tag} ${shown}`)
  }
} finally {
  server.stop()
  enipServer?.stop()
  opcuaServer?.stop()
  open62541?.stop()
  open62541Changing?.stop()
  open62541Secure?.stop()
}

const versions = Object.fromEntries(runs.map((r) => [r.client, r.version]))
const summary = {}
for (const workload of workloads) {
  summary[workload] = {}
  for (const client of CLIENTS) {
    const mine = runs.filter((r) => r.workload === workload && r.client === client)
    if (mine.length === 0) continue
    const keys = Object.keys(mine[0]).filter((k) => typeof mine[0][k] === 'number' && k !== 'round')
    summary[workload][client] = Object.fromEntries(keys.map((k) => [k, median(mine.map((r) => r[k]))]))
  }
}
const rows = METRICS.filter((m) => summary[m.workload])
  .map((m) => {
    const figures = Object.fromEntries(CLIENTS.map((c) => [c, summary[m.workload][c]?.[m.key]]))
    return { ...m, figures, ratio: advantage(m, figures) }
  })
  .filter((r) => r.ratio !== undefined)
const fullSize = !quick
const goalRows = goals(rows, fullSize)
const cpus = os.cpus()
const machine = {
  cpu: cpus[0]?.model ?? 'unknown',
  cores: cpus.length,
  memoryGb: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  os: `${os.type()} ${os.release()} ${process.arch}`,
}
const name = (c) => `${c} ${versions[c] ?? ''}`.trim()

const table = [
  `| Workload: figure | ${CLIENTS.map(name).join(' | ')} | ${OURS} vs best peer |`,
  `| --- | ${CLIENTS.map(() => '---:').join(' | ')} | ---: |`,
  ...rows.map((r) => `| ${r.label} | ${CLIENTS.map((c) => format(r.figures[c], r.digits)).join(' | ')} | **${r.ratio.toFixed(2)}×** |`),
].join('\n')
const goalTable = [
  '| Goal | Measured | Met |',
  '| --- | ---: | :---: |',
  ...goalRows.map((g) => `| ${g.goal} | ${g.shown} | ${g.met === undefined ? 'n/a' : g.met ? 'yes' : 'no'} |`),
].join('\n')
const machineLine = `${machine.cpu}, ${machine.cores} cores, ${machine.memoryGb} GB, Node ${machine.node}, ${machine.os}`
const sizes = `${settings.rounds} rounds (median), ${settings.pollDevices} devices for poll-1k, ${settings.decodeFrames.toLocaleString('en')} frames for decode, ${settings.scaleConnections.toLocaleString('en')} connections for scale`
const markdown = [
  `Measured ${new Date().toISOString().slice(0, 10)} on ${machineLine}; ${sizes}.`,
  'Ratios: how many times better the project is than the best pure-JS peer on that figure (above 1× is better).',
  '',
  table,
  '',
  goalTable,
  '',
].join('\n')

const prefix = quick ? 'quick' : 'latest'
writeFileSync(join(results, `${prefix}.json`), JSON.stringify({ date: new Date().toISOString(), quick, machine, settings, versions, summary, ratios: Object.fromEntries(rows.map((r) => [r.label, r.ratio])), goals: goalRows, failures, runs }, null, 2) + '\n')
writeFileSync(join(results, `${prefix}.md`), markdown)
writeFileSync(join(results, quick ? 'quick.svg' : 'chart.svg'), barChart(rows, `@bifrost/protocols vs the best pure-JS client (${machine.cores} cores, Node ${machine.node})`))

if (!quick && !only) {
  // The README's Performance table is this run's table, between its markers.
  const readme = join(root, 'README.md')
  const text = readFileSync(readme, 'utf8')
  const block = /(<!-- bench:start -->\n)[\s\S]*?(<!-- bench:end -->)/
  if (block.test(text)) writeFileSync(readme, text.replace(block, `$1${markdown}$2`))
}

console.log(`\n${markdown}\nmachine: ${machineLine}\nwrote benchmark/results/${prefix}.{json,md} in ${((Date.now() - started) / 1000).toFixed(0)} s`)
if (failures.length) {
  console.error(`${failures.length} run(s) failed: ${failures.map((f) => `${f.client}/${f.workload}`).join(', ')}`)
  process.exit(1)
}
