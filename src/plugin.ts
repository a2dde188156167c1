/**
 * The plugin contract every protocol implements, and the registry of URL schemes.
 * @packageDocumentation
 */

import type { SubscribeOptions } from './device.js'
import type { SubscriptionControls } from './subscription.js'
import type { BifrostError } from './errors.js'

/** A value read from or written to a tag. 64-bit integer types (LINT, ULINT) are `bigint`. */
export type TagValue = boolean | number | bigint | string | TagValue[]

/** How far a value can be trusted. */
export type Quality = 'good' | 'bad' | 'uncertain'

/** The outcome for one tag of a batch. Batches never throw per tag: a failed tag has `quality: 'bad'` and an `error`. */
export interface TagResult {
  /** The tag address exactly as it was given. */
  tag: string
  /** The value read; absent when the tag failed, and for writes. */
  value?: TagValue
  /** `good` when the read or write succeeded. */
  quality: Quality
  /** Why the tag failed. */
  error?: BifrostError
  /** When the batch completed, in milliseconds since the Unix epoch. */
  timestamp: number
}

/**
 * Connection settings, the same keys as the URL's query in camelCase
 * (`requestTimeout` is `request-timeout`). Fields given here override the URL.
 */
export interface ConnectOptions {
  /** Default unit (slave) id for tags without `{unit-id: N}`. Default 1. */
  unitId?: number
  /** Milliseconds a call may take, time waiting in the queue included (1 to 2147483647). Default 1000. */
  requestTimeout?: number
  /** Milliseconds a connection attempt may take. Default 3000. */
  connectTimeout?: number
  /** Requests on the wire at once on one connection (1 to 65535). Default 1, which every device supports. */
  maxInFlight?: number
  /** Requests that may wait their turn (1 to 1000000); one more fails at once with `EQUEUEFULL`. Default 10000. */
  maxQueued?: number
  /** Milliseconds what the device taught the planner (refused ranges, shorter requests) holds before it is probed again; 0 keeps it until the next reconnect. Default 60000. */
  relearnAfter?: number
  /** Serial lines: after a timeout, milliseconds the line must stay silent (if the late reply does not come first) before the next request. Default 1000. */
  lateReplyWindow?: number
  /** Largest register read the planner builds (1 to 125). Default 125. */
  maxRegistersPerRequest?: number
  /** Largest coil or discrete-input read the planner builds (1 to 2000). Default 2000. */
  maxBitsPerRequest?: number
  /** Unused addresses the planner may read over to merge two tags into one request. Default 8. */
  maxGap?: number
  /**
   * TCP devices: `host` or `host:port` of a redundant backup device. Reads go to the
   * backup while the primary's circuit breaker is open, and back once the primary
   * answers again. Both must be reachable when connecting.
   */
  backup?: string
  /** With `backup`: writes go to the backup too while the primary is down. Default false: they fail with the primary's error. */
  failoverWrites?: boolean
  /** OPC UA: milliseconds the secure channel's token is asked to live (1000 to 4294967295; the server may grant another), renewed at 75% of what it grants. Default 3600000. */
  channelLifetime?: number
  /**
   * OPC UA: the secure channel's security policy, by name or URI: `None`, `Basic256Sha256`,
   * `Aes128_Sha256_RsaOaep` or `Aes256_Sha256_RsaPss`; the deprecated `Basic128Rsa15` and
   * `Basic256` (SHA-1) with {@link ConnectOptions.allowDeprecatedSecurity}. Default `None`, or
   * `Basic256Sha256` when only {@link ConnectOptions.securityMode} is given.
   */
  securityPolicy?: 'None' | 'Basic256Sha256' | 'Aes128_Sha256_RsaOaep' | 'Aes256_Sha256_RsaPss' | 'Basic128Rsa15' | 'Basic256' | (string & {})
  /** OPC UA: `None`, `Sign` or `SignAndEncrypt`. Default `None`, or `SignAndEncrypt` when only {@link ConnectOptions.securityPolicy} is given. */
  securityMode?: 'None' | 'Sign' | 'SignAndEncrypt'
  /**
   * OPC UA: the certificate store's folder. It holds `own/` (the application certificate and key,
   * made on first use), `trusted/certs/` (servers or CAs trusted), `issuers/certs/` (CAs that
   * complete chains) and `rejected/certs/` (servers refused, to copy into `trusted/certs/`).
   * Default `bifrost/pki` in the user's configuration folder (`$XDG_CONFIG_HOME` or `~/.config`,
   * `%APPDATA%` on Windows, `~/Library/Application Support` on macOS).
   */
  pkiDir?: string
  /** OPC UA: accept the server's certificate for this connection though nothing in the trust list vouches for it; nothing is saved. Default false. */
  acceptServerCertificate?: boolean
  /** OPC UA: whether the server's certificate must name the host dialled. Default true. */
  checkHostName?: boolean
  /** OPC UA: allow the deprecated policies Basic128Rsa15 and Basic256 (SHA-1), for the channel or a user's token. Default false: they are `EINVAL`. */
  allowDeprecatedSecurity?: boolean
  /** OPC UA: the user name to activate the session with (or `user:password@` before the URL's host). Never shown in messages. */
  username?: string
  /** OPC UA: the user's password, encrypted with the server's key unless its user token policy says None. Never shown in messages. */
  password?: string
  /** OPC UA: a user certificate file (DER or PEM) to activate the session with, with {@link ConnectOptions.userPrivateKey}. */
  userCertificate?: string
  /** OPC UA: the user certificate's private key file (PKCS#8, PEM or DER). */
  userPrivateKey?: string
  /** Serial lines: bits per second (50 to 12000000). Default 19200. */
  baudRate?: number
  /** Serial lines: `none`, `even` (the default) or `odd`. */
  parity?: 'none' | 'even' | 'odd'
  /** Serial lines: 7 or 8 (the default). */
  dataBits?: number
  /** Serial lines: 1 (the default) or 2. */
  stopBits?: number
  /** Any other key a plugin understands. */
  [key: string]: string | number | boolean | undefined
}

