// Shared set-up for the ava suites: third-party peers, raw socket peers, and
// the rule that a missing peer fails in CI and is reported as skipped elsewhere
// (or left out, and listed, in portable mode: BIFROST_PORTABLE=1).
import test from 'ava'
import type { ExecutionContext } from 'ava'
import { spawn, spawnSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import net from 'node:net'
import { join } from 'node:path'
import { BifrostError } from '../src/index.js'
import type { ConnectionStats, Device } from '../src/index.js'

export const DEBIAN_PYTHON = '/usr/bin/python3'
export const PEERS = join(__dirname, 'peers')

/** True when `cmd` runs (exit status 0 for `args`). */
export function available(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { stdio: 'ignore', timeout: 20_000 })
  return r.status === 0
}

export const hasPymodbus = (): boolean => available(DEBIAN_PYTHON, ['-c', 'import pymodbus, serial_asyncio'])
export const hasMbpoll = (): boolean => available('mbpoll', ['-V'])
export const hasSocat = (): boolean => available('socat', ['-V'])

/**
 * Portable mode (`BIFROST_PORTABLE=1`, set by `npm run test:portable`): for machines that cannot
 * have the Debian peers (macOS, Windows, Alpine). A peer test whose peer is missing is left out,
 * even under CI=true, and says so in its title, so scripts/test.mjs can list it.
 */
export const PORTABLE = process.env.BIFROST_PORTABLE === '1'

/**
 * Marks the title of a peer test left out in portable mode: `<title> [left out, needs: <peer>]`.
 * A skipped test's body never runs (no `t.log`), and ava --tap sends worker console output to
 * its stderr, interleaved between workers; the title reaches stdout whole, as one TAP line
 * (`ok 7 - peers › <title> [left out, needs: <peer>] # SKIP`), which scripts/test.mjs parses.
 * Keep the two in step.
 */
export const LEFT_OUT_MARK = '[left out, needs:'

/**
 * A test that needs a third-party peer. Without it the test fails under CI=true; elsewhere it is
 * declared skipped, so the closing count shows it. In portable mode it is declared skipped even
 * under CI=true, with the peer it needs in its title, and the test script lists it as left out.
 */
export function peerTest(title: string, peer: { name: string; present: boolean }, body: (t: ExecutionContext) => Promise<void>): void {
  if (peer.present) test.serial(title, body)
  else if (PORTABLE) test.skip(`${title} ${LEFT_OUT_MARK} ${peer.name}]`, () => {})
  else if (process.env.CI) test.serial(title, (t) => t.fail(`peer ${peer.name} is missing (install it: see .ci/run)`))
  else test.skip(`${title} (peer ${peer.name} missing)`, () => {})
}

/** A free TCP port on loopback. */
export async function freePort(): Promise<number> {
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** Starts a child process and waits (20 s unless told) until a line of its output contains `ready`. */
export async function startProcess(cmd: string, args: string[], ready: string, env: NodeJS.ProcessEnv = process.env, timeoutMs = 20_000): Promise<ChildProcess> {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
  let output = ''
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${cmd} did not become ready in ${timeoutMs / 1000} s:\n${output}`)), timeoutMs)
    const onData = (chunk: Buffer) => {
      output += chunk.toString()
      if (output.includes(ready)) {
        clearTimeout(timer)
        resolve()
      }
    }
    child.stdout!.on('data', onData)
    child.stderr!.on('data', onData)
    child.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`${cmd} exited (${code}) before it was ready:\n${output}`))
    })
  })
  child.removeAllListeners('exit')
  return child
}

export async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGTERM')
  await exited
}

/** Runs a command (in `env`) to completion and returns its stdout; rejects on a non-zero exit. */
export function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env })
    let out = ''
    let err = ''
    child.stdout.on('data', (c) => (out += c))
    child.stderr.on('data', (c) => (err += c))
    // 'close', not 'exit': output may still be arriving when the process has exited.
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}${out}`))))
  })
}

/** A raw TCP peer whose behaviour the test scripts: `onConnection` gets each socket; `dropConnections` closes them all. */
export async function rawServer(
  onConnection: (socket: net.Socket) => void,
): Promise<{ port: number; dropConnections(): Promise<void>; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    onConnection(socket)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const dropConnections = async () => {
    await Promise.all([...sockets].map((s) => new Promise((resolve) => s.once('close', resolve).destroy())))
  }
  return {
    port: (server.address() as net.AddressInfo).port,
    dropConnections,
    close: async () => {
      await dropConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}

/** Resolves once something accepts TCP connections on the port (peers may announce themselves before they bind). */
export async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1')
      socket.once('connect', () => (socket.destroy(), resolve(true)))
      socket.once('error', () => resolve(false))
    })
    if (open) return
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after ${timeoutMs} ms`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The connection counters of a native device. */
export function stats(dev: Device): ConnectionStats {
  const counters = dev.stats()
  if (!counters) throw new Error('this device keeps no counters')
  return counters
}

/** The BifrostError `promise` rejects with; anything else (a resolve, another error) fails the test. */
export async function failure(promise: Promise<unknown>): Promise<BifrostError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  if (!(error instanceof BifrostError)) throw new Error(`expected a BifrostError, got ${String(error)}`)
  return error
}

/** Reads `tag` every 100 ms for `ms`: how many reads succeeded, and the messages of those that failed. */
export async function readFor(dev: Device, tag: string, ms: number): Promise<{ reads: number; errors: string[] }> {
  const errors: string[] = []
  let reads = 0
  const started = Date.now()
  while (Date.now() - started < ms) {
    await dev.read(tag).then(() => reads++, (e: Error) => errors.push(e.message))
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  return { reads, errors }
}
