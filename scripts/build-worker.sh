#!/usr/bin/env bash
# Builds edge-worker to WASM (edge-worker/build/) with the pinned tools. Run by wrangler's
# [build] command; scripts/bootstrap.sh installs the tools first.
source "$(dirname "$0")/lib.sh"
cd "$ROOT/edge-worker"
if [ "${FLASHEDGE_WORKER_PREBUILT:-}" = 1 ] && [ -f build/index.js ]; then
  exit 0
fi
for bin in "$WASM_BINDGEN_BIN" "$WASM_OPT_BIN" "$ESBUILD_BIN" "$WORKER_BUILD_BIN"; do
  [ -x "$bin" ] || { echo "build-worker: $bin is missing; run scripts/bootstrap.sh" >&2; exit 1; }
done
exec "$WORKER_BUILD_BIN" --release
