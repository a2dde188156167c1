/**
 * The `bifrost` command line: read, write, watch and simulate.
 * @packageDocumentation
 * @internal
 */

import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { BifrostError } from './errors.js'
import { MAX_MS, connect } from './device.js'
import type { Device } from './device.js'
import { startEnipSimulator } from './enip.js'
import { startOpcuaSimulator } from './opcua.js'
import { startSimulator } from './modbus.js'
import type { ServerOptions, Simulator } from './simulator.js'
import type { ConnectOptions, TagResult, TagValue } from './plugin.js'

/** Exit statuses; HELP and the README's "Command line" section list them. */
const EXIT = { ok: 0, tagFailed: 1, usage: 2, unreachable: 3 } as const

const EXIT_HELP = `exit status:
  0  success
  1  a tag failed (read, write, watch: in any poll), or a call failed after connecting
  2  usage error: bad arguments, an unknown command or flag, a bad flag value, URL or option
  3  could not connect to the device (connect failed), or the simulator could not listen`

/** A flag a command takes. With `value` (its placeholder, e.g. `MS`) it takes a value; without, it is a switch. */
interface Flag {
  value?: string
  help: string
  /** The flag may be given more than once; every value is kept. */
  repeats?: boolean
}

interface Parsed {
  command: string
  positional: string[]
  flags: Map<string, string[]>
}

interface Command {
  /** The positional arguments, as the usage line shows them. */
  args: string
  /** One line for the command list. */
  summary: string
  /** What the command does and prints, for its own help. */
  about: string
  flags: Record<string, Flag>
  run(p: Parsed): Promise<number>
}

const HELP_FLAG: Flag = { help: 'show this help' }
const JSON_FLAG: Flag = {
  help: 'print JSON instead of text. LINT and ULINT values are bare JSON numbers with every digit\n(the CLI writes the JSON text itself): parse them with a bigint-aware JSON parser',
}
const TIMEOUT_FLAG: Flag = {
  value: 'MS',
  help: `milliseconds each call may take, queueing included (1 to ${MAX_MS};\ndefault: the URL's request-timeout, else 1000)`,
}

/** The EtherNet/IP simulator's tags when no --tag is given. */
const DEFAULT_ENIP_TAGS = ['SCADA=INT[1000]', 'Counter=DINT', 'Temp=REAL', 'Big=DINT[2000]', 'Name=STRING', 'Flags=DINT', 'Recipe=RECIPE[3]']
/** The EtherNet/IP simulator's structure types when no --udt is given. */
const DEFAULT_ENIP_UDTS = ['RECIPE=Temp:REAL,Speed:DINT,Steps:INT[4],Active:BOOL,Name:STRING']

