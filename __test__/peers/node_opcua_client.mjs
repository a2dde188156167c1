// node-opcua-client 2.186.4 (an npm devDependency) against an OPC UA server,
// to show the server speaks OPC UA as node-opcua understands it. Run it with
// HOME set to a directory of its own (node-opcua makes its PKI there) and the
// endpoint URL as its argument; it prints one JSON line of what it saw.
import { AttributeIds, DataType, MessageSecurityMode, OPCUAClient, SecurityPolicy } from 'node-opcua-client'

const client = OPCUAClient.create({
  applicationName: 'bifrost-peer-test',
  endpointMustExist: false,
  securityMode: MessageSecurityMode.None,
  securityPolicy: SecurityPolicy.None,
  connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
})
await client.connect(process.argv[2])
const session = await client.createSession()
const read = async (nodeId) => {
  const dv = await session.read({ nodeId, attributeId: AttributeIds.Value })
  return { status: dv.statusCode.name, value: dv.value.value, type: DataType[dv.value.dataType] }
}
const values = []
for (const nodeId of ['ns=1;s=V10', 'ns=1;s=V11', 'ns=1;s=V12', 'ns=1;s=V13', 'ns=1;s=V14', 'i=2259', 'ns=1;s=Nope']) values.push(await read(nodeId))
const written = await session.write({ nodeId: 'ns=1;s=V1', attributeId: AttributeIds.Value, value: { value: { dataType: DataType.Int32, value: -3 } } })
const refused = await session.write({ nodeId: 'ns=1;s=V6', attributeId: AttributeIds.Value, value: { value: { dataType: DataType.Int32, value: 1 } } })
const readBack = await read('ns=1;s=V1')
const namespaces = (await read('i=2255')).value
await session.close()
await client.disconnect()
console.log(JSON.stringify({ values, written: written.name, refused: refused.name, readBack, namespaces }))
