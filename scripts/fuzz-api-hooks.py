"""Schemathesis hooks of scripts/fuzz-api: a module upload (application/wasm) is sent as
raw bytes, as application/octet-stream would be."""

import schemathesis

schemathesis.serializer.alias("application/wasm", "application/octet-stream")