const COMMANDS: Record<string, Command> = {
  read: {
    args: '<url> <tag>...',
    summary: 'read tags once and print their values',
    about: 'Reads the tags in one batch and prints one line per tag: the tag, a tab, then its value\n(64-bit integers with every digit, strings quoted) or ERROR <code>: <message>.',
    flags: { json: JSON_FLAG, timeout: TIMEOUT_FLAG },
    run: read,
  },
  write: {
    args: '<url> <tag> <value>',
    summary: 'write one value',
    about:
      'Writes the value and prints the tag, a tab, then ok or ERROR <code>: <message>.\n' +
      'The value is JSON (21.5, true, -3, [1,2], "text"); anything else is written as text.\n' +
      'Whole numbers beyond 2^53 (LINT, ULINT) are written exactly. Put -- before a value that starts with --.',
    flags: { json: JSON_FLAG, timeout: TIMEOUT_FLAG },
    run: write,
  },
  watch: {
    args: '<url> <tag>...',
    summary: 'poll tags and print one line per poll',
    about:
      'Polls the tags and prints one line per poll: the time, then tag=value (or tag=<error code>).\n' +
      'A failed poll is printed and polling goes on. It stops after --count polls, or on SIGINT or\n' +
      'SIGTERM, and exits 1 if any tag failed in any poll, else 0.',
    flags: {
      interval: { value: 'MS', help: `milliseconds from the start of one poll to the next (1 to ${MAX_MS}; default 1000)` },
      count: { value: 'N', help: 'stop after N polls (a whole number from 1; default: until interrupted)' },
      json: JSON_FLAG,
      timeout: TIMEOUT_FLAG,
    },
    run: watch,
  },
  simulate: {
    args: 'modbus|enip|opcua',
    summary: 'serve the Modbus, EtherNet/IP or OPC UA simulator until killed',
    about:
      'Serves a simulator, prints "<protocol> simulator listening on <url>", and runs until killed. ' +
      'enip serves a Logix-like controller (TCP and UDP ListIdentity on one port) with the --tag tags, ' +
      `or by default ${DEFAULT_ENIP_TAGS.join(' ')}, with the --udt structure types, or by default ${DEFAULT_ENIP_UDTS.join(' ')}. ` +
      'opcua serves an OPC UA server (security None, Anonymous) with --variables variables ns=1;s=V0 and on.',
    flags: {
      host: { value: 'H', help: 'address to listen on (default 127.0.0.1)' },
      port: { value: 'N', help: 'port to listen on; 0 picks a free one (default 5020 for modbus, 44818 for enip, 4840 for opcua)' },
      framing: { value: 'tcp|rtu', help: 'modbus: MBAP (tcp, the default) or RTU frames over TCP (rtu)' },
      units: { value: '1,2', help: 'modbus: unit ids that answer (default 1 to 16)' },
      tag: { value: 'NAME=TYPE[N]', help: 'enip: a controller tag, e.g. SCADA=INT[1000] or Temp=REAL (repeatable)', repeats: true },
      udt: { value: 'NAME=M:TYPE,...', help: 'enip: a structure type, e.g. RECIPE=Temp:REAL,Steps:INT[4] (repeatable)', repeats: true },
      variables: { value: 'N', help: 'opcua: variables in the Simulation folder (default 1000)' },
      'max-nodes-per-read': { value: 'N', help: 'opcua: nodes one Read or Write may name (default 10000; 0: no limit)' },
      changing: { help: 'opcua: every Double variable changes each second' },
      'latency-ms': { value: 'N', help: 'milliseconds added before each batch of replies' },
      'drop-every': { value: 'N', help: 'every Nth request gets no reply' },
      'disconnect-after': { value: 'N', help: 'close each connection after N requests' },
      'malformed-every': { value: 'N', help: 'every Nth reply is malformed' },
      invalid: { value: 'RANGE', help: 'modbus: addresses that answer exception 2, e.g. holding-register:100-109 (repeatable)', repeats: true },
      'idle-timeout-ms': { value: 'N', help: 'close a connection idle this long; 0: never (default 300000)' },
      'max-connections': { value: 'N', help: 'connections served at once (default 20000)' },
    },
    run: simulate,
  },
}

const HELP = `usage: bifrost <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${`${name} ${c.args}`.padEnd(34)} ${c.summary}`)
  .join('\n')}
  ${'help [command]'.padEnd(34)} show the help of a command

