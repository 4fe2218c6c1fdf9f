// scripts/runtimes.ts: the specs on every runtime tinyio means to support.
//
//     npm run test:runtimes        (node --import tsx scripts/runtimes.ts)
//     npm run test:runtimes -- --only=bun,deno
//
// For each runtime it runs, one after the other:
//   1. the core specs, tinyio.test.ts, with that runtime's own test runner
//      for node:test files (`node --test`, `bun test`, `deno test`);
//   2. the property specs, properties.test.ts (TINYIO_RUNS=200);
//   3. scripts/smoke.ts, the whole API once as a plain program, which must
//      print no FAIL and exit at once after its last line.
// tinyio.ts itself is always loaded through the runtime's own TypeScript
// support: tsx on Node 20 (which has none), `--experimental-strip-types` on
// Node 22, and the built-in type stripping of Node 24, Bun and Deno. Node 22
// cannot parse `using` (the spec files have a few), so there we run copies
// of tinyio.test.ts and properties.test.ts with `using` lowered by esbuild
// (types stripped alike); they still import tinyio.ts, which Node 22 strips
// itself.
//
// Runtimes come from the npm registry (`npx -y node@22`, `node@24`, `bun`,
// `deno`); one that cannot be installed is skipped with the reason printed.
// At the end: a table for the README, and the name of every failing spec.
// Exit status: 1 if any smoke check fails, or any spec fails on Node;
// differences of Bun's and Deno's test runners are reported, not fatal.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { transform } from "esbuild";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const npx = process.platform === "win32" ? "npx.cmd" : "npx";
const only = process.argv.find((a) => a.startsWith("--only="))?.slice(7).split(",");
// Every run's full output is kept here, for the details.
const logs = mkdtempSync(join(tmpdir(), "tinyio-runtimes-"));
const keep = (name: string, out: string) => writeFileSync(join(logs, `${name}.log`), out);

type Counts = { pass: number; fail: number; todo: number; failing: string[] } | { error: string };
type Runtime = {
  id: string;
  label: string;
  cmd: string[]; // the runtime itself
  test: string[]; // arguments that run node:test files
  run: string[]; // arguments that run a TypeScript program
  parse: (out: string) => Counts;
  node?: boolean; // failures are fatal
  lowered?: boolean; // (Node 22: run lowered copies of the spec files)
};

// Runs a command, with a time limit; returns its output and exit code.
function exec(cmd: string[], env: Record<string, string> = {}, limitMs = 600_000): Promise<{ code: number | null; out: string; ms: number; endedAt: number }> {
  const start = Date.now();
  return new Promise((resolve) => {
    const child = spawn(cmd[0], cmd.slice(1), { cwd: root, env: { ...process.env, NO_COLOR: "1", ...env } });
    let out = "";
    child.stdout.on("data", (chunk) => (out += chunk));
    child.stderr.on("data", (chunk) => (out += chunk));
    const timer = setTimeout(() => ((out += `\n[killed after ${limitMs} ms]`), child.kill("SIGKILL")), limitMs);
    child.on("error", (error) => ((out += String(error)), clearTimeout(timer), resolve({ code: -1, out, ms: Date.now() - start, endedAt: Date.now() })));
    child.on("close", (code) => (clearTimeout(timer), resolve({ code, out, ms: Date.now() - start, endedAt: Date.now() })));
  });
}

const strip = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "");

function parseNode(out: string): Counts {
  const n = (key: string) => Number(new RegExp(`^ℹ ${key} (\\d+)`, "m").exec(out)?.[1] ?? NaN);
  if (Number.isNaN(n("pass"))) return { error: lastLines(out) };
  const section = out.split("✖ failing tests:")[1] ?? "";
  const failing = [...new Set(section.split("\n").filter((l) => /^✖ /.test(l) && !l.includes(" # ")).map((l) => l.slice(2).replace(/ \([\d.]+m?s\)$/, "")))];
  return { pass: n("pass"), fail: n("fail"), todo: n("todo"), failing };
}

