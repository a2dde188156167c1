/**
 * The device handle `connect` returns, the same for every protocol.
 * @packageDocumentation
 */

import type { BindingChanges, BindingColumnsWithErrors, BindingDevice, BindingIndexedError, BindingPlan, BindingSubscription } from '../index.js'
import { BifrostError, asBifrostError } from './errors.js'
import { native } from './native.js'
import { pluginFor, registeredSchemes } from './plugin.js'
import { Poller } from './poller.js'
import { Subscription } from './subscription.js'
import type { SubscriptionChange, SubscriptionControls } from './subscription.js'
import type { Deadband, TypedPollEntry } from './poller.js'
import type { ChangeColumns, ColumnarData, ConnectOptions, TranslateOptions, DeviceDescriptor, DeviceIdentity, PreparedPlan, ProtocolPlugin, RequestOptions, TagInfo, TagResult, TagValue } from './plugin.js'

/** Options of {@link Device.watch}. */
export interface WatchOptions {
  /** Milliseconds from the start of one cycle to the start of the next: a whole number from 1 to {@link MAX_MS}. Default 1000. */
  intervalMs?: number
  /** Stops the watch when aborted: no batch is yielded after it, and the loop ends at once. */
  signal?: AbortSignal
}

/** Settings of {@link Device.subscribe}. */
export interface SubscribeOptions {
  /** How often the device samples and reports, in milliseconds: a whole number from 1 to {@link MAX_MS}. Default 1000. */
  intervalMs?: number
  /** Only changes past it are reported (OPC UA: a DataChangeFilter; percent is of the node's EU range). */
  deadband?: Deadband
  /** Batches held for a consumer slower than the device; beyond them the oldest are dropped. Default 1000. */
  maxPending?: number
}

/** The longest time option, in milliseconds: what a Node timer can wait (about 24.8 days). */
export const MAX_MS = 2_147_483_647

/** Whether `value` is a usable time option: a whole number of milliseconds from 1 to {@link MAX_MS}. */
export function isMs(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_MS
}

/**
 * A time option in milliseconds, checked before use: a whole number from 1 to
 * {@link MAX_MS}. Anything else (negative, fractional, infinite, NaN, a string)
 * is an `EINVAL` naming the option, never wrapped or clamped.
 */
export function checkMs(name: string, value: unknown): number {
  if (isMs(value)) return value
  const shown = typeof value === 'string' ? `the string '${value}'` : String(value)
  throw new BifrostError('EINVAL', `${name} must be a whole number of milliseconds from 1 to ${MAX_MS}, not ${shown}`)
}

/** `value`, checked to be an array of strings; `EINVAL` naming it otherwise. @internal */
export function checkStrings(name: string, value: unknown): void {
  if (!Array.isArray(value) || value.some((item) => typeof item !== 'string')) throw new BifrostError('EINVAL', `${name} must be an array of strings`)
}

/** Each tag's first position in `tags`. */
function firstPositions(tags: readonly string[]): Map<string, number> {
  const positions = new Map<string, number>()
  tags.forEach((tag, i) => positions.has(tag) || positions.set(tag, i))
  return positions
}

/** A deadband option, checked for its shape (the addon checks its type and value). @internal */
export function checkDeadband(deadband: unknown): void {
  if (deadband !== undefined && (typeof deadband !== 'object' || deadband === null)) {
    throw new BifrostError('EINVAL', "deadband must be { type: 'absolute' | 'percent', value }")
  }
}

/** A plugin's subscription with its controls, its errors as `BifrostError`s. */
function subscriptionOf<T>(start: () => AsyncIterable<T> & SubscriptionControls): Subscription<T> {
  try {
    const iterable = start()
    return new Subscription(iterable[Symbol.asyncIterator](), iterable)
  } catch (e) {
    throw asBifrostError(e)
  }
}

/** `options.timeout`, checked when given. @internal */
export function checkRequestOptions(options: RequestOptions | undefined): void {
  if (options?.timeout !== undefined) checkMs('timeout', options.timeout)
}

/** Counters of one connection, since it was opened. */
export interface ConnectionStats {
  /** Requests written to the wire. */
  requests: number
  /** Requests that got no reply in time (on the wire or while waiting their turn). */
  timeouts: number
  /** Replies that matched no request in flight (late or unknown) and were dropped. */
  unmatched: number
  /** Successful connects, the first one included. */
  connects: number
  /** Times the link was dropped or drained to bring it back in step (after an RTU timeout, or a TCP reply stream out of step). */
  resyncs: number
  /** Times the circuit breaker opened: calls then fail fast with the last cause until a probe succeeds. */
  breakerOpens: number
  /** Requests waiting their turn now (at most `max-queued`). */
  queued: number
}