options:
  -h, --help      show this help (after a command: that command's help)
  -V, --version   print the version

${EXIT_HELP}

example:  bifrost read modbus-tcp://127.0.0.1:5020 'holding-register:0:UINT[4]'`

function flagLabel(name: string, flag: Flag): string {
  return name === 'help' ? '-h, --help' : `--${name}${flag.value ? ` ${flag.value}` : ''}`
}

function flagsOf(command: Command): Record<string, Flag> {
  return { ...command.flags, help: HELP_FLAG }
}

function usageLine(name: string): string {
  const command = COMMANDS[name]!
  const flags = Object.entries(command.flags).map(([flag, spec]) => `[${flagLabel(flag, spec)}]`)
  return `usage: bifrost ${name} ${command.args} ${flags.join(' ')}`
}

function commandHelp(name: string): string {
  const flags = Object.entries(flagsOf(COMMANDS[name]!))
  const width = Math.max(...flags.map(([flag, spec]) => flagLabel(flag, spec).length)) + 2
  const indent = '\n' + ' '.repeat(width + 2)
  const options = flags.map(([flag, spec]) => `  ${flagLabel(flag, spec).padEnd(width)}${spec.help.replaceAll('\n', indent)}`)
  const exit = name === 'simulate' ? '' : `\n\n${EXIT_HELP}`
  return `${usageLine(name)}\n\n${COMMANDS[name]!.about}\n\noptions:\n${options.join('\n')}${exit}`
}

/** An error that ends the run with `status`; its message is printed as it stands. */
class CliError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

/** Bad command-line input: the problem, the usage line, and where the full help is. */
function usageError(message: string, command?: string): CliError {
  const usage = command ? usageLine(command) : 'usage: bifrost <command> [options]'
  return new CliError(EXIT.usage, `error: ${message}\n${usage}\nrun 'bifrost ${command ? `${command} ` : ''}--help' for details`)
}

function errorLine(e: unknown): string {
  return e instanceof BifrostError ? `error ${e.code}: ${e.message}` : `error: ${e instanceof Error ? e.message : String(e)}`
}

/** Reads the flags a command declares; anything else that starts with `--` (or is `-h`) is a usage error. */
function parseArgs(command: string, args: string[]): Parsed {
  const known = flagsOf(COMMANDS[command]!)
  const positional: string[] = []
  const flags = new Map<string, string[]>()
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!
    if (arg === '--') {
      positional.push(...args.slice(i + 1))
      break
    }
    // A single dash is positional, so negative numbers (write ... -3) need no `--`.
    if (!arg.startsWith('--') && arg !== '-h') {
      positional.push(arg)
      continue
    }
    const eq = arg.indexOf('=')
    const name = arg === '-h' ? 'help' : arg.slice(2, eq < 0 ? undefined : eq)
    const inline = eq < 0 ? undefined : arg.slice(eq + 1)
    const flag = Object.hasOwn(known, name) ? known[name]! : undefined
    if (!flag) {
      const valid = Object.entries(known).map(([n, f]) => flagLabel(n, f))
      throw usageError(`unknown flag ${arg.split('=')[0]} for 'bifrost ${command}' (its flags: ${valid.join(', ')})`, command)
    }
    if (!flag.value && inline !== undefined) throw usageError(`--${name} takes no value`, command)
    const value = flag.value ? (inline ?? args[++i]) : ''
    if (value === undefined) throw usageError(`--${name} needs a value (${flagLabel(name, flag)})`, command)
    flags.set(name, flag.repeats ? [...(flags.get(name) ?? []), value] : [value])
  }
  return { command, positional, flags }
}