/** Settings for one call. */
export interface RequestOptions {
  /**
   * Milliseconds this call may take, from the call to its result, time waiting
   * in the device's queue included; overrides the device's `request-timeout`.
   * A whole number from 1 to 2147483647, else `EINVAL`.
   */
  timeout?: number
}

/** Settings of {@link Device.translate}. */
export interface TranslateOptions extends RequestOptions {
  /** The tag the paths start from (OPC UA: a NodeId). Default the protocol's root (OPC UA: RootFolder, `i=84`). */
  from?: string
}

/** What a plugin is asked to connect to. */
export interface DeviceDescriptor {
  /** The URL as given to `connect`. */
  url: string
  /** The URL scheme without `://`, lower-case. */
  scheme: string
  /** The options given beside the URL, as kebab-case keys with string values. */
  options: Record<string, string>
}

/** A columnar read: the numeric values of all tags back to back. */
export interface ColumnarData {
  /** Element values of every tag, back to back (NaN where a tag failed). */
  values: Float64Array
  /** Tag `i` owns `values[offsets[i]]` up to `values[offsets[i + 1]]`. */
  offsets: Uint32Array
  /** Per tag: 0 good, 1 bad. */
  quality: Uint8Array
  /** The errors of the failed tags, by tag index. Read-only: a read where no tag failed shares one empty map, whose `set` throws. */
  errors: Map<number, BifrostError>
  /** When the read completed, in milliseconds since the Unix epoch. */
  timestamp: number
}

/**
 * One batch of a subscription's changes as columns, one entry per change in
 * the order the device reported them: no object per change until
 * {@link ChangeColumns.results} is called.
 */
export interface ChangeColumns {
  /** Per change: the position of its tag in the subscribed list. */
  indices: Uint32Array
  /** Per change: its value as a number (a boolean as 0 or 1, a 64-bit integer rounded to the nearest double); NaN when it failed or is not a number (text, an array: see `results()`). */
  values: Float64Array
  /** Per change: the device's timestamp of it (else when the batch arrived), in milliseconds since the Unix epoch. */
  timestamps: Float64Array
  /** Per change: 0 good, 1 bad. */
  quality: Uint8Array
  /** The same changes as {@link TagResult}s, each value in its own type and each failure with its error. */
  results(): TagResult[]
}

/** A set of tags parsed and planned once, read many times with one call each. */
export interface PreparedPlan {
  /** Reads every tag of the plan. Never rejects per tag. */
  read(options?: RequestOptions): Promise<ColumnarData>
}

/**
 * The contract of a protocol. Native protocols implement it in the addon;
 * third-party plugins can be written in plain TypeScript and registered with
 * {@link registerPlugin}.
 */
