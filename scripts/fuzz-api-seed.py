"""For scripts/fuzz-api: waits until the server at BASE (process PID) is ready, starts
one instance of document-processing with the admin KEY, and prints a Schemathesis
config that sends the values the server knows (instance id, definition, version,
actions) as path parameters half of the time.

Usage: fuzz-api-seed.py BASE PID KEY > schemathesis.toml
"""

import json
import os
import sys
import time
import urllib.request

base, server, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]

for _ in range(600):
    try:
        urllib.request.urlopen(f"{base}/readyz", timeout=1)
        break
    except OSError:
        try:
            os.kill(server, 0)
        except OSError:
            sys.exit("the server exited")
        time.sleep(0.1)
else:
    sys.exit("the server was not ready within 60 s")

request = urllib.request.Request(
    f"{base}/v1/definitions/document-processing/instances",
    data=json.dumps({"input": {"document_url": "s3://fuzz/a.pdf"}}).encode(),
    headers={
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": "fuzz-seed",
        "Content-Type": "application/json",
    },
)
instance = json.load(urllib.request.urlopen(request, timeout=30))
known = {
    "id": [instance["id"]],
    "name": [instance["definition"]],
    "version": [instance["definition_version"]],
    "action": instance["allowed_actions"],
}
for name, values in known.items():
    print(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n")
print("[parameters]")
for name in known:
    print(f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}')