/** Checks a whole number typed for flag `name`, before anything connects, so a typo is a usage error and not a failed call. */
function whole(p: Parsed, name: string, raw: string, min: number, max: number): number {
  const n = /^-?\d+$/.test(raw) ? Number(raw) : NaN
  if (n >= min && n <= max) return n
  const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`
  throw usageError(`--${name} must be a whole number ${range}, not '${raw}'`, p.command)
}

function wholeFlag(p: Parsed, name: string, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  const raw = p.flags.get(name)?.[0]
  return raw === undefined ? undefined : whole(p, name, raw, min, max)
}

/**
 * JSON text for output. Built here rather than by JSON.stringify so that
 * bigints (LINT, ULINT) become bare numbers with every digit.
 */
function toJson(value: unknown): string {
  if (typeof value === 'bigint') return value.toString()
  if (Array.isArray(value)) return `[${value.map(toJson).join(',')}]`
  if (typeof value === 'object' && value !== null) {
    const fields = Object.entries(value).filter(([, v]) => v !== undefined)
    return `{${fields.map(([k, v]) => `${JSON.stringify(k)}:${toJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

/** Prints one batch; true when every tag succeeded. */
function printResults(results: TagResult[], json: boolean): boolean {
  if (json) {
    console.log(toJson(results.map((r) => ({ ...r, error: r.error && { code: r.error.code, message: r.error.message } }))))
  } else {
    for (const r of results) console.log(r.error ? `${r.tag}\tERROR ${r.error.code}: ${r.error.message}` : `${r.tag}\t${r.value === undefined ? 'ok' : toJson(r.value)}`)
  }
  return results.every((r) => !r.error)
}

/** Prints one poll of `watch` on one line; true when every tag succeeded. */
function printPoll(batch: TagResult[], json: boolean): boolean {
  if (json) return printResults(batch, true)
  console.log(`${new Date().toISOString()}  ${batch.map((r) => `${r.tag}=${r.error ? r.error.code : toJson(r.value)}`).join('  ')}`)
  return batch.every((r) => !r.error)
}

/** JSON number and string tokens; strings are matched whole so digits inside them are left alone. */
const JSON_TOKEN = /"(?:[^"\\]|\\.)*"|-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/g
/** Prefixes the integers JSON.parse would round. An argument cannot hold a NUL, so only a typed `\u0000bigint:` escape could clash. */
const BIGINT_MARK = '\u0000bigint:'

/** A value typed on the command line: JSON, else the text itself. Integers beyond 2^53 become bigints, every digit kept. */
function parseValue(text: string): TagValue {
  const marked = text.replace(JSON_TOKEN, (token) =>
    /^-?\d+$/.test(token) && !Number.isSafeInteger(Number(token)) ? JSON.stringify(BIGINT_MARK + token) : token,
  )
  try {
    return JSON.parse(marked, (_, v: unknown) => (typeof v === 'string' && v.startsWith(BIGINT_MARK) ? BigInt(v.slice(BIGINT_MARK.length)) : v)) as TagValue
  } catch {
    return text
  }
}

/** Whether a failure to connect or listen is the caller's mistake (a bad URL or option) rather than an unreachable peer. */
function isBadInput(e: unknown): boolean {
  return e instanceof BifrostError && (e.code === 'EADDRESS' || e.code === 'EINVAL')
}

async function open(url: string, options: ConnectOptions = {}): Promise<Device> {
  try {
    return await connect(url, options)
  } catch (e) {
    throw new CliError(isBadInput(e) ? EXIT.usage : EXIT.unreachable, errorLine(e))
  }
}

async function read(p: Parsed): Promise<number> {
  const [url, ...tags] = p.positional
  if (url === undefined || tags.length === 0) throw usageError('read needs <url> and at least one <tag>', 'read')
  const timeout = wholeFlag(p, 'timeout', 1, MAX_MS)
  const device = await open(url)
  try {
    return printResults(await device.readTags(tags, { timeout }), p.flags.has('json')) ? EXIT.ok : EXIT.tagFailed
  } finally {
    await device.close()
  }
}

async function write(p: Parsed): Promise<number> {
  const [url, tag, value, ...extra] = p.positional
  if (value === undefined || extra.length > 0) throw usageError('write needs <url> <tag> <value>, no more', 'write')
  const timeout = wholeFlag(p, 'timeout', 1, MAX_MS)
  const device = await open(url!)
  try {
    return printResults(await device.writeTags([[tag!, parseValue(value)]], { timeout }), p.flags.has('json')) ? EXIT.ok : EXIT.tagFailed
  } finally {
    await device.close()
  }
}

async function watch(p: Parsed): Promise<number> {
  const [url, ...tags] = p.positional
  if (url === undefined || tags.length === 0) throw usageError('watch needs <url> and at least one <tag>', 'watch')
  const intervalMs = wholeFlag(p, 'interval', 1, MAX_MS) ?? 1000
  const count = wholeFlag(p, 'count', 1) ?? Infinity
  const timeout = wholeFlag(p, 'timeout', 1, MAX_MS)
  const json = p.flags.has('json')
  // Device.watch takes no per-call options: the device-wide request timeout bounds each poll's read the same way.
  const device = await open(url, timeout === undefined ? {} : { requestTimeout: timeout })
  const stop = new AbortController()
  const interrupt = () => stop.abort()
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  let polls = 0
  let failed = false
  try {
    while (polls < count && !stop.signal.aborted) {
      try {
        for await (const batch of device.watch(tags, { intervalMs, signal: stop.signal })) {
          if (!printPoll(batch, json)) failed = true
          if (++polls >= count) break
        }
      } catch (e) {
        // A poll that throws ends that iteration: report it as a failed poll, wait out the interval, and start polling again.
        console.error(errorLine(e))
        failed = true
        polls++
        await delay(intervalMs, undefined, { signal: stop.signal }).catch(() => {})
      }
    }
  } finally {
    process.off('SIGINT', interrupt)
    process.off('SIGTERM', interrupt)
    await device.close()
  }
  return failed ? EXIT.tagFailed : EXIT.ok
}

/** Flags only one protocol's simulator takes. */
const SIMULATOR_ONLY: Record<string, 'modbus' | 'enip' | 'opcua'> = {
  framing: 'modbus',
  units: 'modbus',
  invalid: 'modbus',
  tag: 'enip',
  udt: 'enip',
  variables: 'opcua',
  'max-nodes-per-read': 'opcua',
  changing: 'opcua',
}
const DEFAULT_PORTS = { modbus: 5020, enip: 44818, opcua: 4840 }

async function simulate(p: Parsed): Promise<number> {
  const [protocol, ...extra] = p.positional
  if ((protocol !== 'modbus' && protocol !== 'enip' && protocol !== 'opcua') || extra.length > 0) {
    throw usageError(`simulate takes 'modbus', 'enip' or 'opcua', not '${p.positional.join(' ')}'`, 'simulate')
  }
  for (const [flag, only] of Object.entries(SIMULATOR_ONLY)) {
    if (p.flags.has(flag) && only !== protocol) throw usageError(`--${flag} is for the ${only} simulator`, 'simulate')
  }
  const framing = p.flags.get('framing')?.[0]
  if (framing !== undefined && framing !== 'tcp' && framing !== 'rtu') throw usageError(`--framing must be tcp or rtu, not '${framing}'`, 'simulate')
  const units = p.flags.get('units')?.[0]
  const server: ServerOptions = {
    host: p.flags.get('host')?.[0],
    port: wholeFlag(p, 'port', 0, 65535) ?? DEFAULT_PORTS[protocol],
    latencyMs: wholeFlag(p, 'latency-ms', 0),
    dropEvery: wholeFlag(p, 'drop-every', 0),
    disconnectAfter: wholeFlag(p, 'disconnect-after', 0),
    malformedEvery: wholeFlag(p, 'malformed-every', 0),
    idleTimeoutMs: wholeFlag(p, 'idle-timeout-ms', 0),
    maxConnections: wholeFlag(p, 'max-connections', 0),
  }
  let sim: Simulator
  try {
    sim =
      protocol === 'modbus'
        ? await startSimulator({
            ...server,
            framing,
            units: units?.split(',').map((unit) => whole(p, 'units', unit, 0, 255)),
            invalid: p.flags.get('invalid'),
          })
        : protocol === 'enip'
          ? await startEnipSimulator({
              ...server,
              tags: p.flags.get('tag') ?? DEFAULT_ENIP_TAGS,
              udts: p.flags.get('udt') ?? DEFAULT_ENIP_UDTS,
            })
          : await startOpcuaSimulator({
              ...server,
              variables: wholeFlag(p, 'variables', 0, 1_000_000),
              maxNodesPerRead: wholeFlag(p, 'max-nodes-per-read', 0, 1_000_000),
              changing: p.flags.has('changing'),
            })
  } catch (e) {
    throw new CliError(isBadInput(e) ? EXIT.usage : EXIT.unreachable, errorLine(e))
  }
  console.log(`${protocol} simulator listening on ${sim.url}`)
  // The simulator runs on the addon's threads; this timer keeps Node alive until killed.
  const keepAlive = setInterval(() => {}, 1 << 30)
  const stop = () => {
    clearInterval(keepAlive)
    sim.stop()
    process.exit(EXIT.ok)
  }
  process.on('SIGINT', stop)
  process.on('SIGTERM', stop)
  return -1 // keep running
}

/** The package version, read at run time: this file runs from dist/, one level below package.json. */
function version(): string {
  return (JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version
}

function isCommand(name: string): boolean {
  return Object.hasOwn(COMMANDS, name)
}

async function dispatch(args: string[]): Promise<number> {
  const [first, ...rest] = args
  if (first === undefined) {
    console.error(HELP)
    return EXIT.usage
  }
  if (first === '-h' || first === '--help') {
    console.log(HELP)
    return EXIT.ok
  }
  if (first === '-V' || first === '--version') {
    console.log(version())
    return EXIT.ok
  }
  if (first === 'help') {
    const [name, ...extra] = rest
    if (name !== undefined && !isCommand(name)) throw usageError(`no help for unknown command '${name}'`)
    if (extra.length > 0) throw usageError('help takes one command name')
    console.log(name === undefined ? HELP : commandHelp(name))
    return EXIT.ok
  }
  if (first.startsWith('-')) throw usageError(`unknown flag ${first}: before a command only -h, --help, -V and --version are valid`)
  if (!isCommand(first)) throw usageError(`unknown command '${first}' (commands: ${Object.keys(COMMANDS).join(', ')}, help)`)
  const p = parseArgs(first, rest)
  if (p.flags.has('help')) {
    console.log(commandHelp(first))
    return EXIT.ok
  }
  return COMMANDS[first]!.run(p)
}

/**
 * Runs the CLI with the given arguments and resolves to the process exit status
 * (0 success, 1 a tag failed, 2 usage error, 3 could not connect), or to -1
 * while `simulate` keeps serving. Errors are printed here, never thrown.
 */
export async function main(args: string[]): Promise<number> {
  try {
    return await dispatch(args)
  } catch (e) {
    if (e instanceof CliError) {
      console.error(e.message)
      return e.status
    }
    console.error(errorLine(e))
    return EXIT.tagFailed
  }
}
