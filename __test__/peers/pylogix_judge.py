"""pylogix as an independent judge of the EtherNet/IP simulator: reads and
writes through pylogix, printing one JSON line of what it saw.

    python3 pylogix_judge.py PORT
"""
import json
import sys

from pylogix import PLC

port = int(sys.argv[1])
seen = {}
with PLC() as comm:
    comm.IPAddress = "127.0.0.1"
    comm.Port = port
    for tag in ["SCADA[5]", "Temp", "Name", "Flags"]:
        response = comm.Read(tag)
        seen[tag] = [response.Value, response.Status]
    seen["SCADA[0..4]"] = comm.Read("SCADA[0]", 5).Value
    # A BOOL array: pylogix reads the word holding an element, and writes one with Read-Modify-Write.
    for tag in ["Bits[1]", "Bits[40]"]:
        seen[tag] = comm.Read(tag).Value
    seen["Bits[30..33]"] = comm.Read("Bits[30]", 4).Value
    for tag, value in [("Counter", 123456), ("Temp", 3.5), ("Name", "from pylogix"), ("Flags.4", True), ("Bits[33]", False), ("Bits[34]", True)]:
        seen["write " + tag] = comm.Write(tag, value).Status
print(json.dumps(seen))
