/**
 * A live subscription: the batches a device reports as its tags change, as an
 * async iterator, and the controls that change it while it runs.
 * @packageDocumentation
 */

import { checkDeadband, checkMs, checkRequestOptions, checkStrings } from './device.js'
import { BifrostError, asBifrostError } from './errors.js'
import type { Deadband } from './poller.js'
import type { RequestOptions, TagResult } from './plugin.js'

/** New settings of every tag of a running subscription ({@link Subscription.modify}). */
export interface SubscriptionChange {
  /** How often the device samples and reports, in milliseconds: a whole number from 1 to 2147483647. */
  intervalMs: number
  /** Only changes past it are reported from now; none reports every change. */
  deadband?: Deadband
}

/** What a plugin's subscription may offer beside its batches; {@link Subscription} checks the arguments first. */
export interface SubscriptionControls {
  /** Changes the interval and deadband of every tag; resolves with the interval the device granted, in milliseconds. */
  modify?(change: SubscriptionChange, options?: RequestOptions): Promise<number>
  /** Stops watching the tags; one result per tag, never rejects per tag. */
  remove?(tags: string[], options?: RequestOptions): Promise<TagResult[]>
}

/**
 * A running subscription ({@link Device.subscribe}): iterate it with
 * `for await` for one batch per notification; ending the loop (`break`,
 * `return`, a throw) deletes it on the device. While it runs,
 * {@link Subscription.modify} changes how often it reports and
 * {@link Subscription.remove} stops watching some of its tags.
 *
 * @example
 * ```ts
 * const changes = device.subscribe(['ns=2;s=Speed', 'ns=2;s=Level'], { intervalMs: 1000 })
 * for await (const batch of changes) {
 *   console.log(batch)
 *   await changes.modify({ intervalMs: 100 }) // faster from now on
 * }
 * ```
 */
export class Subscription<T> implements AsyncIterableIterator<T> {
  /** @internal */
  constructor(
    private readonly source: AsyncIterator<T>,
    private readonly controls: SubscriptionControls,
  ) {}

  /** The next batch; done once the subscription has ended. Rejects with the `BifrostError` that ended it. */
  async next(): Promise<IteratorResult<T, undefined>> {
    try {
      return (await this.source.next()) as IteratorResult<T, undefined>
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /** Ends the subscription (deleted on the device); `for await` calls it when the loop ends early. */
  async return(): Promise<IteratorResult<T, undefined>> {
    await this.source.return?.()
    return { done: true, value: undefined }
  }

  /** The subscription itself: it is iterated once. */
  [Symbol.asyncIterator](): this {
    return this
  }

  /**
   * Changes how often every tag is sampled and reported, and its deadband
   * (OPC UA: ModifySubscription, then ModifyMonitoredItems). Call it once the
   * first batch has come: until then the device may still be making the subscription.
   * @param change - the new interval and deadband
   * @param options - a timeout for the change
   * @returns the interval the device granted, in milliseconds (it may revise the one asked)
   * @throws {@link BifrostError} `EINVAL` for a bad change, before the first batch, or on a device that cannot modify a
   * subscription; `OPCUA_STATUS` when the server refuses; `ECLOSED` once the subscription has ended
   */
  async modify(change: SubscriptionChange, options?: RequestOptions): Promise<number> {
    checkMs('intervalMs', change?.intervalMs)
    checkDeadband(change.deadband)
    checkRequestOptions(options)
    if (!this.controls.modify) throw new BifrostError('EINVAL', "this device's subscriptions cannot be modified")
    try {
      return await this.controls.modify(change, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }

  /**
   * Stops watching some of the subscription's tags (OPC UA: DeleteMonitoredItems);
   * the others go on. Call it once the first batch has come.
   * @param tags - tags given to `subscribe`
   * @param options - a timeout for the removal
   * @returns one {@link TagResult} per tag: `EINVAL` for a tag the subscription does not watch (never given, or removed)
   * @throws {@link BifrostError} `EINVAL` for bad arguments or on a device that cannot remove tags from a subscription
   */
  async remove(tags: string[], options?: RequestOptions): Promise<TagResult[]> {
    checkStrings('tags', tags)
    checkRequestOptions(options)
    if (!this.controls.remove) throw new BifrostError('EINVAL', "this device's subscriptions cannot drop tags")
    try {
      return await this.controls.remove(tags, options)
    } catch (e) {
      throw asBifrostError(e)
    }
  }
}
