#!/usr/bin/env python3
"""Writes a JSON Lines corpus (../shared/waf-corpus format) as raw HTTP/1.1 requests for
bench/edge/replay.lua: per request a line with its length in bytes, then the request.

    legit_requests.py CORPUS.jsonl OUT [N]

Each request keeps its method, raw URI, headers in wire order (Host included) and body, with
`Connection: keep-alive` and a `Content-Length` of the body (a corpus `Content-Length`,
`Transfer-Encoding` or `Connection` is dropped: wrk keeps its connections open). A request
whose line could not be sent as it is (a CR or LF in its URI or a header) is left out and
counted. Prints "<written> written, <skipped> skipped" on stderr.
"""
import json
import sys

DROP = {"content-length", "transfer-encoding", "connection"}


def raw_request(r):
    method, uri = r["method"], r["uri"]
    body = r.get("body", "").encode("utf-8", "surrogateescape")
    lines = [f"{method} {uri} HTTP/1.1"]
    for name, value in r["headers"]:
        if name.lower() in DROP:
            continue
        lines.append(f"{name}: {value}")
    lines.append("Connection: keep-alive")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    if any("\r" in l or "\n" in l for l in lines):
        return None
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")
    return head + body


def main():
    if len(sys.argv) not in (3, 4):
        sys.exit("usage: legit_requests.py CORPUS.jsonl OUT [N]")
    limit = int(sys.argv[3]) if len(sys.argv) == 4 else None
    written = skipped = 0
    with open(sys.argv[1], encoding="utf-8") as src, open(sys.argv[2], "wb") as out:
        for line in src:
            if limit is not None and written >= limit:
                break
            if not line.strip():
                continue
            req = raw_request(json.loads(line))
            if req is None:
                skipped += 1
                continue
            out.write(b"%d\n" % len(req))
            out.write(req)
            written += 1
    print(f"{written} written, {skipped} skipped", file=sys.stderr)
    if written == 0:
        sys.exit("no request written")


if __name__ == "__main__":
    main()