function parseBun(out: string): Counts {
  const n = (key: string) => Number(new RegExp(`^\\s*(\\d+) ${key}$`, "m").exec(out)?.[1] ?? NaN);
  if (Number.isNaN(n("pass"))) return { error: lastLines(out) };
  const failing = [...new Set(out.split("\n").filter((l) => l.startsWith("(fail) ")).map((l) => l.slice(7).replace(/ \[[\d.]+m?s\]$/, "")))];
  const todo = out.split("\n").filter((l) => l.startsWith("(todo) ")).length;
  return { pass: n("pass"), fail: n("fail") || 0, todo, failing };
}

function parseDeno(out: string): Counts {
  const text = strip(out);
  // "ok | 3 passed (5 steps) | 0 failed | 0 ignored (4 steps)": count the steps (the `it`s).
  const m = /(?:ok|FAILED) \| (\d+) passed(?: \((\d+) steps?\))? \| (\d+) failed(?: \((\d+) steps?\))?(?: \| (\d+) ignored(?: \((\d+) steps?\))?)?/.exec(text);
  if (m === null) return { error: lastLines(text) };
  const failures = text.split(" FAILURES ")[1] ?? "";
  const failing = failures.split("\n").map((l) => / \.\.\. (.*?) =>/.exec(l)?.[1]).filter((l): l is string => l !== undefined);
  return { pass: Number(m[2] ?? m[1]), fail: Number(m[4] ?? m[3]), todo: Number(m[6] ?? m[5] ?? 0), failing };
}

function lastLines(out: string, n = 12): string {
  return out.trim().split("\n").slice(-n).join("\n");
}

const runtimes: Runtime[] = [
  { id: "node20", label: "Node (this one), tsx", cmd: [process.execPath], test: ["--import", "tsx", "--test", "--test-reporter=spec"], run: ["--import", "tsx"], parse: parseNode, node: true },
  { id: "node22", label: "Node 22, --experimental-strip-types", cmd: [npx, "-y", "node@22"], test: ["--experimental-strip-types", "--no-warnings", "--test", "--test-reporter=spec"], run: ["--experimental-strip-types", "--no-warnings"], parse: parseNode, node: true, lowered: true },
  { id: "node24", label: "Node 24, built-in type stripping", cmd: [npx, "-y", "node@24"], test: ["--no-warnings", "--test", "--test-reporter=spec"], run: ["--no-warnings"], parse: parseNode, node: true },
  // (`bun test` fails a test that takes over 5 s; node:test and Deno set no limit, and the specs bound their own waits.)
  { id: "bun", label: "Bun (bun test / bun run)", cmd: [npx, "-y", "bun"], test: ["test", "--timeout=120000"], run: [], parse: parseBun },
  { id: "deno", label: "Deno (deno test / deno run -A)", cmd: [npx, "-y", "deno"], test: ["test", "-A", "--no-check"], run: ["run", "-A"], parse: parseDeno },
];

// Node 22: a spec file with `using` lowered, next to tinyio.ts so that its
// relative paths hold; removed after the run. Returns the copy's name.
async function lowerForNode22(spec: string): Promise<string> {
  const copy = `.runtimes-node22.${spec.replace(/\.ts$/, ".mjs")}`;
  const { code } = await transform(readFileSync(join(root, spec), "utf8"), { loader: "ts", format: "esm", target: "node22", sourcefile: spec });
  writeFileSync(join(root, copy), `// Generated by scripts/runtimes.ts for Node 22 (\`using\` lowered); deleted after the run.\n${code}`);
  return copy;
}

// Runs one spec file on `runtime` (a lowered copy of it, on Node 22).
async function runSpec(runtime: Runtime, spec: string, env: Record<string, string> = {}): Promise<{ out: string; ms: number }> {
  const file = runtime.lowered ? await lowerForNode22(spec) : spec;
  try {
    return await exec([...runtime.cmd, ...runtime.test, runtime.id === "bun" ? `./${file}` : file], env);
  } finally {
    if (runtime.lowered) rmSync(join(root, file), { force: true });
  }
}

type Row = { runtime: Runtime; version: string; core?: Counts; props?: Counts; smoke?: { fails: string[]; oks: number; exitMs: number | null; code: number | null; out: string }; skipped?: string };
const rows: Row[] = [];

const describeCounts = (c?: Counts) => (c === undefined ? "-" : "error" in c ? "did not finish" : `${c.pass} pass, ${c.fail} fail${c.todo ? `, ${c.todo} todo` : ""}`);