/** The `errors` of every read where no tag failed: one shared map, so a read makes none; it is read-only. */
class EmptyErrors<V> extends Map<number, V> {
  override set(): this {
    throw new TypeError('the errors of a read are read-only')
  }
  override delete(): boolean {
    throw new TypeError('the errors of a read are read-only')
  }
  override clear(): void {
    throw new TypeError('the errors of a read are read-only')
  }
}
const NO_ERRORS: Map<number, BifrostError> = new EmptyErrors()
const NO_PLAN_ERRORS: ReadonlyMap<number, ReadonlyMap<number, BifrostError>> = new EmptyErrors()

/** The addon's failed tags, grouped by the read (`entry`) they belong to. */
function errorsByEntry(errors: BindingIndexedError[]): Map<number, Map<number, BifrostError>> {
  const byEntry = new Map<number, Map<number, BifrostError>>()
  for (const { entry, index, error } of errors) {
    let failed = byEntry.get(entry)
    if (!failed) byEntry.set(entry, (failed = new Map()))
    failed.set(index, error as BifrostError)
  }
  return byEntry
}

/**
 * Walks a buffer of columnar reads (its layout is documented on
 * `BindingColumnarRead`), making one object per read with `make`, which is
 * handed views over the buffer and the read's errors.
 * @internal
 */
export function columnarReads<T>(
  raw: ArrayBuffer | BindingColumnsWithErrors,
  make: (id: number, data: ColumnarData, indices: Uint32Array | undefined) => T,
): T[] {
  const buffer = raw instanceof ArrayBuffer ? raw : raw.buffer
  const view = new DataView(buffer)
  const count = view.getUint32(0, LITTLE_ENDIAN)
  const reads: T[] = new Array(count)
  // Only reads where tags failed get a map of their own.
  const failed = raw instanceof ArrayBuffer ? undefined : errorsByEntry(raw.errors)
  let at = 8
  for (let entry = 0; entry < count; entry++) {
    const valueCount = view.getUint32(at + 8, LITTLE_ENDIAN)
    const tagCount = view.getUint32(at + 12, LITTLE_ENDIAN)
    const valuesAt = at + 24
    const offsetsAt = valuesAt + valueCount * 8
    const qualityAt = offsetsAt + (tagCount + 1) * 4
    let end = qualityAt + tagCount
    let indices: Uint32Array | undefined
    if (view.getUint32(at + 20, LITTLE_ENDIAN) === 1) {
      const indicesAt = Math.ceil(end / 4) * 4
      indices = new Uint32Array(buffer, indicesAt, tagCount)
      end = indicesAt + tagCount * 4
    }
    const errors = failed?.get(entry) ?? NO_ERRORS
    const data: ColumnarData = {
      values: new Float64Array(buffer, valuesAt, valueCount),
      offsets: new Uint32Array(buffer, offsetsAt, tagCount + 1),
      quality: new Uint8Array(buffer, qualityAt, tagCount),
      errors,
      timestamp: view.getFloat64(at, LITTLE_ENDIAN),
    }
    reads[entry] = make(view.getUint32(at + 16, LITTLE_ENDIAN), data, indices)
    at = Math.ceil(end / 8) * 8
  }
  return reads
}

const dataOf = (_id: number, data: ColumnarData) => data

/** The one read of a buffer of columnar reads. @internal */
export function toColumnarData(raw: ArrayBuffer | BindingColumnsWithErrors): ColumnarData {
  return columnarReads(raw, dataOf)[0]!
}

/** A subscription the addon runs: its batches as `convert` makes them, and its controls. */
class NativeSubscription<T> implements AsyncIterableIterator<T>, SubscriptionControls {
  private readonly binding: BindingSubscription
  /** Made by the first `remove`. */
  private positions?: Map<string, number>

  constructor(
    device: BindingDevice,
    private readonly tags: string[],
    options: SubscribeOptions,
    private readonly convert: (batch: BindingChanges) => T,
  ) {
    const { deadband } = options
    const binding = device.subscribe(tags, options.intervalMs ?? 1000, deadband?.type, deadband?.value, options.maxPending ?? 1000)
    if (binding instanceof Error) throw binding
    this.binding = binding
  }

  async next(): Promise<IteratorResult<T, undefined>> {
    const batch = await this.binding.next()
    return batch === null ? { done: true, value: undefined } : { done: false, value: this.convert(batch) }
  }

  async return(): Promise<IteratorResult<T, undefined>> {
    await this.binding.close()
    return { done: true, value: undefined }
  }

