// Times the engine on CRS in V8 (Node's WebAssembly; workerd runs the same V8 engine), on the
// requests `crs_latency` times natively, with the same statistics: each request's time is the
// median of its runs; the figures are taken over those per-request times.
//
//   cargo build --release --target wasm32-unknown-unknown --features bench \
//     --manifest-path waf-rules/wasm-probe/Cargo.toml
//   node waf-rules/wasm-probe/bench.mjs [WASM] [PL] [lazy]
//
// `lazy`: load as the edge worker does (matchers built on first use, `@rx` analyses handed
// over); the timed runs come after three warm-up rounds either way.
//
// The module needs no imports (no clock inside: JS times each call).
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";

const here = dirname(fileURLToPath(import.meta.url));
const wasmPath =
  process.argv[2] || join(here, "target/wasm32-unknown-unknown/release/waf_rules_wasm_probe.wasm");
const pl = Number(process.argv[3] ?? 1);
const lazy = process.argv[4] === "lazy";
const { instance } = await WebAssembly.instantiate(readFileSync(wasmPath), {});
const { bench_load, bench_eval } = instance.exports;
if (!bench_load || !bench_eval) {
  console.error(`${wasmPath} has no bench exports: build it with --features bench`);
  process.exit(2);
}

const us = () => Number(process.hrtime.bigint()) / 1e3;
let t = us();
const n = bench_load(pl, 0, lazy ? 1 : 0);
if (n === 0) {
  console.error("CRS did not load");
  process.exit(1);
}
console.log(
  `PL${pl} load (${lazy ? "eager, then lazy with its @rx analyses" : "every matcher built"}, in wasm): ` +
    `${((us() - t) / 1e3).toFixed(0)} ms`
);

function medianOf(i, runs) {
  bench_eval(i, 1);
  const times = [];
  for (let k = 0; k < runs; k++) {
    const t0 = us();
    bench_eval(i, 1);
    times.push(us() - t0);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}
const pct = (s, p) => s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];

// V8 tiers hot wasm functions up in the background: run everything a few times first.
for (let round = 0; round < 3; round++) for (let i = 0; i < n; i++) bench_eval(i, 1);

const named = [
  ["bare GET / (fixed cost)", 0],
  ["bench/proxy GET", 1],
  ["bench/proxy POST", 2],
  ["bench/edge benign GET", 3],
];
for (const [name, i] of named) {
  console.log(`PL${pl} ${name}: median ${medianOf(i, 201).toFixed(1)} µs (score ${bench_eval(i, 1)})`);
}
const per = [];
for (let i = named.length; i < n; i++) per.push(medianOf(i, 21));
const mean = per.reduce((a, b) => a + b, 0) / per.length;
per.sort((a, b) => a - b);
console.log(
  `PL${pl} over ${per.length} legit-dev requests, memo off (µs per request): p50 ${pct(per, 0.5).toFixed(1)}  ` +
    `p90 ${pct(per, 0.9).toFixed(1)}  p99 ${pct(per, 0.99).toFixed(1)}  max ${per[per.length - 1].toFixed(1)}  mean ${mean.toFixed(1)}`
);