for (const runtime of runtimes) {
  if (only && !only.includes(runtime.id)) continue;
  console.log(`\n=== ${runtime.label}`);
  const probe = await exec([...runtime.cmd, "--version"], {}, 300_000);
  if (probe.code !== 0) {
    const reason = lastLines(probe.out, 3).replace(/\n/g, " | ");
    console.log(`skipped: cannot install or start it (${reason})`);
    rows.push({ runtime, version: "-", skipped: reason });
    continue;
  }
  const version = /v?\d+\.\d+\.\d+/.exec(strip(probe.out).split("\n").find((l) => /\d+\.\d+/.test(l) && !l.startsWith("npm ")) ?? "")?.[0] ?? "?";
  console.log(`version ${version}`);
  const row: Row = { runtime, version };
  rows.push(row);
  const core = await runSpec(runtime, "tinyio.test.ts");
  row.core = runtime.parse(core.out);
  keep(`${runtime.id}-core`, core.out);
  console.log(`core specs: ${describeCounts(row.core)} (${(core.ms / 1000).toFixed(0)} s)`);
  const props = await runSpec(runtime, "properties.test.ts", { TINYIO_RUNS: "200" });
  row.props = runtime.parse(props.out);
  keep(`${runtime.id}-properties`, props.out);
  console.log(`property specs: ${describeCounts(row.props)} (${(props.ms / 1000).toFixed(0)} s)`);
  const smoke = await exec([...runtime.cmd, ...runtime.run, "scripts/smoke.ts"], {}, 120_000);
  const done = Number(/^done (\d+)$/m.exec(smoke.out)?.[1] ?? NaN);
  keep(`${runtime.id}-smoke`, smoke.out);
  row.smoke = {
    fails: smoke.out.split("\n").filter((l) => l.startsWith("FAIL ")),
    oks: smoke.out.split("\n").filter((l) => l.startsWith("ok ")).length,
    exitMs: Number.isNaN(done) ? null : smoke.endedAt - done,
    code: smoke.code,
    out: smoke.out,
  };
  console.log(`smoke script: ${row.smoke.oks} ok, ${row.smoke.fails.length} FAIL, exit code ${smoke.code}, exited ${row.smoke.exitMs ?? "?"} ms after its last line`);
  for (const line of row.smoke.fails) console.log(`  ${line}`);
  if (Number.isNaN(done)) console.log(lastLines(smoke.out));
}

// The report
// ----------

console.log("\n## Runtimes\n");
console.log("| runtime | version | core specs (tinyio.test.ts) | property specs | smoke script (whole API) |");
console.log("|---|---|---|---|---|");
for (const { runtime, version, core, props, smoke, skipped } of rows) {
  if (skipped) {
    console.log(`| ${runtime.label} | - | skipped: ${skipped.slice(0, 80)} | | |`);
    continue;
  }
  const s = smoke === undefined ? "-" : smoke.exitMs === null ? "did not finish" : `${smoke.oks} ok, ${smoke.fails.length} fail; exits ${smoke.exitMs < 2000 ? "at once" : `after ${smoke.exitMs} ms`}`;
  console.log(`| ${runtime.label} | ${version} | ${describeCounts(core)} | ${describeCounts(props)} | ${s} |`);
}
let fatal = false;
for (const { runtime, core, props, smoke } of rows) {
  const failing = [core, props].flatMap((c) => (c === undefined ? [] : "error" in c ? [`(did not finish)\n${c.error}`] : c.failing));
  const smokeFails = smoke?.fails ?? [];
  if (failing.length + smokeFails.length === 0 && smoke?.exitMs !== null) continue;
  console.log(`\n### ${runtime.label}: what fails`);
  for (const name of failing) console.log(`- spec: ${name}`);
  for (const line of smokeFails) console.log(`- smoke: ${line.slice(5)}`);
  if (smoke && (smoke.exitMs === null || smoke.exitMs >= 2000)) console.log(`- smoke: did not exit at once (exit code ${smoke.code})`);
  if (runtime.node && failing.length > 0) fatal = true;
  if (smokeFails.length > 0 || smoke?.exitMs === null || (smoke?.exitMs ?? 0) >= 2000) fatal = true;
}
console.log(`\nFull output of every run: ${logs}`);
process.exitCode = fatal ? 1 : 0;
