import * as tinyio from "../tinyio.ts";
function* child(i: number, k: number) { for (let j = 0; j < k; j++) yield; return i; }
function* root(n: number, k: number) { const out: number[] = yield Array.from({ length: n }, (_, i) => child(i, k)); return out.length; }
for (const n of [10_000, 100_000]) {
  const t = performance.now(); new tinyio.Loop().run(root(n, 100)); const dt = performance.now() - t;
  console.log(`W1 n=${n}: ${(dt * 1e6 / (n * 100)).toFixed(1)} ns/step`);
}
// sleep storm
let seed = 1; const rnd = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
const ms = Array.from({ length: 10_000 }, () => rnd() * 2000);
function* sleeper(m: number) { yield tinyio.sleep(m); }
const c0 = process.cpuUsage(); const t0 = performance.now();
new tinyio.Loop().run((function* () { yield ms.map(sleeper); })());
const wall = performance.now() - t0; const cpu = process.cpuUsage(c0);
console.log(`W3: wall ${wall.toFixed(0)} ms (max sleep ${Math.max(...ms).toFixed(0)}), cpu ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms`);
// chain
function* chain(d: number): tinyio.Coro<number> { return d === 0 ? 0 : 1 + (yield chain(d - 1)); }
for (const d of [10_000, 1_000_000]) { const t = performance.now(); const r = new tinyio.Loop().run(chain(d)); console.log(`W2 depth ${d}: ${(performance.now() - t).toFixed(0)} ms, ${r}`); }
