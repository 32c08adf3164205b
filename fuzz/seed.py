#!/usr/bin/env python3
"""Writes fuzz/corpus/decode/ seeds: every golden vector (as a binary
message) and a few JSON events (as text messages)."""
import json
import pathlib

here = pathlib.Path(__file__).resolve().parent
out = here / "corpus" / "decode"
out.mkdir(parents=True, exist_ok=True)
doc = json.loads((here.parent / "tests" / "data" / "vectors.json").read_text())
for case in doc["cases"]:
    (out / f"mp_{case['name']}").write_bytes(b"\x00" + bytes.fromhex(case["msgpack_hex"]))
    text = json.dumps({k: v for k, v in case["logical"].items()}).encode()
    (out / f"json_{case['name']}").write_bytes(b"\x01" + text)
print(f"{len(list(out.iterdir()))} seeds in {out}")
