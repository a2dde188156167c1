/**
 * What every protocol's in-process simulator shares: listening and fault
 * options, and the running simulator's handle.
 * @packageDocumentation
 */

import type { BindingSimulator, SimulatorOptions as BindingOptions } from '../index.js'
import { asBifrostError } from './errors.js'

/** Listening address and fault injection, the same for every simulator. */
export interface ServerOptions {
  /** Address to listen on. Default `127.0.0.1`. */
  host?: string
  /** Port to listen on; 0 or absent picks a free one. */
  port?: number
  /** Milliseconds added before each batch of replies. */
  latencyMs?: number
  /** Every Nth request gets no reply. */
  dropEvery?: number
  /** Each connection is closed after serving N requests. */
  disconnectAfter?: number
  /** Every Nth reply is malformed (a length that disagrees with its data). */
  malformedEvery?: number
  /** A connection that sends nothing for this many milliseconds is closed; 0 never closes one. Default 300000 (5 minutes). */
  idleTimeoutMs?: number
  /** Connections served at once; one more is accepted and closed at once. Default 20000. */
  maxConnections?: number
}

/** A running simulator. */
export interface Simulator {
  /** The address it listens on. */
  readonly host: string
  /** The port it listens on. */
  readonly port: number
  /** Requests served so far. */
  readonly requests: number
  /** Connections accepted so far. */
  readonly connections: number
  /** A URL to connect to it, e.g. `modbus-tcp://127.0.0.1:5020` or `eip://127.0.0.1:44818`. */
  readonly url: string
  /** Stops listening and closes every connection. */
  stop(): void
}

/** Starts a simulator through the addon and wraps its handle. @internal */
export async function startServer(
  start: (options: BindingOptions) => Promise<BindingSimulator | Error>,
  options: BindingOptions,
  scheme: string,
): Promise<Simulator> {
  let started: BindingSimulator | Error
  try {
    started = await start(options)
  } catch (e) {
    throw asBifrostError(e) // options the addon cannot convert, e.g. a port given as a string
  }
  if (started instanceof Error) throw started
  const running = started
  const host = running.host.includes(':') ? `[${running.host}]` : running.host
  return {
    get host() {
      return running.host
    },
    get port() {
      return running.port
    },
    get requests() {
      return running.requests
    },
    get connections() {
      return running.connections
    },
    url: `${scheme}://${host}:${running.port}`,
    stop: () => running.stop(),
  }
}
