// Times the engine on CRS in V8 (Node's WebAssembly; workerd runs the same V8 engine), on the
// requests `crs_latency` times natively, with the same statistics: each request's time is the
// median of its runs; the figures are taken over those per-request times.
//
//   cargo build --release --target wasm32-unknown-unknown --features bench \
//     --manifest-path waf-rules/wasm-probe/Cargo.toml
//   node waf-rules/wasm-probe/bench.mjs [WASM] [PL] [lazy] [stream]
//
// `lazy`: load as the edge worker does (matchers built on first use, with the `@rx` analyses
// the build script embedded); the timed runs come after three warm-up rounds either way.
// `stream`: a fresh module's cold start instead, as an isolate's: compile and instantiate,
// load (lazily unless `eager`), the edge bench's GET twice, then each embedded legit-dev
// request once, in order, with the memo on (as the worker runs it), timed one by one.
// Run `stream` under `node --single-threaded` (all of V8's compile work on the timed thread,
// as an isolate's cold start pays it) and the repeated-request medians without it: with it,
// V8's optimizing compiles of hot functions can wait for an idle moment a timing loop never
// gives, and the medians depend on which functions got optimized.
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
const stream = process.argv[5] === "stream";

const us = () => Number(process.hrtime.bigint()) / 1e3;
const ms = (t) => ((us() - t) / 1e3).toFixed(1);
let t = us();
const module = await WebAssembly.compile(readFileSync(wasmPath));
const compiled = ms(t);
t = us();
const instance = await WebAssembly.instantiate(module, {});
const instantiated = ms(t);
const { bench_load, bench_eval, bench_requests } = instance.exports;
if (!bench_load || !bench_eval || !bench_requests) {
  console.error(`${wasmPath} has no bench exports: build it with --features bench`);
  process.exit(2);
}
bench_requests();
t = us();
const n = bench_load(pl, stream ? 1 : 0, lazy ? 1 : 0);
if (n === 0) {
  console.error("CRS did not load");
  process.exit(1);
}
console.log(
  `PL${pl} load (${lazy ? "lazy, with the embedded @rx analyses" : "every matcher built"}, in wasm): ` +
    `${ms(t)} ms (module compile ${compiled} ms, instantiate ${instantiated} ms)`
);
const pct = (s, p) => s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];
const stats = (xs) => {
  const mean = xs.reduce((a, b) => a + b, 0) / xs.length;
  const s = [...xs].sort((a, b) => a - b);
  return (
    `p50 ${pct(s, 0.5).toFixed(1)}  p90 ${pct(s, 0.9).toFixed(1)}  p99 ${pct(s, 0.99).toFixed(1)}  ` +
    `max ${s[s.length - 1].toFixed(1)}  mean ${mean.toFixed(1)}`
  );
};

if (stream) {
  // The edge bench's GET (request 3), as `bench/edge/run`'s cold start sends it.
  for (const which of ["first", "second"]) {
    t = us();
    bench_eval(3, 1);
    console.log(`PL${pl} ${which} evaluation (bench/edge benign GET): ${ms(t)} ms`);
  }
  const per = [];
  let scores = 0n;
  for (let i = 4; i < n; i++) {
    const t0 = us();
    const score = bench_eval(i, 1);
    per.push(us() - t0);
    scores += BigInt(score);
  }
  // (The sum of the anomaly scores: two builds of the engine must agree on it.)
  console.log(`PL${pl} legit-dev as a stream, memo on (µs per request; scores sum ${scores}):`);
  for (let end = 100; end <= per.length; end *= 10) {
    console.log(`  first ${end}: ${stats(per.slice(0, end))}`);
  }
  if (per.length % 10 !== 0 || per.length < 100) console.log(`  all ${per.length}: ${stats(per)}`);
  process.exit(0);
}

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
// V8 tiers hot wasm functions up in the background: run everything a few times first.
// The first 200 legit-dev requests, as `crs_latency` natively.
const m = Math.min(n, 4 + 200);
for (let round = 0; round < 3; round++) for (let i = 0; i < m; i++) bench_eval(i, 1);

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
for (let i = named.length; i < m; i++) per.push(medianOf(i, 21));
console.log(`PL${pl} over ${per.length} legit-dev requests, memo off (µs per request): ${stats(per)}`);
