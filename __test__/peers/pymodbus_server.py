"""A pymodbus server (Debian python3-pymodbus 3.0) as a third-party test peer.

  /usr/bin/python3 pymodbus_server.py tcp PORT
  /usr/bin/python3 pymodbus_server.py serial /dev/pts/N BAUD

Unit 1: holding register i holds 1000 + i, input register i holds 2000 + i,
coil i is (i % 3 == 0), discrete input i is (i % 5 == 0), for addresses 0..999.
Unit 2: the same with holding register i holding 5000 + i.
Prints "listening" just before it serves (TCP: the port may bind a moment later).
"""

import asyncio
import sys

from pymodbus.datastore import (
    ModbusSequentialDataBlock,
    ModbusServerContext,
    ModbusSlaveContext,
)
from pymodbus.server import StartAsyncSerialServer, StartAsyncTcpServer
from pymodbus.transaction import ModbusRtuFramer

SIZE = 1000


def unit(holding_base):
    return ModbusSlaveContext(
        hr=ModbusSequentialDataBlock(0, [(holding_base + i) % 65536 for i in range(SIZE)]),
        ir=ModbusSequentialDataBlock(0, [(2000 + i) % 65536 for i in range(SIZE)]),
        co=ModbusSequentialDataBlock(0, [i % 3 == 0 for i in range(SIZE)]),
        di=ModbusSequentialDataBlock(0, [i % 5 == 0 for i in range(SIZE)]),
        zero_mode=True,
    )


def context():
    return ModbusServerContext(slaves={1: unit(1000), 2: unit(5000)}, single=False)


async def main():
    kind = sys.argv[1]
    if kind == "tcp":
        server = await StartAsyncTcpServer(
            context=context(), address=("127.0.0.1", int(sys.argv[2])), defer_start=True
        )
        print("listening", flush=True)
        await server.serve_forever()
    elif kind == "serial":
        server = await StartAsyncSerialServer(
            context=context(),
            framer=ModbusRtuFramer,
            port=sys.argv[2],
            baudrate=int(sys.argv[3]),
            parity="N",
            stopbits=1,
            bytesize=8,
            defer_start=True,
        )
        await server.start()
        print("listening", flush=True)
        await asyncio.Event().wait()
    else:
        sys.exit(f"unknown kind {kind}")


asyncio.run(main())
