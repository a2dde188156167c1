/**
 * `@bifrost/protocols`: industrial protocols for Node.js with a Rust core.
 *
 * ```ts
 * import { connect } from '@bifrost/protocols'
 * const dev = await connect('modbus-tcp://127.0.0.1:5020?max-in-flight=16')
 * console.log(await dev.read('holding-register:0:UINT[4]'))
 * await dev.close()
 * ```
 * @packageDocumentation
 */

export { BifrostError } from './errors.js'
export type { ErrorCode } from './errors.js'
export { connect, columnValue, Device, MAX_MS, NativePlugin, PreparedRead, readPlans, readPlansInto } from './device.js'
export { createPoller, Poller } from './poller.js'
export { Subscription } from './subscription.js'
export type { SubscriptionChange, SubscriptionControls } from './subscription.js'
export type { Deadband, LatencyPercentiles, PollEntry, PollerOptions, PollHandle, PollHealth, PollOptions } from './poller.js'
export type { ConnectionStats, PlansRead, SubscribeOptions, WatchOptions } from './device.js'
export { registerPlugin, registeredSchemes } from './plugin.js'
export type {
  ChangeColumns,
  ColumnarData,
  ConnectOptions,
  DeviceDescriptor,
  PluginFactory,
  PreparedPlan,
  ProtocolPlugin,
  DeviceIdentity,
  Quality,
  RequestOptions,
  TagInfo,
  TagResult,
  TagValue,
  TranslateOptions,
} from './plugin.js'
export { nativeAddon } from './native.js'
export type { NativeAddon } from './native.js'
export { MODBUS_SCHEMES, ModbusPlugin, ReplyDecoder, startSimulator } from './modbus.js'
export type { DecodedMany, SimulatorOptions } from './modbus.js'
export { EnipPlugin, discover, startEnipSimulator } from './enip.js'
export { OpcuaPlugin, decodeReadResponse, findServers, getEndpoints, startOpcuaSimulator } from './opcua.js'
export type { OpcuaApplication, OpcuaEndpoint, OpcuaSimulatorOptions, OpcuaUserTokenPolicy } from './opcua.js'
export type { DiscoveredDevice, DiscoverOptions, EnipSimulatorOptions } from './enip.js'
export type { ServerOptions, Simulator } from './simulator.js'
