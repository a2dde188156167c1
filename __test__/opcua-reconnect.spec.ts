// A subscription outlives its connection, through the public API against
// node-opcua-server 2.186.4 (crates/bifrost-opcua/tests/peers/node_opcua_server.mjs,
// whose Counter goes up by one every 100 ms) over loopback: a connection cut
// by a proxy between us (the session is activated again on a new secure channel),
// and the server killed and started again (the subscription is made again on a
// new session). The server's own diagnostics count its sessions and subscriptions.
import test from 'ava'
import type { ExecutionContext } from 'ava'
import type { ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '../src/index.js'
import type { Device, TagResult } from '../src/index.js'
import { freePort, peerTest, startProcess, stats, stopProcess } from './helpers.js'

const ROOT = join(__dirname, '..')
const SERVER = join(ROOT, 'crates', 'bifrost-opcua', 'tests', 'peers', 'node_opcua_server.mjs')
const nodeOpcua = { name: 'node-opcua-server (npm ci installs it)', present: existsSync(join(ROOT, 'node_modules', 'node-opcua-server')) }

// ServerDiagnosticsSummary: CurrentSessionCount, CumulatedSessionCount, CurrentSubscriptionCount.
const DIAGNOSTICS = ['i=2277', 'i=2278', 'i=2285']

const folders: string[] = []
const children: ChildProcess[] = []
test.after.always(async () => {
  await Promise.all(children.map(stopProcess))
  for (const dir of folders) rmSync(dir, { recursive: true, force: true })
})

function folder(name: string): string {
  const dir = mkdtempSync(join(tmpdir(), `bifrost-${name}-`))
  folders.push(dir)
  return dir
}

async function startServer(port: number, home: string, secure: boolean): Promise<ChildProcess> {
  const args = [SERVER, String(port), ...(secure ? ['secure'] : [])]
  const child = await startProcess(process.execPath, args, `listening ${port}`, { ...process.env, HOME: home }, 90_000)
  children.push(child)
  return child
}

/** A TCP proxy to `port` whose connections the test can cut. */
async function proxy(port: number): Promise<{ port: number; cut: () => number; close: () => void }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1')
    client.pipe(upstream)
    upstream.pipe(client)
    for (const socket of [client, upstream]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.on('close', () => sockets.delete(socket))
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const cut = () => {
    const count = sockets.size
    for (const socket of sockets) socket.destroy()
    return count
  }
  return { port: (server.address() as net.AddressInfo).port, cut, close: () => server.close() }
}

/** Consumes a subscription in the background: every batch, with when it came. */
function consume(batches: AsyncIterable<TagResult[]>): { seen: Array<{ at: number; batch: TagResult[] }>; done: Promise<void> } {
  const seen: Array<{ at: number; batch: TagResult[] }> = []
  const done = (async () => {
    for await (const batch of batches) seen.push({ at: Date.now(), batch })
  })()
  return { seen, done }
}

async function until(t: ExecutionContext, what: string, condition: () => boolean, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) t.fail(`${what}: not within ${ms / 1000} s`)
    if (Date.now() > deadline) throw new Error(what)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const counts = (seen: Array<{ batch: TagResult[] }>, tag: string) =>
  seen.flatMap(({ batch }) => batch.filter((c) => c.tag === tag).map((c) => c.value as number))

const diagnostics = async (dev: Device) => (await dev.readTags(DIAGNOSTICS)).map((r) => r.error?.message ?? r.value)

peerTest('node-opcua-server: a connection cut mid-subscription under SignAndEncrypt: the session is activated again on a new channel and the loop goes on, with no value twice and no second session', nodeOpcua, async (t) => {
  const port = await freePort()
  await startServer(port, folder('node-opcua-home'), true)
  const between = await proxy(port)
  const options = {
    securityPolicy: 'Basic256Sha256',
    securityMode: 'SignAndEncrypt',
    pkiDir: folder('pki'),
    acceptServerCertificate: true,
    checkHostName: false,
  }
  const dev = await connect(`opc.tcp://127.0.0.1:${between.port}/bifrost`, options)
  const [, sessionsBefore] = await diagnostics(dev)
  const subscription = dev.subscribe(['ns=2;s=Counter'], { intervalMs: 100 })
  const { seen, done } = consume(subscription)
  await until(t, 'five values before the cut', () => counts(seen, 'ns=2;s=Counter').length >= 5)
  t.true(between.cut() >= 2, 'the connection went through the proxy')
  const before = counts(seen, 'ns=2;s=Counter').length
  await until(t, 'ten values after the cut', () => counts(seen, 'ns=2;s=Counter').length >= before + 10)
  const values = counts(seen, 'ns=2;s=Counter')
  t.true(values.every((v, i) => i === 0 || v > values[i - 1]!), `each value once, in order: ${values.join(' ')}`)
  t.is(stats(dev).connects, 2, 'one reconnect')
  // The same session, activated again: one session now and in all; one subscription.
  t.deepEqual(await diagnostics(dev), [1, sessionsBefore, 1])
  await subscription.return!()
  await done
  await dev.close()
  between.close()
})

peerTest('node-opcua-server: a server killed and started again mid-subscription: the subscription is made again on a new session, each tag once; ended while the server is down, it ends at once', nodeOpcua, async (t) => {
  const port = await freePort()
  const home = folder('node-opcua-home')
  let server = await startServer(port, home, false)
  const dev = await connect(`opc.tcp://127.0.0.1:${port}/bifrost`)
  const subscription = dev.subscribe(['ns=2;s=Counter', 'ns=2;s=Speed'], { intervalMs: 100 })
  const { seen, done } = consume(subscription)
  await until(t, 'five values before the kill', () => counts(seen, 'ns=2;s=Counter').length >= 5)
  server.kill('SIGKILL')
  await new Promise((resolve) => server.once('exit', resolve))
  const killedAt = seen.length
  await new Promise((resolve) => setTimeout(resolve, 1500))
  t.is(seen.length, killedAt, 'nothing while the server is down')
  server = await startServer(port, home, false)
  await until(t, 'five values from the new server', () => counts(seen.slice(killedAt), 'ns=2;s=Counter').length >= 5)
  const after = seen.slice(killedAt)
  // Made again: Speed (which does not change) comes once as its first value, not twice.
  t.deepEqual(counts(after, 'ns=2;s=Speed'), [12.5])
  t.true(after.every(({ batch }) => new Set(batch.map((c) => c.tag)).size === batch.length), 'a tag once per batch')
  const values = counts(after, 'ns=2;s=Counter')
  t.true(values.every((v, i) => i === 0 || v > values[i - 1]!), `each value once, in order: ${values.join(' ')}`)
  t.deepEqual((await diagnostics(dev)).filter((_, i) => i !== 1), [1, 1], 'one session and one subscription on the new server')

  // Down again, and the subscription ended meanwhile: it does not wait for the server.
  server.kill('SIGKILL')
  await new Promise((resolve) => server.once('exit', resolve))
  await new Promise((resolve) => setTimeout(resolve, 300))
  const ending = Date.now()
  await subscription.return!()
  await done
  const took = Date.now() - ending
  t.true(took < 5000, `ended in ${took} ms`)
  await dev.close()
})
