/**
 * OPC UA (binary protocol, client side) through the native addon, and the
 * in-process OPC UA simulator.
 * @packageDocumentation
 */

import { NativePlugin, urlOptions } from './device.js'
import { BifrostError, asBifrostError } from './errors.js'
import { native } from './native.js'
import { registerPlugin } from './plugin.js'
import type { ConnectOptions } from './plugin.js'
import { startServer } from './simulator.js'
import type { ServerOptions, Simulator } from './simulator.js'

/**
 * The OPC UA plugin; registered for `opc.tcp://host[:4840][/path]`. Tags are
 * NodeIds as text: `ns=2;s=Line1.Speed`, `i=2258`, `ns=1;g=<guid>`,
 * `ns=1;b=<base64>`, or `nsu=<namespace URI>;s=Speed`, which is resolved
 * through the server's namespace array on each connection (indices may change
 * when the server restarts). Reads are split to the server's MaxNodesPerRead;
 * a write takes the node's DataType, read once per session and kept. A bad
 * status is an `OPCUA_STATUS` error with its `statusCode` and `statusName`.
 * This release connects with security mode None and the Anonymous identity.
 */
export class OpcuaPlugin extends NativePlugin {}

registerPlugin('opc.tcp', () => new OpcuaPlugin())

/** An application, as a server describes itself or another ({@link findServers}). */
export interface OpcuaApplication {
  /** Its globally unique URI. */
  applicationUri?: string
  /** The URI of the product it is. */
  productUri?: string
  /** Its name for people. */
  applicationName?: string
  /** `Server`, `Client`, `ClientAndServer` or `DiscoveryServer` (a number for a value not in the standard). */
  applicationType: string | number
  /** Where its discovery endpoints listen. */
  discoveryUrls: string[]
}

/** One way to identify a user on an endpoint. */
export interface OpcuaUserTokenPolicy {
  /** The id ActivateSession names the policy by. */
  policyId?: string
  /** `Anonymous`, `UserName`, `Certificate` or `IssuedToken`. */
  tokenType: string | number
  /** The security policy that secures the token (a password's encryption); absent or empty: the endpoint's. */
  securityPolicyUri?: string
}

/** An endpoint a server offers ({@link getEndpoints}). */
export interface OpcuaEndpoint {
  /** Its URL, as the server advertises it (it may name another host name than the one asked). */
  endpointUrl?: string
  /** The server behind it. */
  server: OpcuaApplication
  /** `None`, `Sign` or `SignAndEncrypt`. */
  securityMode: string | number
  /** The security policy, e.g. `http://opcfoundation.org/UA/SecurityPolicy#None`. */
  securityPolicyUri?: string
  /** How secure the server rates it, relative to its other endpoints (higher is more secure). */
  securityLevel: number
  /** The identities it accepts. */
  userIdentityTokens: OpcuaUserTokenPolicy[]
}

/** Runs a discovery service, with the URL keys and options of `connect`. */
async function discover(url: string, options: ConnectOptions, servers: boolean): Promise<unknown> {
  try {
    const found = await native.opcuaDiscover(url, urlOptions(options), servers)
    if (found instanceof Error) throw found
    return found
  } catch (e) {
    throw asBifrostError(e)
  }
}

/**
 * Asks the server at `url` for its endpoints (GetEndpoints), on a secure
 * channel of its own (security None) without a session, then closes it.
 * @param url - `opc.tcp://host[:4840][/path]`, with the query keys of `connect` (`request-timeout`, `connect-timeout`)
 * @param options - the same keys as options
 * @throws {@link BifrostError} `ECONNREFUSED`, `ETIMEDOUT`, `EADDRESS` for a bad URL, `OPCUA_STATUS` when the server refuses
 */
export async function getEndpoints(url: string, options: ConnectOptions = {}): Promise<OpcuaEndpoint[]> {
  return (await discover(url, options, false)) as OpcuaEndpoint[]
}

/**
 * Asks the server at `url` for the servers it knows (FindServers), itself
 * included: a discovery server lists those registered with it.
 * @param url - as for {@link getEndpoints}
 * @param options - as for {@link getEndpoints}
 * @throws {@link BifrostError} as {@link getEndpoints}
 */
export async function findServers(url: string, options: ConnectOptions = {}): Promise<OpcuaApplication[]> {
  return (await discover(url, options, true)) as OpcuaApplication[]
}

/**
 * Decodes a ReadResponse's message body (from its encoding's NodeId on, as it
 * follows a MSG chunk's headers) into `values`, one number per result and no
 * object per value: for responses captured or relayed outside a connection.
 * A Boolean is 0 or 1; a result that is not a number, or whose status is not
 * good, is NaN and listed in the returned positions.
 * @param body - the message body
 * @param values - one slot per result: its length must be the response's result count
 * @returns the positions of the results that are not good numbers
 * @throws {@link BifrostError} `EPROTO` for a body that is not a ReadResponse of `values.length` results
 */
export function decodeReadResponse(body: Uint8Array, values: Float64Array): number[] {
  if (!(body instanceof Uint8Array)) throw new BifrostError('EINVAL', 'body must be a Uint8Array (or a Buffer)')
  if (!(values instanceof Float64Array)) throw new BifrostError('EINVAL', 'values must be a Float64Array')
  const failed = native.decodeOpcuaReadResponse(body, values)
  if (failed instanceof Error) throw failed
  return failed
}

/** Settings of {@link startOpcuaSimulator}. */
export interface OpcuaSimulatorOptions extends ServerOptions {
  /**
   * How many variables the folder `ns=1;s=Simulation` holds (default 1000):
   * `ns=1;s=V<i>`, typed by `i % 5` (Double `i * 0.5`, Int32 `i`, Boolean
   * `i % 2 == 1`, Float `i * 0.25`, String `v<i>`), read-only when `i % 7 == 6`.
   * Beside them `ns=1;s=Ticks` (UInt32, ten a second) and `ns=1;s=Sine` (Double) change.
   */
  variables?: number
  /** How many nodes one Read or Write may name, as the server's operation limits say (default 10000; 0: no limit). */
  maxNodesPerRead?: number
  /** Every Double variable `V<i>` reads `i * 0.5` plus the whole seconds since the start, so each changes every second. */
  changing?: boolean
}

/**
 * Starts the OPC UA simulator inside this process: a small server over the
 * binary protocol (security None, the Anonymous identity) answering Hello,
 * the secure channel's messages, GetEndpoints, FindServers, the session
 * services, Read and Write. Its namespace 1 is `urn:bifrost:simulator`.
 * @param options - listening address, variables and fault injection
 * @throws {@link BifrostError} `EADDRINUSE` when the port is taken, `EINVAL` for a bad option
 */
export function startOpcuaSimulator(options: OpcuaSimulatorOptions = {}): Promise<Simulator> {
  return startServer(native.startOpcuaSimulator, options, 'opc.tcp')
}
