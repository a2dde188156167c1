/**
 * The one error type Bifrost throws or reports per tag.
 * @packageDocumentation
 */

/**
 * Stable error codes. Match on these, never on messages.
 *
 * - `ETIMEDOUT`: no reply in time, or the connection attempt timed out.
 * - `ECONNREFUSED`: the device could not be reached.
 * - `ENOTFOUND`: the device's host name does not resolve.
 * - `ECONNRESET`: the connection broke (or was dropped to resynchronise it) while the request was in flight.
 * - `EADDRINUSE`: a simulator's listening address is taken.
 * - `EQUEUEFULL`: the device already holds `max-queued` requests waiting their turn.
 * - `ECLOSED`: the device was closed.
 * - `EPROTO`: a malformed or unexpected frame.
 * - `EADDRESS`: a bad tag address or URL.
 * - `EINVAL`: a value that does not fit the tag, or an option out of its range.
 * - `MODBUS_EXCEPTION`: the device answered with a Modbus exception; see {@link BifrostError.exceptionCode}.
 * - `CIP_STATUS`: an EtherNet/IP device refused a request; see {@link BifrostError.status} and {@link BifrostError.extStatus}.
 * - `OPCUA_STATUS`: an OPC UA server answered with a bad status; see {@link BifrostError.statusCode} and {@link BifrostError.statusName}.
 */
export type ErrorCode =
  | 'ETIMEDOUT'
  | 'ECONNREFUSED'
  | 'ENOTFOUND'
  | 'ECONNRESET'
  | 'EADDRINUSE'
  | 'EQUEUEFULL'
  | 'ECLOSED'
  | 'EPROTO'
  | 'EADDRESS'
  | 'EINVAL'
  | 'MODBUS_EXCEPTION'
  | 'CIP_STATUS'
  | 'OPCUA_STATUS'

/** An error with a stable {@link ErrorCode}. */
export class BifrostError extends Error {
  /** The stable error code. */
  readonly code: ErrorCode
  /** For `MODBUS_EXCEPTION`: the exception code the device sent (2 = illegal data address, ...). */
  declare readonly exceptionCode?: number
  /** For `CIP_STATUS`: the CIP general status (0x04 path segment error, 0x05 path destination unknown, 0xFF general error, ...). */
  declare readonly status?: number
  /** For `CIP_STATUS`: the extended status, when the device sent one (0x2105 past the end of a tag, 0x2107 type mismatch, ...). */
  declare readonly extStatus?: number
  /** For `OPCUA_STATUS`: the status code the server sent (0x80340000 BadNodeIdUnknown, ...). */
  declare readonly statusCode?: number
  /** For `OPCUA_STATUS`: the status code's name in the OPC UA specification (`BadNodeIdUnknown`, `BadNotWritable`, ...). */
  declare readonly statusName?: string

  /**
   * @param code - the stable error code
   * @param message - a human-readable explanation
   * @param details - protocol details: the Modbus exception code, the CIP status and extended status, the OPC UA status code and name
   */
  constructor(
    code: ErrorCode,
    message: string,
    details: { exceptionCode?: number; status?: number; extStatus?: number; statusCode?: number; statusName?: string } = {},
  ) {
    super(message)
    this.name = 'BifrostError'
    this.code = code
    for (const key of ['exceptionCode', 'status', 'extStatus', 'statusCode', 'statusName'] as const) {
      const value = details[key]
      if (value !== undefined && value !== null) (this as Record<string, unknown>)[key] = value
    }
  }
}

/** Turns anything thrown by the addon or a plugin into a {@link BifrostError}. @internal */
export function asBifrostError(error: unknown): BifrostError {
  if (error instanceof BifrostError) return error
  const message = error instanceof Error ? error.message : String(error)
  // The addon rejects arguments it cannot convert (wrong JS types) with napi's own errors.
  return new BifrostError('EINVAL', message)
}
