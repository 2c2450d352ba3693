#!/usr/bin/env python3
"""Writes starting corpora for the fuzz targets from the shared WAF corpora and rule files.

usage: make-seeds.py SHARED_DIR   (writes corpus/evaluate, corpus/seclang, corpus/custom_rules)
A request becomes the bytes `waf_rules::fuzzing::request` reads: method, content type and
client bytes, the target, NUL-separated header lines, an empty part, then the body.
"""
import json, os, pathlib, random, sys

METHODS = ["GET", "POST", "PUT", "HEAD", "OPTIONS", "DELETE", "PATCH", "PROPFIND"]
TYPES = {"application/x-www-form-urlencoded": 1, "application/json": 2, "multipart/form-data": 3,
         "text/xml": 4, "text/plain": 5}

shared = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).parent / "corpus"
random.seed(7)

def request_bytes(e):
    headers = [(n, v) for n, v in e.get("headers", []) if n.lower() not in ("content-length",)]
    ctype = next((v for n, v in headers if n.lower() == "content-type"), "")
    t = next((i for k, i in TYPES.items() if ctype.startswith(k)), 0)
    if t:
        headers = [(n, v) for n, v in headers if n.lower() != "content-type"]
    m = METHODS.index(e["method"]) if e.get("method") in METHODS else 0
    parts = [e.get("uri", "/").encode()] + [f"{n}: {v}".encode() for n, v in headers]
    body = e.get("body", "") or ""
    body = body.encode() if isinstance(body, str) else bytes(body)
    return bytes([m, t, 1]) + b"\0".join(parts) + b"\0\0" + body[:4096]

d = out / "evaluate"
d.mkdir(parents=True, exist_ok=True)
for name, keep in (("gotestwaf.jsonl", 300), ("legit-dev.jsonl", 300)):
    lines = [l for l in (shared / "waf-corpus" / name).read_text().split("\n") if l.strip()]
    for i, line in enumerate(random.sample(lines, min(keep, len(lines)))):
        (d / f"{name.split('.')[0]}-{i}").write_bytes(request_bytes(json.loads(line)))

d = out / "seclang"
d.mkdir(parents=True, exist_ok=True)
for f in sorted((shared / "crs-4.28.0" / "rules").glob("*.conf")):
    text = f.read_text()
    # Each file whole would be slow to mutate: its rules one by one instead.
    for i, chunk in enumerate(text.split("\n\n")):
        if "Sec" in chunk:
            (d / f"{f.stem}-{i}").write_text(chunk)

d = out / "custom_rules"
d.mkdir(parents=True, exist_ok=True)
for f in (pathlib.Path(__file__).parent.parent / "examples").glob("*.toml"):
    (d / f.name).write_text(f.read_text())
print("seeds written under", out)
