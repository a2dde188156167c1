/**
 * The gateway API: many devices, each polled on its own interval, with every
 * timer, phase, overrun, deadband and health figure kept in Rust. JavaScript
 * runs once per delivered batch, not once per device.
 * @packageDocumentation
 */

import type { BindingPoller } from '../index.js'
import { Device, NativePlan, checkMs, columnarReads } from './device.js'
import type { PreparedRead } from './device.js'
import { BifrostError, asBifrostError } from './errors.js'
import { native } from './native.js'
import type { ColumnarData, TagResult } from './plugin.js'

/**
 * Report-by-exception: a tag is delivered when its quality changes or any of
 * its values moved by more than the deadband from the value last delivered.
 */
export interface Deadband {
  /** `absolute`: in the tag's units; `percent`: a percentage of the value last delivered. */
  type: 'absolute' | 'percent'
  /** A finite number of at least 0; 0 delivers every change. */
  value: number
}

/** Settings of {@link createPoller}. */
export interface PollerOptions {
  /** The interval of reads added without one, in milliseconds (1 to {@link MAX_MS}). Default 1000. */
  intervalMs?: number
  /** The shortest time between two batches, in milliseconds (0 to {@link MAX_MS}): polls finished meanwhile share the next batch. Default 100. */
  batchMs?: number
  /** Finished polls held for a consumer that falls behind (1 to 10,000,000); beyond it the oldest are dropped and counted. Default 10,000. */
  maxPending?: number
}

/** Settings of one scheduled read, {@link Poller.add}. */
export interface PollOptions {
  /** Milliseconds from one poll's tick to the next (1 to {@link MAX_MS}). Default: the poller's `intervalMs`. */
  intervalMs?: number
  /** Deliver only the tags that changed. */
  deadband?: Deadband
  /** Milliseconds one poll may take; default the device's `request-timeout`. */
  timeout?: number
}

/** Names one scheduled read of a poller. */
export type PollHandle = number

/** One finished poll in a batch: its read's columns, and what was read. */
export interface PollEntry extends ColumnarData {
  /** The device polled. */
  device: Device
  /** The read's handle, as {@link Poller.add} returned it. */
  handle: PollHandle
  /** The tags delivered, in the order of the columns: all of the read's tags, or under a deadband those that changed. */
  tags: readonly string[]
  /** Under a deadband: the delivered tags' positions in the tags given to {@link Poller.add}; otherwise undefined. */
  indices: Uint32Array | undefined
}

/** How one scheduled read is doing, {@link Poller.health}. */
export interface PollHealth {
  /** The device polled. */
  device: Device
  /** The read's handle. */
  handle: PollHandle
  /** From its last poll: `waiting` (none finished yet), `good`, `partial` (some tags failed) or `failed` (every tag failed). */
  state: 'waiting' | 'good' | 'partial' | 'failed'
  /** The first error of the last poll that had one. */
  lastError?: BifrostError
  /** Polls finished. */
  polls: number
  /** Polls in which at least one tag failed. */
  failures: number
  /** Ticks skipped, never queued: the poll before was still running, or the thread was busy past a whole interval. */
  overruns: number
  /** Polls that finished after their next tick was due. */
  late: number
  /** Finished polls dropped unread because the consumer fell behind. */
  drops: number
  /** Latency of the recent polls (up to 32), in milliseconds; absent before the first. */
  latencyMs?: LatencyPercentiles
}

/** Percentiles of recent latencies, in milliseconds. */
export interface LatencyPercentiles {
  /** The median. */
  p50: number
  /** The 90th percentile. */
  p90: number
  /** The 99th percentile. */
  p99: number
}

interface Scheduled {
  device: Device
  tags: readonly string[]
  /** Set for a plugin's read, which the TypeScript side starts. */
  plan?: PreparedRead
  timeout?: number
  /** Set for a typed read (`Device.watch`): read with `readTags`, its results kept here by poll number. */
  typed?: { polls: number; results: Map<number, TagResult[]> }
}

/** A poll of a typed read: its results as `readTags` gives them. @internal */
export interface TypedPollEntry extends PollEntry {
  results: TagResult[]
}

const MAX_PENDING = 10_000_000

/**
 * Polls many devices, each read on its own interval, and yields batches: every
 * poll finished since the last batch, as columns. Make one with {@link createPoller}.
 *
 * @example
 * ```ts
 * const poller = createPoller({ intervalMs: 1000 })
 * poller.add(device, ['holding-register:0:INT', 'holding-register:1:REAL'])
 * for await (const batch of poller) {
 *   for (const entry of batch) console.log(entry.device.url, entry.tags, entry.values)
 * }
 * ```
 */