export interface ProtocolPlugin {
  /** Opens the connection. Rejects with a `BifrostError`. */
  connect(device: DeviceDescriptor): Promise<void>
  /** Reads the tags; one result per tag, in order. Never rejects per tag. */
  readTags(tags: string[], options?: RequestOptions): Promise<TagResult[]>
  /** Writes the values; one result per tag, in order. Never rejects per tag. */
  writeTags(values: Array<[string, TagValue]>, options?: RequestOptions): Promise<TagResult[]>
  /** Closes the connection; later calls fail with `ECLOSED`. */
  disconnect(): Promise<void>
  /** Optional: parse and plan tags once for fast repeated reads. Throws `EADDRESS` on a bad tag. */
  prepare?(tags: string[]): PreparedPlan
  /** Optional: list the device's tags, or those under `from` (an EtherNet/IP program). */
  browse?(from?: string, options?: RequestOptions): Promise<TagInfo[]>
  /** Optional: follow browse paths to tags (OPC UA: TranslateBrowsePathsToNodeIds); one result per path, never rejects per path. */
  translate?(paths: string[], options?: TranslateOptions): Promise<TagResult[]>
  /** Optional: who the device says it is (EtherNet/IP: its Identity object). */
  identity?(options?: RequestOptions): Promise<DeviceIdentity>
  /** Optional: subscribe to the tags; the device reports their changes batch by batch until the loop ends. */
  subscribe?(tags: string[], options: SubscribeOptions): AsyncIterable<TagResult[]> & SubscriptionControls
  /** Optional: as `subscribe`, each batch as columns; without it `Device.subscribeColumns` builds them from `subscribe`'s batches. */
  subscribeColumns?(tags: string[], options: SubscribeOptions): AsyncIterable<ChangeColumns> & SubscriptionControls
  /** Optional: call a method of an object (OPC UA) and return its output arguments. */
  call?(objectId: string, methodId: string, args: TagValue[], options?: RequestOptions): Promise<TagValue[]>
}

/** What a device says of itself: its CIP Identity object ({@link Device.identity}, and each answer of `discover()`). */
export interface DeviceIdentity {
  /** 1 is Rockwell Automation/Allen-Bradley. */
  vendorId: number
  /** 0x0E is a programmable logic controller, 0x0C a communications adapter. */
  deviceType: number
  /** The vendor's own number for the product. */
  productCode: number
  /** `major.minor`. */
  revision: string
  /** The Identity object's status word (bit 0: owned; bits 4 to 7: the device's state of health). */
  status: number
  /** Unique per vendor; usually shown in hexadecimal. */
  serialNumber: number
  /** As the device names itself, e.g. `1756-L61/B LOGIX5561`. */
  productName: string
}

/** One tag of a device's listing ({@link Device.browse}). */
export interface TagInfo {
  /** As it is read: a program's tags carry their program (`Program:Main.Speed`); an OPC UA node its NodeId (`ns=2;s=Speed`). */
  name: string
  /**
   * EtherNet/IP: `DINT`, `REAL`, `STRING`, `structure 0x2e9` (a user-defined type), or `PROGRAM` (a program: browse it in turn).
   * OPC UA: a variable's data type (`Double`, `Int32`, or the DataType's NodeId when it is not built in),
   * `Object` (browse it in turn) or `Method`.
   */
  type: string
  /** Array dimensions; empty for a scalar (or an OPC UA array whose dimensions the server leaves open). */
  dimensions: number[]
  /** OPC UA: the node's display name. */
  displayName?: string
}

/** Makes a fresh plugin instance for one device. */
export type PluginFactory = () => ProtocolPlugin

const registry = new Map<string, PluginFactory>()

/**
 * Registers a plugin under a URL scheme, e.g. `registerPlugin('acme', () => new AcmePlugin())`
 * makes `connect('acme://...')` use it. Registering a scheme again replaces the earlier plugin.
 *
 * @param scheme - the URL scheme without `://`
 * @param factory - makes one plugin instance per connected device
 */
export function registerPlugin(scheme: string, factory: PluginFactory): void {
  registry.set(scheme.toLowerCase(), factory)
}

/** The factory registered for `scheme`, if any. @internal */
export function pluginFor(scheme: string): PluginFactory | undefined {
  return registry.get(scheme.toLowerCase())
}

/** The URL schemes that have a plugin. */
export function registeredSchemes(): string[] {
  return [...registry.keys()].sort()
}