  [Symbol.asyncIterator](): this {
    return this
  }

  modify(change: SubscriptionChange, options?: RequestOptions): Promise<number> {
    return this.binding.modify(change.intervalMs, change.deadband?.type, change.deadband?.value, options?.timeout)
  }

  remove(tags: string[], options?: RequestOptions): Promise<TagResult[]> {
    // A tag not subscribed gets a position past the list: the addon answers that it is not watched.
    this.positions ??= firstPositions(this.tags)
    const positions = tags.map((tag) => this.positions!.get(tag) ?? 0xffff_ffff)
    return this.binding.remove(positions, tags, options?.timeout) as Promise<TagResult[]>
  }
}

/** A batch's columns, laid out as `BindingChanges` says. */
function changeColumns(tags: readonly string[], batch: BindingChanges): ChangeColumns {
  const { buffer } = batch
  const n = new Uint32Array(buffer, 0, 1)[0]!
  const columns = {
    values: new Float64Array(buffer, 8, n),
    timestamps: new Float64Array(buffer, 8 + 8 * n, n),
    indices: new Uint32Array(buffer, 8 + 16 * n, n),
    quality: new Uint8Array(buffer, 8 + 20 * n, n),
  }
  const kinds = new Uint8Array(buffer, 8 + 21 * n, n)
  return { ...columns, results: () => changeResults(tags, columns, kinds, batch) }
}

/** What a change's kind byte says of its value (`BindingChanges`). */
const enum ChangeKind {
  Number = 0,
  Boolean = 1,
  Other = 2,
  Failed = 3,
}

/** The changes of a batch as `TagResult`s, rebuilt from its columns. */
function changeResults(tags: readonly string[], columns: Omit<ChangeColumns, 'results'>, kinds: Uint8Array, batch: BindingChanges): TagResult[] {
  const { values, timestamps, indices } = columns
  let other = 0
  let failed = 0
  return Array.from(kinds, (kind, i): TagResult => {
    const tag = tags[indices[i]!]!
    const timestamp = timestamps[i]!
    switch (kind as ChangeKind) {
      case ChangeKind.Number:
        return { tag, quality: 'good', timestamp, value: values[i]! }
      case ChangeKind.Boolean:
        return { tag, quality: 'good', timestamp, value: values[i] === 1 }
      case ChangeKind.Other:
        return { tag, quality: 'good', timestamp, value: batch.values[other++] as TagValue }
      default:
        return { tag, quality: 'bad', timestamp, error: batch.errors[failed++] as BifrostError }
    }
  })
}

/** Columns of a plugin's `subscribe` batch, for a plugin without `subscribeColumns`. */
function columnsOf(positions: Map<string, number>, results: TagResult[]): ChangeColumns {
  const n = results.length
  const columns = { values: new Float64Array(n), timestamps: new Float64Array(n), indices: new Uint32Array(n), quality: new Uint8Array(n) }
  results.forEach((result, i) => {
    const { value } = result
    columns.values[i] = typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint' ? Number(value) : NaN
    columns.timestamps[i] = result.timestamp
    columns.indices[i] = positions.get(result.tag) ?? 0
    columns.quality[i] = result.quality === 'good' ? 0 : 1
  })
  return { ...columns, results: () => results }
}

/** The addon writes numbers in platform byte order. */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1

/** A plan the addon prepared. @internal */
export class NativePlan implements PreparedPlan {
  constructor(
    /** The addon's plan. */
    readonly binding: BindingPlan,
  ) {}

  read(options?: RequestOptions): Promise<ColumnarData> {
    return this.binding.read(options?.timeout).then(toColumnarData)
  }
}

/**
 * The plugin of every protocol the native addon speaks (Modbus today): the
 * addon parses, plans, runs and settles each call; this class only passes it on.
 */
export class NativePlugin implements ProtocolPlugin {
  /** The addon's device, once connected. @internal */
  binding?: BindingDevice

  private open(): BindingDevice {
    if (!this.binding) throw new BifrostError('ECLOSED', 'the device is not connected')
    return this.binding
  }

  /** Opens the connection. */
  async connect(device: DeviceDescriptor): Promise<void> {
    this.binding = await native.connect(device.url, device.options)
  }

  /** Reads the tags in one planned, pipelined batch. */
  readTags(tags: string[], options?: RequestOptions): Promise<TagResult[]> {
    return this.open().readTags(tags, options?.timeout) as Promise<TagResult[]>
  }

  /** Writes the values; all requests are queued before any reply is awaited. */
  writeTags(values: Array<[string, TagValue]>, options?: RequestOptions): Promise<TagResult[]> {
    return this.open().writeTags(values, options?.timeout) as Promise<TagResult[]>
  }

