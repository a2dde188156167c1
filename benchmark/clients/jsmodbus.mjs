// jsmodbus, used as its README shows: a net.Socket handed to client.TCP. It
// queues requests and keeps one on the wire at a time, so concurrency does not help it.
import net from 'node:net'
import { once } from 'node:events'
import { createRequire } from 'node:module'
import { BLOCK, DECODE, POLL, decodeBlock, decodePoll } from '../workloads.mjs'

const require = createRequire(import.meta.url)

export default {
  name: 'jsmodbus',
  version: require('jsmodbus/package.json').version,
  load: () => require('jsmodbus'),
  async open(Modbus, { host, port }) {
    const socket = new net.Socket()
    const client = new Modbus.client.TCP(socket, 1, 5000)
    socket.connect({ host, port })
    await once(socket, 'connect')
    return { socket, client }
  },
  blockReader:
    ({ client }) =>
    async () =>
      (await client.readHoldingRegisters(BLOCK.address, BLOCK.quantity)).response.body.values,
  preparePoll({ client }) {
    const out = new Float64Array(POLL.tags.length)
    return async () => {
      const [registers, coils] = await Promise.all([
        client.readHoldingRegisters(POLL.registers.address, POLL.registers.quantity),
        client.readCoils(POLL.coils.address, POLL.coils.quantity),
      ])
      return decodePoll(registers.response.body.valuesAsBuffer, coils.response.body.valuesAsArray, out)
    }
  },
  // jsmodbus parses a whole TCP frame with ModbusTCPResponse.fromBuffer.
  decoder(Modbus) {
    const out = new Float64Array(DECODE.tags.length)
    return (frame) => decodeBlock(Modbus.ModbusTCPResponse.fromBuffer(frame).body.valuesAsBuffer, out)
  },
  async close({ socket }) {
    socket.end()
    if (!socket.destroyed) await once(socket, 'close')
  },
}
