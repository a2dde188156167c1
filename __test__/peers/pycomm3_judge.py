"""pycomm3 as an independent judge of the EtherNet/IP simulator: it uploads
the tag list (Symbol object) and the structure types' templates (Template
object), then reads and writes by them, printing one JSON line of what it saw.

    python3 pycomm3_judge.py PORT
"""
import json
import sys

from pycomm3 import LogixDriver

port = int(sys.argv[1])
seen = {}
with LogixDriver(f"127.0.0.1:{port}/1/0") as plc:
    seen["tags"] = {name: [info["data_type_name"], info["dimensions"][0]] for name, info in plc.tags.items()}
    seen["read"] = {t.tag: t.value for t in plc.read("SCADA[5]", "Counter", "Program:Main.Speed", "SCADA{3}")}
    seen["write"] = [t.error for t in plc.write(("Counter", 4242), ("Flags.3", True), ("SCADA[2]{2}", [7, 8]), ("Program:Main.Speed", 2.5))]
    # A structure, whole and by member, as its template says it is laid out.
    seen["recipe"] = {t.tag: t.value for t in plc.read("Recipe[1]", "Recipe[1].Temp", "Recipe[1].At")}
    seen["recipe_write"] = [
        t.error
        for t in plc.write(("Recipe[2].Speed", 77), ("Recipe[2].Name", "pycomm3"), ("Recipe[2].Done", True), ("Recipe[2].At.X", 1.25))
    ]
print(json.dumps(seen))
