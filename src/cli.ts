/**
 * The `bifrost` command line: read, write, watch and simulate.
 * @packageDocumentation
 * @internal
 */

import { BifrostError } from './errors.js'
import { connect } from './device.js'
import { startSimulator } from './modbus.js'
import type { SimulatorOptions } from './modbus.js'
import type { TagResult, TagValue } from './plugin.js'

const USAGE = `usage:
  bifrost read <url> <tag>...              read tags once and print their values
  bifrost write <url> <tag> <value>        write a value (JSON: 21.5, true, [1,2], "text")
  bifrost watch <url> <tag>... [--interval MS] [--count N]
                                           poll tags and print one line per cycle
  bifrost simulate modbus [--host H] [--port N] [--framing tcp|rtu] [--units 1,2]
                          [--latency-ms N] [--drop-every N] [--disconnect-after N]
                          [--malformed-every N] [--invalid holding-register:100-109]
                          [--idle-timeout-ms N (0: never)] [--max-connections N]
                                           serve the Modbus simulator until killed

options:  --json  print JSON instead of text
example:  bifrost read modbus-tcp://127.0.0.1:5020 'holding-register:0:UINT[4]'`

interface Parsed {
  positional: string[]
  flags: Map<string, string[]>
}

function parseArgs(args: string[]): Parsed {
  const positional: string[] = []
  const flags = new Map<string, string[]>()
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg.startsWith('--')) {
      const [name, inline] = arg.slice(2).split('=', 2) as [string, string | undefined]
      const boolean = name === 'json' || name === 'help'
      const value = inline ?? (boolean ? 'true' : args[++i])
      if (value === undefined) throw new BifrostError('EINVAL', `--${name} needs a value`)
      flags.set(name, [...(flags.get(name) ?? []), value])
    } else positional.push(arg)
  }
  return { positional, flags }
}

function flagNumber(p: Parsed, name: string): number | undefined {
  const raw = p.flags.get(name)?.at(-1)
  if (raw === undefined) return undefined
  const n = Number(raw)
  if (!Number.isFinite(n)) throw new BifrostError('EINVAL', `--${name} must be a number, not '${raw}'`)
  return n
}

function show(value: TagValue | undefined): string {
  return JSON.stringify(value, (_, v) => (typeof v === 'bigint' ? v.toString() : v))
}

function printResults(results: TagResult[], json: boolean): boolean {
  if (json) {
    console.log(show(results.map((r) => ({ ...r, error: r.error && { code: r.error.code, message: r.error.message } })) as never))
  } else {
    for (const r of results) console.log(r.error ? `${r.tag}\tERROR ${r.error.code}: ${r.error.message}` : `${r.tag}\t${r.value === undefined ? "ok" : show(r.value)}`)
  }
  return results.every((r) => !r.error)
}

function parseValue(text: string): TagValue {
  try {
    return JSON.parse(text) as TagValue
  } catch {
    return text
  }
}

async function simulate(p: Parsed): Promise<void> {
  const [, protocol] = p.positional
  if (protocol !== 'modbus') throw new BifrostError('EINVAL', `simulate supports 'modbus', not '${protocol ?? ''}'`)
  const options: SimulatorOptions = {
    host: p.flags.get('host')?.at(-1),
    port: flagNumber(p, 'port') ?? 5020,
    framing: p.flags.get('framing')?.at(-1) as SimulatorOptions['framing'],
    units: p.flags.get('units')?.at(-1)?.split(',').map(Number),
    latencyMs: flagNumber(p, 'latency-ms'),
    dropEvery: flagNumber(p, 'drop-every'),
    disconnectAfter: flagNumber(p, 'disconnect-after'),
    malformedEvery: flagNumber(p, 'malformed-every'),
    idleTimeoutMs: flagNumber(p, 'idle-timeout-ms'),
    maxConnections: flagNumber(p, 'max-connections'),
    invalid: p.flags.get('invalid'),
  }
  const sim = await startSimulator(options)
  console.log(`modbus simulator listening on ${sim.url}`)
  // The simulator runs on the addon's threads; this timer keeps Node alive until killed.
  const keepAlive = setInterval(() => {}, 1 << 30)
  const stop = () => {
    clearInterval(keepAlive)
    sim.stop()
    process.exit(0)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
}

/** Runs the CLI with the given arguments; resolves to the process exit code. */
export async function main(args: string[]): Promise<number> {
  const p = parseArgs(args)
  const [command, url, ...rest] = p.positional
  const json = p.flags.has('json')
  if (!command || p.flags.has('help')) {
    console.log(USAGE)
    return command ? 0 : 2
  }
  if (command === 'simulate') {
    await simulate(p)
    return -1 // keep running
  }
  if (!['read', 'write', 'watch'].includes(command)) {
    console.error(`unknown command '${command}'\n${USAGE}`)
    return 2
  }
  if (!url || rest.length === 0) {
    console.error(USAGE)
    return 2
  }
  const device = await connect(url)
  try {
    if (command === 'read') return printResults(await device.readTags(rest), json) ? 0 : 1
    if (command === 'write') {
      const [tag, value] = rest
      if (tag === undefined || value === undefined) throw new BifrostError('EINVAL', 'write needs <tag> <value>')
      return printResults(await device.writeTags([[tag, parseValue(value)]]), json) ? 0 : 1
    }
    const count = flagNumber(p, 'count') ?? Infinity
    let cycles = 0
    for await (const batch of device.watch(rest, { intervalMs: flagNumber(p, 'interval') ?? 1000 })) {
      if (json) printResults(batch, true)
      else console.log(`${new Date().toISOString()}  ${batch.map((r) => `${r.tag}=${r.error ? r.error.code : show(r.value)}`).join('  ')}`)
      if (++cycles >= count) break
    }
    return 0
  } finally {
    await device.close()
  }
}