  /** Lists the device's tags, in Rust. */
  browse(from?: string, options?: RequestOptions): Promise<TagInfo[]> {
    return this.open().browse(from, options?.timeout) as Promise<TagInfo[]>
  }

  /** Follows browse paths, in Rust. */
  translate(paths: string[], options?: TranslateOptions): Promise<TagResult[]> {
    return this.open().translate(paths, options?.from, options?.timeout) as Promise<TagResult[]>
  }

  /** Reads the device's identity, in Rust. */
  identity(options?: RequestOptions): Promise<DeviceIdentity> {
    return this.open().identity(options?.timeout) as Promise<DeviceIdentity>
  }

  /** Subscribes, in Rust: the device reports changes, batch by batch. */
  subscribe(tags: string[], options: SubscribeOptions): AsyncIterable<TagResult[]> & SubscriptionControls {
    return new NativeSubscription(this.open(), tags, options, (batch) => changeColumns(tags, batch).results())
  }

  /** As `subscribe`, each batch as columns the addon wrote in one buffer. */
  subscribeColumns(tags: string[], options: SubscribeOptions): AsyncIterable<ChangeColumns> & SubscriptionControls {
    return new NativeSubscription(this.open(), tags, options, (batch) => changeColumns(tags, batch))
  }

  /** Calls a method, in Rust. */
  call(objectId: string, methodId: string, args: TagValue[], options?: RequestOptions): Promise<TagValue[]> {
    return this.open().call(objectId, methodId, args, options?.timeout) as Promise<TagValue[]>
  }

  /** Parses and plans the tags once, in Rust. */
  prepare(tags: string[]): PreparedPlan {
    const plan = this.open().prepare(tags)
    if (plan instanceof Error) throw plan
    return new NativePlan(plan)
  }

  /** The connection's counters. */
  stats(): ConnectionStats {
    return this.open().stats()
  }

  /** Closes the connection; calls waiting or in flight fail with `ECLOSED`. */
  async disconnect(): Promise<void> {
    await this.binding?.close()
  }
}

/** A prepared read plan: tags parsed and planned once. */
export class PreparedRead {
  /** @internal */
  constructor(
    /** The tags of the plan, in order. */
    readonly tags: readonly string[],
    /** The plugin's plan. @internal */
    readonly plan: PreparedPlan,
    /** The device the plan reads. */
    readonly device: Device,
  ) {}

  /**
   * How many values every read yields (an array tag gives its element count),
   * which is how many numbers {@link readPlansInto} writes for this plan.
   * `undefined` for a plan of a TypeScript plugin's device.
   */
  get valueCount(): number | undefined {
    return this.plan instanceof NativePlan ? this.plan.binding.valueCount : undefined
  }

  /**
   * Reads every tag with one call. Failed tags have quality 1 and an entry in `errors`.
   * @param options - a timeout for this read
   */
  read(options?: RequestOptions): Promise<ColumnarData> {
    try {
      checkRequestOptions(options)
    } catch (e) {
      return Promise.reject(e)
    }
    return this.plan.read(options)
  }
}

/**
 * Reads many prepared plans, of any devices, with one call: one promise for
 * all of them, and for native devices one crossing into the addon. The results
 * come in the order of `plans`; a failed tag fails alone, in `quality` and
 * `errors`, as in {@link PreparedRead.read}.
 *
 * @param plans - plans made by {@link Device.prepare}
 * @param options - a timeout for each plan's read
 * @throws {@link BifrostError} `EINVAL` when `plans` is not an array of prepared plans, or for a bad timeout
 */
export function readPlans(plans: readonly PreparedRead[], options?: RequestOptions): Promise<ColumnarData[]> {
  try {
    checkRequestOptions(options)
    if (!Array.isArray(plans) || !plans.every((p) => p instanceof PreparedRead)) {
      throw new BifrostError('EINVAL', 'readPlans takes an array of plans made by device.prepare()')
    }
  } catch (e) {
    return Promise.reject(e)
  }
  const bindings: BindingPlan[] = []
  for (const { plan } of plans) if (plan instanceof NativePlan) bindings.push(plan.binding)
  // The addon writes reads as they finish, each named by its position.
  const nativeReads = native.readPlans(bindings, options?.timeout).then((raw) => {
    const inOrder: ColumnarData[] = new Array(bindings.length)
    columnarReads(raw, (position, data) => (inOrder[position] = data))
    return inOrder
  })
  if (bindings.length === plans.length) return nativeReads
  // Plugins' plans read through their plugins, beside the one native call.
  return Promise.all([nativeReads, Promise.all(plans.map((p) => (p.plan instanceof NativePlan ? undefined : p.read(options))))]).then(
    ([fromAddon, fromPlugins]) => {
      let next = 0
      return fromPlugins.map((data) => data ?? fromAddon[next++]!)
    },
  )
}

