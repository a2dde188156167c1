"""pycomm3 as an independent judge of the EtherNet/IP simulator: it uploads
the tag list (Symbol object), then reads and writes by it, printing one JSON
line of what it saw.

    python3 pycomm3_judge.py PORT
"""
import json
import sys

from pycomm3 import LogixDriver

port = int(sys.argv[1])
seen = {}
with LogixDriver(f"127.0.0.1:{port}/1/0") as plc:
    seen["tags"] = {name: [info["data_type"], info["dimensions"][0]] for name, info in plc.tags.items()}
    seen["read"] = {t.tag: t.value for t in plc.read("SCADA[5]", "Counter", "Program:Main.Speed", "SCADA{3}")}
    seen["write"] = [t.error for t in plc.write(("Counter", 4242), ("Flags.3", True), ("SCADA[2]{2}", [7, 8]), ("Program:Main.Speed", 2.5))]
print(json.dumps(seen))