export class Poller implements AsyncIterable<PollEntry[]> {
  private readonly binding: BindingPoller
  private readonly scheduled = new Map<PollHandle, Scheduled>()
  private readonly intervalMs: number
  private closed = false

  /** @internal */
  constructor(options: PollerOptions = {}) {
    this.intervalMs = options.intervalMs === undefined ? 1000 : checkMs('intervalMs', options.intervalMs)
    const batchMs = options.batchMs === 0 ? 0 : checkMs('batchMs', options.batchMs ?? 100)
    const maxPending = options.maxPending ?? 10_000
    if (!Number.isInteger(maxPending) || maxPending < 1 || maxPending > MAX_PENDING) {
      throw new BifrostError('EINVAL', `maxPending must be a whole number from 1 to ${MAX_PENDING}, not ${String(maxPending)}`)
    }
    this.binding = new native.BindingPoller(batchMs, maxPending, (handles) => this.startPluginReads(handles))
  }

  /**
   * Schedules a read of `tags` on `device` every `intervalMs`. Its first poll is
   * placed within the first interval, so reads added together spread out.
   * @param device - a connected device, of any protocol
   * @param tags - numeric tag addresses, prepared once
   * @param options - the interval, a deadband and a per-poll timeout
   * @returns the read's handle
   * @throws {@link BifrostError} `EINVAL` for a bad option or a closed poller, `EADDRESS` for a bad tag, `ECLOSED` for a closed device
   */
  add(device: Device, tags: string[], options: PollOptions = {}): PollHandle {
    if (this.closed) throw new BifrostError('ECLOSED', 'the poller was closed')
    if (!(device instanceof Device)) throw new BifrostError('EINVAL', 'add takes a device made by connect()')
    if (!Array.isArray(tags) || tags.length === 0 || !tags.every((t) => typeof t === 'string')) {
      throw new BifrostError('EINVAL', 'tags must be a non-empty array of tag addresses')
    }
    const intervalMs = options.intervalMs === undefined ? this.intervalMs : checkMs('intervalMs', options.intervalMs)
    const timeout = options.timeout === undefined ? undefined : checkMs('timeout', options.timeout)
    const { deadband } = options
    if (deadband !== undefined && (typeof deadband !== 'object' || deadband === null)) {
      throw new BifrostError('EINVAL', "deadband must be { type: 'absolute' | 'percent', value }")
    }
    const plan = device.prepare(tags)
    const handle =
      plan.plan instanceof NativePlan
        ? this.binding.add(plan.plan.binding, intervalMs, timeout, deadband?.type, deadband?.value)
        : this.binding.addExternal(intervalMs, timeout, deadband?.type, deadband?.value)
    if (handle instanceof Error) throw handle
    this.scheduled.set(handle, { device, tags: plan.tags, timeout, ...(plan.plan instanceof NativePlan ? {} : { plan }) })
    return handle
  }

  /**
   * Schedules a read of `tags` through `device.readTags`, for `Device.watch`:
   * typed values (booleans, bigints, strings), timed by the poller. Its entries
   * carry `results`; their columns only number the polls.
   * @internal
   */
  addTyped(device: Device, tags: string[], intervalMs: number): PollHandle {
    const handle = this.binding.addExternal(intervalMs, undefined, undefined, undefined)
    if (handle instanceof Error) throw handle
    this.scheduled.set(handle, { device, tags: [...tags], typed: { polls: 0, results: new Map() } })
    return handle
  }

  /**
   * Stops a scheduled read. Its polls not yet delivered are dropped.
   * @returns false when the handle is not (or no longer) scheduled
   */
  remove(handle: PollHandle): boolean {
    this.scheduled.delete(handle)
    return this.binding.remove(handle)
  }

  /** Reads scheduled now. */
  get size(): number {
    return this.scheduled.size
  }

  /** Finished polls dropped unread because the consumer fell behind, since the poller started. */
  get dropped(): number {
    return this.binding.dropped
  }

  /** Every scheduled read's health, in the order they were added. */
  health(): PollHealth[] {
    const out: PollHealth[] = []
    for (const h of this.binding.health()) {
      const scheduled = this.scheduled.get(h.handle)
      if (!scheduled) continue
      const health: PollHealth = {
        device: scheduled.device,
        handle: h.handle,
        state: h.state as PollHealth['state'],
        polls: h.polls,
        failures: h.failures,
        overruns: h.overruns,
        late: h.late,
        drops: h.drops,
      }
      if (h.lastError) health.lastError = h.lastError as BifrostError
      if (h.latencyMs) health.latencyMs = h.latencyMs
      out.push(health)
    }
    return out
  }

