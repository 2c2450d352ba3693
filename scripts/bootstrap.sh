#!/usr/bin/env bash
# Installs what the project needs, idempotently, from the package registries only:
#   Debian: clang (ring for wasm32), cmake (pingora's zlib-ng), pkg-config, chromium (the
#           browser test of the waiting room)
#   rustup: the wasm32-unknown-unknown target, rustfmt, clippy
#   crates.io: wasm-bindgen-cli and worker-build at the versions in Cargo.lock, into
#              $FLASHEDGE_TOOLS (default ~/.cache/flashedge-tools), shared by every clone
#   npm: wrangler, binaryen (wasm-opt) and playwright-core, pinned in package-lock.json
source "$(dirname "$0")/lib.sh"

missing=()
for tool in clang cmake pkg-config chromium; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=(); elif command -v sudo >/dev/null; then SUDO=(sudo); else
    echo "bootstrap: need root or sudo to install ${missing[*]}" >&2; exit 1
  fi
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in rustfmt clippy; do
  rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

install_crate() { # crate version binary
  local root="$TOOLS/$1-$2"
  if [ ! -x "$root/bin/$3" ]; then
    log "installing $1 $2 into $root (once per machine, several minutes)"
    CARGO_TARGET_DIR="$TOOLS/.build" cargo install --quiet --root "$root" "$1" --version "$2"
  fi
}
install_crate wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen
install_crate worker-build "$WORKER_BUILD_VERSION" worker-build
rm -rf "$TOOLS/.build"

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "bootstrap: Node.js 20 or newer is needed (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
stamp="$ROOT/node_modules/.flashedge-lock.sha256"
want="$(sha256sum "$ROOT/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "npm ci (wrangler, binaryen, playwright-core)"
  (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > "$stamp"
fi
