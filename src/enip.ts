/**
 * EtherNet/IP (CIP, Logix tags) through the native addon, and the in-process
 * Logix simulator.
 * @packageDocumentation
 */

import { NativePlugin } from './device.js'
import { native } from './native.js'
import { registerPlugin } from './plugin.js'
import { startServer } from './simulator.js'
import type { ServerOptions, Simulator } from './simulator.js'

/**
 * The EtherNet/IP plugin; registered for `eip://host[:44818]?path=1,0`. Tags
 * are Logix paths: `Counter`, `Program:Main.Counter`, `SCADA[5]`, element
 * ranges `Big[0]{2000}`, bits `Flags.5`.
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
   */
  tags?: string[]
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