  /**
   * The next batch: every poll finished since the last one, oldest first.
   * Waits until one has finished; `undefined` once the poller is closed.
   */
  async next(): Promise<PollEntry[] | undefined> {
    const raw = await this.binding.next()
    if (raw === null || raw === undefined) return undefined
    const entries = columnarReads(raw, (handle, data, indices): PollEntry | undefined => {
      const scheduled = this.scheduled.get(handle)
      if (!scheduled) return undefined // removed after it finished
      if (scheduled.typed) return typedEntry(scheduled.typed, handle, data, scheduled)
      // One literal, one shape: thousands are made per second.
      return {
        values: data.values,
        offsets: data.offsets,
        quality: data.quality,
        errors: data.errors,
        timestamp: data.timestamp,
        device: scheduled.device,
        handle,
        tags: indices ? Array.from(indices, (i) => scheduled.tags[i]!) : scheduled.tags,
        indices,
      }
    })
    return entries.filter((entry) => entry !== undefined)
  }

  /** Stops every read and ends iteration. Polls in flight finish unobserved. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.binding.close()
    this.scheduled.clear()
  }

  /** Batches until the poller is closed; leaving the loop closes it. */
  async *[Symbol.asyncIterator](): AsyncGenerator<PollEntry[], void, undefined> {
    try {
      for (;;) {
        const batch = await this.next()
        if (batch === undefined) return
        if (batch.length > 0) yield batch
      }
    } finally {
      await this.close()
    }
  }

  /** The addon names plugin reads that are due: each reads through its plugin and reports back. */
  private startPluginReads(handles: number[]): void {
    for (const handle of handles) {
      const scheduled = this.scheduled.get(handle)
      if (scheduled?.typed) {
        this.startTypedRead(handle, scheduled, scheduled.typed)
        continue
      }
      if (!scheduled?.plan) continue
      const timeout = scheduled.timeout
      scheduled.plan
        .read(timeout === undefined ? undefined : { timeout })
        .catch((e: unknown) => failedColumns(scheduled.tags.length, asBifrostError(e)))
        .then((data) => {
          const errors: Array<[number, string, string]> = []
          for (const [index, error] of data.errors) errors.push([index, error.code, error.message])
          this.binding.completeExternal(handle, data.values, data.offsets, errors)
        })
        .catch(() => {}) // the poller was closed meanwhile
    }
  }

  /** Reads a typed poll with `readTags`; the addon gets one column numbering the poll, failed if a tag failed. */
  private startTypedRead(handle: number, scheduled: Scheduled, typed: NonNullable<Scheduled['typed']>): void {
    const poll = typed.polls++
    const tags = [...scheduled.tags]
    scheduled.device
      .readTags(tags)
      .catch((e: unknown) => {
        const error = asBifrostError(e)
        return tags.map((tag): TagResult => ({ tag, quality: 'bad', error, timestamp: Date.now() }))
      })
      .then((results) => {
        typed.results.set(poll, results)
        const failed = results.find((r) => r.error)?.error
        const errors: Array<[number, string, string]> = failed ? [[0, failed.code, failed.message]] : []
        this.binding.completeExternal(handle, Float64Array.of(poll), Uint32Array.of(0, 1), errors)
      })
      .catch(() => {}) // the poller was closed meanwhile
  }
}

/** A typed poll's entry: its results, found by the poll number its one column carries. */
function typedEntry(typed: NonNullable<Scheduled['typed']>, handle: number, data: ColumnarData, scheduled: Scheduled): TypedPollEntry | undefined {
  const poll = data.values[0]!
  const results = typed.results.get(poll)
  // Results of polls dropped unread (older numbers) go with this one.
  for (const older of typed.results.keys()) {
    if (older > poll) break
    typed.results.delete(older)
  }
  if (!results) return undefined
  return { ...data, device: scheduled.device, handle, tags: scheduled.tags, indices: undefined, results }
}

/** Every tag failed with `error`, one NaN each. */
function failedColumns(tags: number, error: BifrostError): ColumnarData {
  return {
    values: new Float64Array(tags).fill(NaN),
    offsets: Uint32Array.from({ length: tags + 1 }, (_, i) => i),
    quality: new Uint8Array(tags).fill(1),
    errors: new Map(Array.from({ length: tags }, (_, i) => [i, error])),
    timestamp: Date.now(),
  }
}

/**
 * Makes a poller: the gateway API. Add devices' reads to it, each with its own
 * interval, and iterate it for batches.
 * @param options - the default interval, the batch spacing and the bound on undelivered polls
 * @throws {@link BifrostError} `EINVAL` for a bad option
 */
export function createPoller(options: PollerOptions = {}): Poller {
  return new Poller(options)
}
