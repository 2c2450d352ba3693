#!/usr/bin/env bash
# Brings the whole stack up on 127.0.0.1 with its embedded defaults; Ctrl-C stops all of it.
#   demo shop (stand-in for your backends)  127.0.0.1:${SHOP_A_PORT:-9001}, :${SHOP_B_PORT:-9002}
#   origin proxy (Pingora)                   127.0.0.1:${PROXY_PORT:-8080}
#   its admin listener (/metrics, /health)   127.0.0.1:${ADMIN_PORT:-9190}
#   edge worker (workerd via wrangler dev)   http://127.0.0.1:${EDGE_PORT:-8787}
source "$(dirname "$0")/lib.sh"
bash "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
SHOP_A_PORT="${SHOP_A_PORT:-9001}"; SHOP_B_PORT="${SHOP_B_PORT:-9002}"
PROXY_PORT="${PROXY_PORT:-8080}"; EDGE_PORT="${EDGE_PORT:-8787}"
ADMIN_PORT="${ADMIN_PORT:-9190}"

log "building the demo shop and the origin proxy"
cargo build --quiet -p demo-shop -p origin-proxy

# The edge signing key: generated once per clone into edge-worker/.dev.vars (git-ignored).
vars="$ROOT/edge-worker/.dev.vars"
if ! grep -q '^EDGE_SIGNING_KEY=' "$vars" 2>/dev/null; then
  echo "EDGE_SIGNING_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >> "$vars"
  chmod 600 "$vars"
fi
if ! grep -q '^ROOM_SIGNING_KEY=' "$vars" 2>/dev/null; then
  echo "ROOM_SIGNING_KEY=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')" >> "$vars"
fi
EDGE_SIGNING_KEY="$(sed -n 's/^EDGE_SIGNING_KEY=//p' "$vars" | head -n1)"
export EDGE_SIGNING_KEY
ROOM_SIGNING_KEY="$(sed -n 's/^ROOM_SIGNING_KEY=//p' "$vars" | head -n1)"
export ROOM_SIGNING_KEY

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

state="$ROOT/target/dev"
mkdir -p "$state"
examples="$ROOT/origin-proxy/examples"
crs_line="s|^crs-dir = \"|crs-dir = \"$examples/|"
if [ ! -d "$ROOT/../shared/crs-4.28.0" ]; then
  log "no OWASP CRS at ../shared/crs-4.28.0: the origin proxy runs the custom rules only"
  crs_line='/^crs-dir = /d'
fi
sed -e "s/127.0.0.1:8080/127.0.0.1:$PROXY_PORT/" -e "s/127.0.0.1:9190/127.0.0.1:$ADMIN_PORT/" \
    -e "s/127.0.0.1:9001/127.0.0.1:$SHOP_A_PORT/" -e "s/127.0.0.1:9002/127.0.0.1:$SHOP_B_PORT/" \
    -e "$crs_line" -e "s|^rules = \[\"|rules = [\"$examples/|" \
    "$examples/dev.toml" > "$state/origin-proxy.toml"
./target/debug/origin-proxy --check --config "$state/origin-proxy.toml" >/dev/null

setsid ./target/debug/demo-shop --listen "127.0.0.1:$SHOP_A_PORT" --name shop-a & pids+=($!)
setsid ./target/debug/demo-shop --listen "127.0.0.1:$SHOP_B_PORT" --name shop-b & pids+=($!)
setsid ./target/debug/origin-proxy --config "$state/origin-proxy.toml" > "$state/access.log" & pids+=($!)
log "origin proxy access log: $state/access.log"

log "starting the edge worker on http://127.0.0.1:$EDGE_PORT (first build of the worker takes a minute)"
cd "$ROOT/edge-worker"
setsid "$WRANGLER" dev --ip 127.0.0.1 --port "$EDGE_PORT" \
  --var "ORIGIN_URL:http://127.0.0.1:$PROXY_PORT" --show-interactive-dev-session=false & pids+=($!)
wait "${pids[-1]}"
