// modbus-serial, used as its README shows: connectTCP, setID, setTimeout and
// the promise API. It pipelines over TCP (transaction ids), so poll reads go out together.
import net from 'node:net'
import { createRequire } from 'node:module'
import { BLOCK, DECODE, POLL, decodeBlock, decodePoll } from '../workloads.mjs'

const require = createRequire(import.meta.url)

export default {
  name: 'modbus-serial',
  version: require('modbus-serial/package.json').version,
  load: () => require('modbus-serial'),
  async open(ModbusRTU, { host, port }) {
    const client = new ModbusRTU()
    await client.connectTCP(host, { port })
    client.setID(1)
    client.setTimeout(5000)
    return client
  },
  blockReader: (client) => async () => (await client.readHoldingRegisters(BLOCK.address, BLOCK.quantity)).data,
  preparePoll(client) {
    const out = new Float64Array(POLL.tags.length)
    return async () => {
      const [registers, coils] = await Promise.all([
        client.readHoldingRegisters(POLL.registers.address, POLL.registers.quantity),
        client.readCoils(POLL.coils.address, POLL.coils.quantity),
      ])
      return decodePoll(registers.buffer, coils.data, out)
    }
  },
  // modbus-serial has no stand-alone reply parser: its parsing lives in the TCP
  // port's data handler and the client's receive path. Both run here on a socket
  // that never connects; its write is a no-op, and frames are fed as 'data' events.
  decoder(ModbusRTU) {
    const TcpPort = require('modbus-serial/ports/tcpport')
    const socket = new net.Socket()
    socket.write = () => true
    const port = new TcpPort({ socket })
    port.openFlag = true
    const client = new ModbusRTU(port)
    client.open(() => {})
    client.setID(1)
    const out = new Float64Array(DECODE.tags.length)
    return async (frame) => {
      frame.writeUInt16BE(port._transactionIdWrite, 0)
      const reply = client.readHoldingRegisters(0, 125)
      socket.emit('data', frame)
      return decodeBlock((await reply).buffer, out)
    }
  },
  close: (client) => new Promise((resolve) => client.close(resolve)),
}
