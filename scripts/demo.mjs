// The demo: starts the Modbus, EtherNet/IP and OPC UA simulators in this process,
// connects to each over TCP, and shows a live table of tag values for a few seconds.
import { createRequire } from 'node:module'
import { build } from './build.mjs'

build()
const require = createRequire(import.meta.url)
const { connect, startEnipSimulator, startOpcuaSimulator, startSimulator } = require('../dist/index.js')

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
/** The Logix controller's tags, read each cycle beside the Modbus ones. */
const PLC_TAGS = ['Speed', 'Batch[0]{4}', 'Recipe', 'Alarms.3', 'Oven']
/** The OPC UA server's nodes: a Double, an Int32, a String, and two that change on their own. */
const UA_NODES = ['ns=1;s=V10', 'ns=1;s=V11', 'ns=1;s=V14', 'ns=1;s=Ticks', 'ns=1;s=Sine']
const CYCLES = 12
const INTERVAL_MS = 500

const sim = await startSimulator({ port: 0 })
console.log(`simulator listening on ${sim.url}`)
const dev = await connect(`${sim.url}?max-in-flight=16`)
await dev.writeTags({ 'holding-register:400:STRING(12)': 'Bifrost demo', 'holding-register:200:DINT': -100000 })
const plcSim = await startEnipSimulator({
  port: 0,
  udts: ['OVEN=Temp:REAL,Door:BOOL,Loads:DINT'],
  tags: ['Speed=REAL', 'Batch=DINT[100]', 'Recipe=STRING', 'Alarms=DINT', 'Oven=OVEN'],
})
console.log(`simulator listening on ${plcSim.url}`)
const plc = await connect(`${plcSim.url}?path=1,0`)
await plc.write('Recipe', 'Bifrost PLC')
const uaSim = await startOpcuaSimulator({ port: 0 })
console.log(`simulator listening on ${uaSim.url}`)
const ua = await connect(uaSim.url)

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
  await plc.writeTags({ Speed: 1500 + 25 * Math.cos(cycle / 3), 'Alarms.3': cycle % 4 === 0, 'Oven.Temp': 180 + cycle, 'Oven.Loads': cycle })
  const fromPlc = await plc.readTags(PLC_TAGS)
  await ua.write('ns=1;s=V11', cycle)
  const fromUa = await ua.readTags(UA_NODES)
  const lines = [`cycle ${cycle}/${CYCLES}  ${new Date(batch[0].timestamp).toISOString()}`, '']
  for (const [device, results] of [['modbus', batch], ['eip', fromPlc], ['opc.tcp', fromUa]]) {
    for (const r of results) {
      const value = r.error ? `ERROR ${r.error.code}` : JSON.stringify(r.value, (_, v) => (typeof v === 'number' && !Number.isInteger(v) ? Number(v.toFixed(3)) : v))
      lines.push(`  ${device.padEnd(7)} ${r.tag.padEnd(46)} ${value.padEnd(22)} ${r.quality}`)
    }
  }
  if (tty && cycle > 1) process.stdout.write(`\x1b[${lines.length}A`)
  console.log(lines.map((l) => l + (tty ? '\x1b[K' : '')).join('\n'))
  if (cycle >= CYCLES) break
}

await dev.close()
await plc.close()
await ua.close()
sim.stop()
plcSim.stop()
uaSim.stop()
console.log(`\ndone: the simulators served ${sim.requests} Modbus, ${plcSim.requests} EtherNet/IP and ${uaSim.requests} OPC UA requests`)
