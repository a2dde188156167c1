"""asyncua 2.1.0 (PyPI, in the venv target/asyncua-venv that .ci/run makes) as
an OPC UA cross-check peer: security None, anonymous, on 127.0.0.1:PORT,
printing "listening PORT" once ready. Namespace urn:bifrost:asyncua holds a
folder Bifrost with Speed (Double 12.5, writable), Count (Int32 42, writable),
Limit (Double 100, read-only) and a method Add(Int32, Int32) -> Int32.

    python asyncua_server.py PORT
"""
import asyncio
import logging
import sys

from asyncua import Server, ua, uamethod

logging.disable(logging.WARNING)


@uamethod
def add(_parent, a, b):
    return a + b


async def main(port):
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bifrost")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    ns = await server.register_namespace("urn:bifrost:asyncua")
    folder = await server.nodes.objects.add_folder(ua.NodeId("Bifrost", ns), "Bifrost")
    speed = await folder.add_variable(ua.NodeId("Speed", ns), "Speed", 12.5, varianttype=ua.VariantType.Double)
    count = await folder.add_variable(ua.NodeId("Count", ns), "Count", 42, varianttype=ua.VariantType.Int32)
    await folder.add_variable(ua.NodeId("Limit", ns), "Limit", 100.0, varianttype=ua.VariantType.Double)
    await speed.set_writable()
    await count.set_writable()
    await folder.add_method(
        ua.NodeId("Add", ns), "Add", add, [ua.VariantType.Int32, ua.VariantType.Int32], [ua.VariantType.Int32]
    )
    async with server:
        print(f"listening {port}", flush=True)
        while True:
            await asyncio.sleep(3600)


asyncio.run(main(int(sys.argv[1])))
