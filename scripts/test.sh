#!/usr/bin/env bash
# Runs every check and test: fmt, clippy, the wasm32 builds, the config checks, unit,
# integration and end-to-end tests. Ends with a line `N passed, N failed`.
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log "cargo fmt --check"
cargo fmt --all -- --check

log "clippy (-D warnings)"
cargo clippy --quiet --workspace --all-targets -- -D warnings

log "wasm32 builds: the edge worker (worker-build, release) and its pure crates"
bash scripts/build-worker.sh >/dev/null
cargo build --quiet --target wasm32-unknown-unknown --lib -p edge-signature
# The engine's wasm probe (its own workspace): the size probe and the V8 timing (`bench.mjs`).
cargo fmt --manifest-path waf-rules/wasm-probe/Cargo.toml -- --check
cargo check --quiet --target wasm32-unknown-unknown --features bench \
  --manifest-path waf-rules/wasm-probe/Cargo.toml

log "binaries the end-to-end tests start"
cargo build --quiet -p demo-shop -p origin-proxy -p static-sync -p waf-rules

log "example configs (--check)"
for f in origin-proxy/examples/*.toml; do
  EDGE_SIGNING_KEY=example-key-for-config-checks ROOM_SIGNING_KEY=example-room-key-for-config-checks-0123 ./target/debug/origin-proxy --check --config "$f"
done

./target/debug/waf-rules check waf-rules/examples/*.toml
./target/debug/waf-rules test waf-rules/examples/*.toml | tail -n 1

log "tests"
out="$ROOT/target/test-output.txt"
set +e
cargo test --workspace --no-fail-fast 2>&1 | tee "$out"
status=${PIPESTATUS[0]}
set -e
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$out"
exit "$status"
