# Shared by the scripts: where tools live and which versions are pinned.
# Sourced, not run. Tools are cached outside the clone, keyed by version, so every clone on a
# machine reuses them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${FLASHEDGE_TOOLS:-$HOME/.cache/flashedge-tools}"
# The versions come from Cargo.lock so that they always match the libraries the worker links.
lock_version() {
  awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"
}
WASM_BINDGEN_VERSION="$(lock_version wasm-bindgen)"
WORKER_BUILD_VERSION="$(lock_version worker)"
export WASM_BINDGEN_BIN="$TOOLS/wasm-bindgen-cli-$WASM_BINDGEN_VERSION/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WORKER_BUILD_BIN="$TOOLS/worker-build-$WORKER_BUILD_VERSION/bin/worker-build"
export WRANGLER="$ROOT/node_modules/.bin/wrangler"
export WRANGLER_SEND_METRICS=false
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
