/**
 * Modbus (TCP, RTU over TCP, RTU over a serial line) through the native addon,
 * and the in-process Modbus simulator.
 * @packageDocumentation
 */

import type { BindingReplyDecoder } from '../index.js'
import { NativePlugin, toColumnarData } from './device.js'
import { BifrostError, asBifrostError } from './errors.js'
import { native } from './native.js'
import { registerPlugin } from './plugin.js'
import type { ColumnarData } from './plugin.js'
import { startServer } from './simulator.js'
import type { ServerOptions, Simulator } from './simulator.js'

export type { ConnectionStats } from './device.js'

/** URL schemes served by {@link ModbusPlugin}. */
export const MODBUS_SCHEMES = ['modbus-tcp', 'modbus-rtu-tcp', 'modbus-rtu'] as const

/** The Modbus protocol plugin; registered for `modbus-tcp://`, `modbus-rtu-tcp://` and `modbus-rtu://`. */
export class ModbusPlugin extends NativePlugin {}

/**
 * Decodes tags out of Modbus TCP read replies that reached you by another path
 * (a capture, a gateway's own transport), with the same Rust codec a device
 * read uses, on the calling thread.
 *
 * @example
 * ```ts
 * const decoder = new ReplyDecoder(['holding-register:0:UINT', 'holding-register:1:REAL{byte-order: CDAB}'], 0)
 * const { values } = decoder.decode(frame) // frame: MBAP header + FC3 reply
 * ```
 */
export class ReplyDecoder {
  private readonly native: BindingReplyDecoder
  /** Where {@link ReplyDecoder.decodeMany} lays an array of frames back to back; grown as needed, reused. */
  private joined = new Uint8Array(0)

  /**
   * @param tags - numeric tags, all in one table, with their real addresses
   * @param start - the first address the replies answer (a reply does not carry it)
   * @throws {@link BifrostError} `EADDRESS` for a bad tag or start, mixed tables, a STRING tag or a tag before `start`; `EINVAL` when `tags` is not an array of strings
   */
  constructor(tags: string[], start: number) {
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw new BifrostError('EINVAL', 'tags must be an array of tag strings')
    if (!Number.isInteger(start) || start < 0 || start > 65535) throw new BifrostError('EADDRESS', `start must be an address from 0 to 65535, not ${start}`)
    const made = native.createReplyDecoder(tags, start)
    if (made instanceof Error) throw made
    this.native = made
  }

  /**
   * Decodes one whole frame: MBAP header and a reply to the tags' read function.
   * A tag beyond the reply's end fails alone, in `quality` and `errors`.
   * @throws {@link BifrostError} `EPROTO` for a truncated or foreign frame, `MODBUS_EXCEPTION` for an exception reply, `EINVAL` when `frame` is not bytes
   */
  decode(frame: Uint8Array): ColumnarData {
    if (!(frame instanceof Uint8Array)) throw new BifrostError('EINVAL', 'the frame must be a Uint8Array or Buffer')
    const decoded = this.native.decode(frame)
    if (decoded instanceof Error) throw decoded
    return toColumnarData(decoded)
  }

  /** Element values one decode yields: the length `values` needs in {@link ReplyDecoder.decodeInto}. */
  get valueCount(): number {
    return this.native.valueCount
  }

  /**
   * Decodes one frame straight into `values`, element values of every tag back
   * to back (as in {@link ColumnarData.values}), creating no objects: for
   * decoding at high rates. Failed tags are NaN; {@link ReplyDecoder.decode} tells why.
   * @returns how many tags failed
   * @throws {@link BifrostError} as {@link ReplyDecoder.decode}, and `EINVAL` when `values` is shorter than {@link ReplyDecoder.valueCount}
   */
  decodeInto(frame: Uint8Array, values: Float64Array): number {
    if (!(frame instanceof Uint8Array)) throw new BifrostError('EINVAL', 'the frame must be a Uint8Array or Buffer')
    if (!(values instanceof Float64Array)) throw new BifrostError('EINVAL', 'values must be a Float64Array')
    const failed = this.native.decodeInto(frame, values)
    if (typeof failed !== 'number') throw failed
    return failed
  }

  /**
   * Decodes many frames with one call, straight into `values`: frame `i`'s
   * values start at `i *` {@link ReplyDecoder.valueCount}. A frame that cannot
   * be decoded (truncated, an exception reply) is NaN throughout and does not
   * stop the others; {@link ReplyDecoder.decode} on it tells why.
   * @param frames - whole frames, as an array or back to back in one buffer (cut by their MBAP lengths)
   * @param values - room for every frame's values
   * @returns how many frames there were and how many tags failed
   * @throws {@link BifrostError} `EINVAL` when `values` is too short or the arguments are not bytes and a Float64Array
   */
  decodeMany(frames: Uint8Array[] | Uint8Array, values: Float64Array): DecodedMany {
    if (!(values instanceof Float64Array)) throw new BifrostError('EINVAL', 'values must be a Float64Array')
    let decoded: ReturnType<BindingReplyDecoder['decodeMany']>
    if (frames instanceof Uint8Array) {
      decoded = this.native.decodeMany(frames, undefined, values)
    } else if (Array.isArray(frames)) {
      // Copied back to back with their lengths: one crossing, instead of the addon
      // fetching each frame out of the array (four times slower, measured).
      const lengths = new Uint32Array(frames.length)
      let total = 0
      for (let i = 0; i < frames.length; i++) {
        const frame = frames[i]
        if (!(frame instanceof Uint8Array)) throw new BifrostError('EINVAL', `frame ${i} is not a Uint8Array or Buffer`)
        lengths[i] = frame.length
        total += frame.length
      }
      if (this.joined.length < total) this.joined = new Uint8Array(total)
      let at = 0
      for (const frame of frames as Uint8Array[]) {
        this.joined.set(frame, at)
        at += frame.length
      }
      decoded = this.native.decodeMany(this.joined.subarray(0, total), lengths, values)
    } else {
      throw new BifrostError('EINVAL', 'frames must be a Uint8Array or Buffer, or an array of them')
    }
    if (decoded instanceof Error) throw decoded
    return decoded
  }
}

/** What {@link ReplyDecoder.decodeMany} did. */
export interface DecodedMany {
  /** Frames decoded, bad ones included. */
  frames: number
  /** Tags that failed over every frame; each tag of a frame that could not be decoded counts. */
  failed: number
}

for (const scheme of MODBUS_SCHEMES) registerPlugin(scheme, () => new ModbusPlugin())

/** Settings of {@link startSimulator}. */
export interface SimulatorOptions extends ServerOptions {
  /** `tcp` (MBAP, the default) or `rtu` (RTU frames over TCP, for `modbus-rtu-tcp://`). */
  framing?: 'tcp' | 'rtu'
  /** Unit ids that answer (default 1 to 16); others get exception 11. */
  units?: number[]
  /** Address ranges that answer exception 2, e.g. `holding-register:100-109`. */
  invalid?: string[]
}

/**
 * Starts the Modbus simulator inside this process, on the addon's own threads.
 * Register and input register `i` start at `i`; coil and discrete input `i` start as `i % 2 == 1`.
 * @param options - listening address, framing and fault injection
 * @throws {@link BifrostError} `EADDRINUSE` when the port is taken, `EINVAL` for an option of the wrong type or out of range
 */
export function startSimulator(options: SimulatorOptions = {}): Promise<Simulator> {
  return startServer(native.startModbusSimulator, options, options.framing === 'rtu' ? 'modbus-rtu-tcp' : 'modbus-tcp')
}