/** What {@link readPlansInto} settles with. */
export interface PlansRead {
  /** When the last read finished, in milliseconds since the epoch. */
  timestamp: number
  /**
   * The failed tags: plan position, then tag index, to the error. Empty (and
   * shared, read-only) when every tag of every plan was read.
   */
  errors: ReadonlyMap<number, ReadonlyMap<number, BifrostError>>
}

/**
 * Reads many prepared plans, of any devices, into one `Float64Array` with one
 * call: plan `i`'s values follow those of plans `0` to `i - 1`, each plan taking
 * its {@link PreparedRead.valueCount} numbers, in the order of its columns.
 * Nothing is allocated per plan, so a gateway reading the same plans in a loop
 * can reuse one array; each call overwrites it when the last read finishes.
 * A failed tag's values are NaN and it has an entry in `errors`.
 *
 * Plans of TypeScript plugins' devices are not accepted (their value counts are
 * known only once read): read those with {@link readPlans}.
 *
 * @param plans - plans made by {@link Device.prepare} on native devices
 * @param values - receives the values; at least the plans' summed `valueCount` long
 * @param options - a timeout for each plan's read
 * @throws {@link BifrostError} `EINVAL` when `plans` holds anything but native prepared plans,
 *   when `values` is not a Float64Array or is too short, or for a bad timeout
 */
export function readPlansInto(plans: readonly PreparedRead[], values: Float64Array, options?: RequestOptions): Promise<PlansRead> {
  try {
    checkRequestOptions(options)
    if (!Array.isArray(plans) || !plans.every((p) => p instanceof PreparedRead && p.plan instanceof NativePlan)) {
      throw new BifrostError('EINVAL', 'readPlansInto takes an array of plans made by device.prepare() on native devices')
    }
  } catch (e) {
    return Promise.reject(e)
  }
  const bindings = plans.map((p) => (p.plan as NativePlan).binding)
  return native.readPlansInto(bindings, values, options?.timeout).then(({ timestamp, errors }) => {
    return { timestamp, errors: errors.length === 0 ? NO_PLAN_ERRORS : errorsByEntry(errors) }
  })
}

/**
 * The value of tag `index` in a columnar result: a number for scalar tags, an
 * array for array tags.
 *
 * @param data - a result of {@link PreparedRead.read}
 * @param index - the tag's position in the plan
 */
export function columnValue(data: ColumnarData, index: number): number | number[] {
  const start = data.offsets[index]
  const end = data.offsets[index + 1]
  if (start === undefined || end === undefined) throw new BifrostError('EINVAL', `no tag at index ${index}`)
  return end - start === 1 ? data.values[start]! : Array.from(data.values.subarray(start, end))
}

/** Options as the URL's query keys: kebab-case names, text values. @internal */
export function urlOptions(options: ConnectOptions): Record<string, string> {
  const keys: Record<string, string> = {}
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) keys[key.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase())] = String(value)
  }
  return keys
}

/** A connected device. Every protocol offers the same methods. */
export class Device {
  private closed = false
  /** Aborted by {@link Device.close}, so a running `watch` ends at once. Made by the first watch: gateways hold thousands of devices, and an AbortController costs kilobytes. */
  private closing?: AbortController

  /** The addon's device when the plugin is native: reads go to it without a detour. */
  private readonly binding?: BindingDevice

  /** @internal */
  constructor(
    /** The URL the device was connected with. */
    readonly url: string,
    private readonly plugin: ProtocolPlugin,
  ) {
    if (plugin instanceof NativePlugin) this.binding = plugin.binding
  }

  private checkOpen(): void {
    if (this.closed) throw new BifrostError('ECLOSED', 'the device was closed')
  }

  /**
   * Reads one tag.
   * @param tag - a tag address, e.g. `holding-register:100:REAL{byte-order: CDAB}`
   * @param options - a timeout for this read
   * @returns the value
   * @throws {@link BifrostError} when the read fails
   */
  read(tag: string, options?: RequestOptions): Promise<TagValue> {
    // The common case goes straight to the addon: a pending read is then one promise and one queue entry.
    const binding = this.binding
    if (binding && !this.closed && typeof tag === 'string') {
      const timeout = options?.timeout
      if (timeout === undefined) return binding.read(tag) as Promise<TagValue>
      if (isMs(timeout)) return binding.read(tag, timeout) as Promise<TagValue>
    }
    return this.readThroughPlugin(tag, options)
  }

