// The demo: starts the Modbus simulator in this process, connects to it over
// TCP, and shows a live table of tag values for a few seconds.
import { createRequire } from 'node:module'
import { build } from './build.mjs'

build()
const require = createRequire(import.meta.url)
const { connect, startSimulator } = require('../dist/index.js')

const TAGS = [
  'holding-register:0:UINT',
  'holding-register:10:INT[4]',
  'holding-register:100:REAL{byte-order: CDAB}',
  'holding-register:200:DINT',
  'input-register:7:UINT',
  'coil:5',
  'discrete-input:3',
  'holding-register:300.2',
  'holding-register:400:STRING(12)',
]
const CYCLES = 12
const INTERVAL_MS = 500

const sim = await startSimulator({ port: 0 })
console.log(`simulator listening on ${sim.url}`)
const dev = await connect(`${sim.url}?max-in-flight=16`)
await dev.writeTags({ 'holding-register:400:STRING(12)': 'Bifrost demo', 'holding-register:200:DINT': -100000 })

const tty = process.stdout.isTTY
let cycle = 0
for await (const batch of dev.watch(TAGS, { intervalMs: INTERVAL_MS })) {
  cycle++
  // Something for the table to show: a process value that moves each cycle.
  await dev.writeTags({
    'holding-register:100:REAL{byte-order: CDAB}': 20 + 5 * Math.sin(cycle / 2),
    'holding-register:0:UINT': cycle,
    'coil:5': cycle % 2 === 0,
    'holding-register:300.2': cycle % 3 === 0,
  })
  const lines = [`cycle ${cycle}/${CYCLES}  ${new Date(batch[0].timestamp).toISOString()}`, '']
  for (const r of batch) {
    const value = r.error ? `ERROR ${r.error.code}` : JSON.stringify(r.value, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v))
    lines.push(`  ${r.tag.padEnd(46)} ${value.padEnd(22)} ${r.quality}`)
  }
  if (tty && cycle > 1) process.stdout.write(`\x1b[${lines.length}A`)
  console.log(lines.map((l) => l + (tty ? '\x1b[K' : '')).join('\n'))
  if (cycle >= CYCLES) break
}

await dev.close()
sim.stop()
console.log(`\ndone: the simulator served ${sim.requests} requests`)
