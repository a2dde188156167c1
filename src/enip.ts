/**
 * EtherNet/IP (CIP, Logix tags) through the native addon, and the in-process
 * Logix simulator.
 * @packageDocumentation
 */

import { NativePlugin, checkMs } from './device.js'
import { asBifrostError } from './errors.js'
import { native } from './native.js'
import { registerPlugin } from './plugin.js'
import type { DeviceIdentity } from './plugin.js'
import { startServer } from './simulator.js'
import type { ServerOptions, Simulator } from './simulator.js'

/**
 * The EtherNet/IP plugin; registered for `eip://host[:44818]?path=1,0`. Tags
 * are Logix paths: `Counter`, `Program:Main.Counter`, `SCADA[5]`, element
 * ranges `Big[0]{2000}`, bits `Flags.5`, structure members `Recipe[2].Temp`.
 * A whole structure (a UDT) reads into a plain object of its members, by its
 * template, which is read once and kept until the controller may have changed.
 */
export class EnipPlugin extends NativePlugin {}

registerPlugin('eip', () => new EnipPlugin())

/** Settings of {@link startEnipSimulator}. */
export interface EnipSimulatorOptions extends ServerOptions {
  /**
   * The controller's tags, `NAME=TYPE` or `NAME=TYPE[count]`: types BOOL, SINT,
   * INT, DINT, LINT, USINT, UINT, UDINT, ULINT, REAL, LREAL, STRING (the Logix
   * STRING) and CIP_STRING (the generic CIP STRING, scalar only). Element `i`
   * of a number starts at `i`, BOOL element `i` as `i % 2 == 1`, strings empty.
   * A type may also be one of `udts` (`Recipes=RECIPE[3]`), whose values start zeroed.
   */
  tags?: string[]
  /**
   * Structure types (UDTs), each `NAME=Member:TYPE,Member:TYPE[count],...`, as in
   * `RECIPE=Temp:REAL,Steps:INT[4],Active:BOOL,Name:STRING`: members of the types
   * above (BOOL arrays excepted) or of a structure type listed before. They are
   * laid out as a Logix controller lays them out (BOOLs packed into hidden
   * hosts) and served as Template objects, so clients read them by their template.
   */
  udts?: string[]
  /**
   * Every Nth request, the controller first drops the CIP connections of that
   * TCP connection, as a program download does: connected messages on them go
   * unanswered, until the client opens a new connection.
   */
  dropConnectionsEvery?: number
  /**
   * The largest connection a Forward Open gets, 100 to 65535 (default 4002); a
   * larger one is refused with status 0x01/0x0109 naming this size. At most
   * 511, the Large Forward Open is refused (service not supported), as an older
   * controller does; 0 refuses every connection (unconnected messaging only).
   */
  maxConnectionSize?: number
}

/**
 * Starts the EtherNet/IP simulator inside this process: a Logix-like controller
 * answering on TCP (sessions, Forward Open and Large Forward Open, Multiple
 * Service Packets, fragmented transfers) and ListIdentity on UDP, on one port.
 * It sits in slot 0 of the backplane: connect with `path=1,0`, or without a path.
 * @param options - listening address, tags and fault injection
 * @throws {@link BifrostError} `EADDRINUSE` when the port is taken, `EINVAL` for a bad tag or option
 */
export function startEnipSimulator(options: EnipSimulatorOptions = {}): Promise<Simulator> {
  return startServer(native.startEnipSimulator, options, 'eip')
}

/** Where and how long {@link discover} looks. */
export interface DiscoverOptions {
  /** A device's address, or a broadcast address (`255.255.255.255`, or a network's, e.g. `10.0.0.255`). Default `255.255.255.255`. */
  address?: string
  /** The UDP port devices listen on. Default 44818. */
  port?: number
  /** The local address to send from: broadcast on that interface's network. Default `0.0.0.0` (any). */
  bind?: string
  /** How long to gather answers, in milliseconds. Default 1000. */
  timeoutMs?: number
}

/** What a device says of itself in its ListIdentity answer, and where the answer came from. */
export interface DiscoveredDevice extends DeviceIdentity {
  /** The address its answer came from. */
  address: string
  /** The port its answer came from. */
  port: number
  /** The device's state (255 when it leaves it out). */
  state: number
}

/**
 * Finds EtherNet/IP devices: sends ListIdentity over UDP to an address, or
 * broadcasts it, and resolves with every device that answers within the
 * timeout (an empty list when none does).
 * @param options - where to send, from which interface, and how long to wait
 * @throws {@link BifrostError} `EINVAL` for an address that is not IPv4, a bad port or timeout, or a `bind` address this host does not have
 */
export async function discover(options: DiscoverOptions = {}): Promise<DiscoveredDevice[]> {
  const { address = '255.255.255.255', port = 44818, bind = '0.0.0.0', timeoutMs = 1000 } = options
  checkMs('timeoutMs', timeoutMs)
  let found: Awaited<ReturnType<typeof native.discoverEnip>>
  try {
    found = await native.discoverEnip(address, port, bind, timeoutMs)
  } catch (e) {
    throw asBifrostError(e) // arguments the addon cannot convert
  }
  if (found instanceof Error) throw found
  return found
}