  private async readThroughPlugin(tag: string, options?: RequestOptions): Promise<TagValue> {
    const [result] = await this.readTags([tag], options)
    if (!result || result.error) throw result?.error ?? new BifrostError('EPROTO', 'no result')
    return result.value as TagValue
  }

  /**
   * Reads many tags in one planned, pipelined batch.
   * @param tags - tag addresses
   * @param options - a timeout for this read
   * @returns one result per tag, in the same order; never throws per tag
   */
  async readTags(tags: string[], options?: RequestOptions): Promise<TagResult[]> {
    this.checkOpen()
    if (!Array.isArray(tags)) throw new BifrostError('EINVAL', 'readTags takes an array of tag addresses')
    checkRequestOptions(options)
    try {
      return await this.plugin.readTags(tags, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Writes one tag.
   * @param tag - a tag address
   * @param value - the value: boolean, number, bigint, string, or an array for array tags
   * @param options - a timeout for this write
   * @throws {@link BifrostError} when the write fails
   */
  async write(tag: string, value: TagValue, options?: RequestOptions): Promise<void> {
    const [result] = await this.writeTags([[tag, value]], options)
    if (!result || result.error) throw result?.error ?? new BifrostError('EPROTO', 'no result')
  }

  /**
   * Writes many tags; all requests are queued before any reply is awaited.
   * @param values - tag addresses and their values, as an object or as pairs
   * @param options - a timeout for this write
   * @returns one result per tag, in order; never throws per tag
   */
  async writeTags(
    values: Record<string, TagValue> | Array<[string, TagValue]>,
    options?: RequestOptions,
  ): Promise<TagResult[]> {
    this.checkOpen()
    checkRequestOptions(options)
    const pairs = Array.isArray(values) ? values : Object.entries(values)
    try {
      return await this.plugin.writeTags(pairs, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Lists the device's tags with their types and array dimensions (EtherNet/IP:
   * the controller's tags and its programs, or one program's tags with
   * `browse('Program:Main')`).
   * @param from - a program to list, for EtherNet/IP
   * @param options - a timeout for the whole listing
   * @throws {@link BifrostError} `EINVAL` when the device's protocol cannot list its tags, `EADDRESS` for a bad `from`
   */
  async browse(from?: string, options?: RequestOptions): Promise<TagInfo[]> {
    checkRequestOptions(options)
    if (!this.plugin.browse) throw new BifrostError('EINVAL', 'this device cannot list its tags: its plugin has no browse()')
    try {
      return await this.plugin.browse(from, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Follows browse paths to the tags at their ends (OPC UA:
   * TranslateBrowsePathsToNodeIds, split to the server's limit), one result per
   * path, its value the tag's NodeId text. A path is written as Part 4, A.2
   * writes it: steps of `/` (hierarchical references) or `.` (aggregates), each
   * with a browse name `[namespace index:]name` in which `&` escapes `/.<>:#!&`,
   * e.g. `/Objects/2:Line1/2:Speed`, from RootFolder unless `options.from` says otherwise.
   * @param paths - the browse paths
   * @param options - where they start, and a timeout
   * @returns one {@link TagResult} per path, `tag` the path: a path that leads nowhere is `OPCUA_STATUS`
   * (`BadNoMatch`), a malformed one `EADDRESS`; a protocol without browse paths fails each with `EINVAL`
   */
  async translate(paths: string[], options?: TranslateOptions): Promise<TagResult[]> {
    this.checkOpen()
    checkRequestOptions(options)
    checkStrings('paths', paths)
    if (!this.plugin.translate) throw new BifrostError('EINVAL', 'this device has no browse paths: its plugin has no translate()')
    try {
      return await this.plugin.translate(paths, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Who the device says it is (EtherNet/IP: the Identity object's attributes,
   * read with Get Attributes All).
   * @param options - a timeout for the read
   * @throws {@link BifrostError} `EINVAL` when the device's protocol cannot tell its identity
   */
  async identity(options?: RequestOptions): Promise<DeviceIdentity> {
    this.checkOpen()
    checkRequestOptions(options)
    if (!this.plugin.identity) throw new BifrostError('EINVAL', 'this device cannot tell its identity: its plugin has no identity()')
    try {
      return await this.plugin.identity(options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Subscribes to the tags: the device watches them and reports what changed,
   * one batch per notification (OPC UA: per Publish response), each a
   * {@link TagResult} per change with the device's own timestamp. Ending the
   * loop (`break`, `return`, a throw) deletes the subscription and its
   * monitored items on the device. Closing the device ends the loop. The
   * subscription is made at once; its first batch has every tag's value (or error).
   * @param tags - the tags to watch
   * @param options - the interval, a deadband and how many batches a slow consumer may leave unread
   * @returns the running subscription: iterate it, and {@link Subscription.modify} or {@link Subscription.remove} it as it runs
   * @throws {@link BifrostError} `EINVAL` for bad options or a protocol without subscriptions (poll it with {@link createPoller});
   * its batches reject with `ECONNRESET` when the connection breaks
   */
  subscribe(tags: string[], options: SubscribeOptions = {}): Subscription<TagResult[]> {
    const plugin = this.subscribable(tags, options)
    return subscriptionOf(() => plugin.subscribe(tags, options))
  }

  /**
   * As {@link Device.subscribe}, each batch as columns: typed arrays of the
   * changes' values, timestamps, tag positions and qualities, with no object
   * per change until {@link ChangeColumns.results} is called. For many
   * monitored items.
   * @param tags - the tags to watch; `indices` are positions in this list
   * @param options - as for {@link Device.subscribe}
   * @throws {@link BifrostError} as {@link Device.subscribe}
   */
  subscribeColumns(tags: string[], options: SubscribeOptions = {}): Subscription<ChangeColumns> {
    const plugin = this.subscribable(tags, options)
    if (plugin.subscribeColumns) return subscriptionOf(() => plugin.subscribeColumns!(tags, options))
    const results = subscriptionOf(() => plugin.subscribe(tags, options))
    const positions = firstPositions(tags)
    const columns = (async function* () {
      for await (const batch of results) yield columnsOf(positions, batch)
    })()
    return new Subscription(columns, results)
  }

  /** The plugin, once the subscription's arguments are checked. */
  private subscribable(tags: string[], options: SubscribeOptions): ProtocolPlugin & Required<Pick<ProtocolPlugin, 'subscribe'>> {
    this.checkOpen()
    checkStrings('tags', tags)
    if (options.intervalMs !== undefined) checkMs('intervalMs', options.intervalMs)
    checkDeadband(options.deadband)
    const { maxPending } = options
    if (maxPending !== undefined && !(Number.isInteger(maxPending) && maxPending >= 1 && maxPending <= 1_000_000)) {
      throw new BifrostError('EINVAL', `maxPending must be a whole number from 1 to 1000000, not ${String(maxPending)}`)
    }
    const { plugin } = this
    if (!plugin.subscribe) throw new BifrostError('EINVAL', 'this device has no subscriptions: poll it (createPoller)')
    return plugin as ProtocolPlugin & Required<Pick<ProtocolPlugin, 'subscribe'>>
  }


  /**
   * Calls a method of an object (OPC UA: both as NodeIds) and returns its output
   * arguments. Each argument takes the type the method's InputArguments give it;
   * a JavaScript number for an argument of no declared type goes as a Double.
   * @param objectId - the object the method belongs to, e.g. `ns=2;s=Line1`
   * @param methodId - the method, e.g. `ns=2;s=Line1.Reset`
   * @param args - the input arguments, in order
   * @param options - a timeout for the call
   * @throws {@link BifrostError} `OPCUA_STATUS` when the server refuses the call (`BadMethodInvalid`, `BadInvalidArgument`, ...),
   * `EINVAL` for arguments that do not fit the method or a protocol without methods, `EADDRESS` for a bad NodeId
   */
  async call(objectId: string, methodId: string, args: TagValue[] = [], options?: RequestOptions): Promise<TagValue[]> {
    this.checkOpen()
    checkRequestOptions(options)
    if (!Array.isArray(args)) throw new BifrostError('EINVAL', 'args must be an array of argument values')
    if (!this.plugin.call) throw new BifrostError('EINVAL', 'this device has no methods to call: its plugin has no call()')
    try {
      return await this.plugin.call(objectId, methodId, args, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Parses and plans the tags once. Each `read()` of the result is one call
   * that returns typed arrays.
   * @param tags - numeric tag addresses (STRING tags cannot be prepared)
   * @throws {@link BifrostError} `EADDRESS` for a bad address
   */
  prepare(tags: string[]): PreparedRead {
    this.checkOpen()
    if (this.plugin.prepare) return new PreparedRead([...tags], this.plugin.prepare(tags), this)
    return new PreparedRead([...tags], { read: (options) => this.columnsFromTags(tags, options) }, this)
  }

  /** Columnar results for plugins without a native `prepare`. */
  private async columnsFromTags(tags: string[], options?: RequestOptions): Promise<ColumnarData> {
    const results = await this.readTags(tags, options)
    const values: number[] = []
    const offsets = new Uint32Array(tags.length + 1)
    const quality = new Uint8Array(tags.length)
    const errors = new Map<number, BifrostError>()
    results.forEach((r, i) => {
      const items = Array.isArray(r.value) ? r.value : [r.value]
      if (r.error) {
        quality[i] = 1
        errors.set(i, r.error)
        values.push(NaN)
      } else {
        for (const v of items) values.push(Number(v))
      }
      offsets[i + 1] = values.length
    })
    return { values: Float64Array.from(values), offsets, quality, errors, timestamp: Date.now() }
  }

  /**
   * Polls the tags, one batch per cycle, as an async iterator. A cycle that
   * falls behind is skipped, never queued. Leave the loop, abort `signal` or
   * close the device to stop: the loop then ends at once, yielding nothing more,
   * even while a read is in flight.
   * @param tags - tag addresses
   * @param options - the polling interval and an abort signal
   * @throws {@link BifrostError} `EINVAL` for an interval that is not a whole number from 1 to {@link MAX_MS}
   */
  async *watch(tags: string[], options: WatchOptions = {}): AsyncGenerator<TagResult[], void, undefined> {
    const interval = options.intervalMs === undefined ? 1000 : checkMs('intervalMs', options.intervalMs)
    this.checkOpen()
    this.closing ??= new AbortController()
    const stop = options.signal ? AbortSignal.any([options.signal, this.closing.signal]) : this.closing.signal
    if (stop.aborted) return
    // A thin layer over a poller of its own: the timing, skipped cycles included, is the poller's.
    const poller = new Poller({ batchMs: 0 })
    poller.addTyped(this, tags, interval)
    const onStop = () => void poller.close()
    stop.addEventListener('abort', onStop, { once: true })
    try {
      for (;;) {
        const batch = await poller.next()
        if (batch === undefined || stop.aborted) return
        for (const entry of batch) {
          yield (entry as TypedPollEntry).results
          if (stop.aborted) return
        }
      }
    } finally {
      stop.removeEventListener('abort', onStop)
      await poller.close()
    }
  }

  /** The connection's counters, for plugins that keep them (every native protocol does). */
  stats(): ConnectionStats | undefined {
    const plugin = this.plugin as ProtocolPlugin & { stats?: () => ConnectionStats }
    return plugin.stats?.()
  }

  /** Closes the connection. Requests still in flight fail with `ECLOSED`. */
  close(): Promise<void> {
    if (this.closed) return Promise.resolve()
    this.closed = true
    this.closing?.abort()
    // A native device's close is the addon's promise itself: a gateway closing thousands makes no more.
    if (this.binding && this.plugin.disconnect === NativePlugin.prototype.disconnect) return this.binding.close() as Promise<void>
    return this.closeThroughPlugin()
  }

  private async closeThroughPlugin(): Promise<void> {
    await this.plugin.disconnect()
  }
}

/**
 * Connects to a device by URL, e.g.
 * `modbus-tcp://10.0.0.5:502?unit-id=1&request-timeout=1000&max-in-flight=8`.
 *
 * @param url - the device URL; its scheme picks the protocol plugin
 * @param options - settings that override the URL's query
 * @throws {@link BifrostError} `EADDRESS` for a bad URL or unknown scheme, or the connection error
 */
export function connect(url: string, options: ConnectOptions = {}): Promise<Device> {
  const match = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)
  if (!match) return Promise.reject(new BifrostError('EADDRESS', `'${url}' is not a device URL (scheme://...)`))
  const scheme = match[1]!.toLowerCase()
  const factory = pluginFor(scheme)
  if (!factory) {
    return Promise.reject(new BifrostError('EADDRESS', `no plugin for '${scheme}://' (known: ${registeredSchemes().join(', ')})`))
  }
  const kebabOptions = urlOptions(options)
  const plugin = factory()
  // A native plugin connects through the addon's promise alone (its errors are BifrostErrors):
  // a gateway opening thousands of devices makes no more promises than that.
  if (plugin instanceof NativePlugin && plugin.connect === NativePlugin.prototype.connect) {
    return native.connect(url, kebabOptions).then((binding) => {
      plugin.binding = binding
      return new Device(url, plugin)
    })
  }
  return connectThroughPlugin(url, plugin, { url, scheme, options: kebabOptions })
}

async function connectThroughPlugin(url: string, plugin: ProtocolPlugin, device: DeviceDescriptor): Promise<Device> {
  try {
    await plugin.connect(device)
  } catch (e) {
    throw asBifrostError(e)
  }
  return new Device(url, plugin)
}
