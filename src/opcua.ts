/**
 * OPC UA (binary protocol, client side) through the native addon.
 * @packageDocumentation
 */

import { NativePlugin } from './device.js'
import { registerPlugin } from './plugin.js'

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
