// docs.test.ts: the documentation is tested like the code.
//
// Two rules, both kept simple on purpose:
//
// 1. Examples. Every `examples/NN-name.ts` is run as its own process
//    (`node --import tsx examples/NN-name.ts`) and what it prints must equal,
//    line for line, the `// Prints:` comment at the end of the file (each
//    line of it indented as `//   text`).
//
// 2. Code blocks. Every fenced ```ts block of `README.md` and `docs/*.md` is
//    a whole program. We write each to `node_modules/.cache/doctest/`,
//    type-check them all with the project's tsconfig, and run each one; it
//    must exit with status 0, so blocks check their claims with
//    `node:assert`. Imports of "tinyio" or "./tinyio.ts" are pointed at this
//    repository's `tinyio.ts`, and a block that imports neither gets
//    `import * as tinyio from "tinyio";` added on top, so the docs may skip
//    that line after the first example.
//    A block fenced ```ts fragment is a piece of a program (a signature, a
//    line out of context): it is neither checked nor run. Other languages
//    (sh, python) are ignored.
//
// Run: node --import tsx --test --test-reporter=spec docs.test.ts
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, it } from "node:test";

const root = dirname(fileURLToPath(import.meta.url));
const run = promisify(execFile);
const childTimeoutMs = 20_000;

// One child process: a TypeScript file under tsx, from the repository root.
// On failure we show its stderr, which holds the error and its stack.
async function runTs(file: string): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, ["--import", "tsx", file], {
      cwd: root,
      timeout: childTimeoutMs,
    });
    return stdout;
  } catch (e) {
    const { stdout, stderr, signal } = e as { stdout?: string; stderr?: string; signal?: string };
    const why = signal === "SIGTERM" ? `timed out after ${childTimeoutMs} ms` : "failed";
    throw new Error(`${relative(root, file)} ${why}\n--- stdout\n${stdout}\n--- stderr\n${stderr}`);
  }
}

// Rule 1: the `// Prints:` comment of an example, as lines.
function expectedOutput(source: string, name: string): string[] {
  const lines = source.split("\n");
  const start = lines.indexOf("// Prints:");
  assert.notEqual(start, -1, `${name} has no "// Prints:" comment at its end`);
  return lines
    .slice(start + 1)
    .filter((line) => line.startsWith("//"))
    .map((line) => line.replace(/^\/\/ {0,3}/, ""));
}

describe("examples/", () => {
  const names = readdirSync(join(root, "examples")).filter((n) => /^\d\d-.*\.ts$/.test(n));
  it("has numbered examples", () => assert.ok(names.length > 0));
  for (const name of names.sort()) {
    it(`${name} prints what its comment says`, async () => {
      const file = join(root, "examples", name);
      const printed = (await runTs(file)).trimEnd().split("\n");
      assert.deepEqual(printed, expectedOutput(readFileSync(file, "utf8"), name));
    });
  }
});

// Rule 2: the fenced blocks of one Markdown file. A fence may be indented
// (inside a list); we remove that indentation from the block's lines.
interface Block { where: string; fragment: boolean; code: string }

function blocksOf(markdownFile: string): Block[] {
  const text = readFileSync(markdownFile, "utf8");
  const fence = /^( *)```(ts|typescript)\b([^\n]*)\n([\s\S]*?)^ *```[ \t]*$/gm;
  const blocks: Block[] = [];
  for (const m of text.matchAll(fence)) {
    const [, indent, , info, body] = m;
    const line = text.slice(0, m.index).split("\n").length;
    const code = body.split("\n").map((l) => (l.startsWith(indent) ? l.slice(indent.length) : l));
    blocks.push({
      where: `${relative(root, markdownFile)}:${line}`,
      fragment: /\bfragment\b/.test(info),
      code: code.join("\n"),
    });
  }
  return blocks;
}

const cache = join(root, "node_modules", ".cache", "doctest");
const markdownFiles = [
  join(root, "README.md"),
  ...readdirSync(join(root, "docs"))
    .filter((n) => n.endsWith(".md"))
    .sort()
    .map((n) => join(root, "docs", n)),
];
const blocks = markdownFiles.flatMap(blocksOf);

// Each block becomes `<file>-<line>.ts` with its tinyio import resolved.
// The folder gets its own package.json: Node never looks for a package
// scope above a node_modules folder, and our blocks are ES modules (they
// may use top-level `await`).
function writeBlocks(): Map<Block, string> {
  rmSync(cache, { recursive: true, force: true });
  mkdirSync(cache, { recursive: true });
  writeFileSync(join(cache, "package.json"), '{ "type": "module" }\n');
  const tinyioPath = "./" + relative(cache, join(root, "tinyio.ts"));
  const files = new Map<Block, string>();
  for (const block of blocks) {
    if (block.fragment) continue;
    const importsTinyio = /from "(tinyio|\.\/tinyio\.ts)"/.test(block.code);
    let code = block.code.replace(/from "(tinyio|\.\/tinyio\.ts)"/g, `from "${tinyioPath}"`);
    if (!importsTinyio) code = `import * as tinyio from "${tinyioPath}";\n` + code;
    const file = join(cache, block.where.replace(/[/:.]/g, "-") + ".ts");
    writeFileSync(file, code);
    files.set(block, file);
  }
  writeFileSync(
    join(cache, "tsconfig.json"),
    JSON.stringify({ extends: relative(cache, join(root, "tsconfig.json")), include: [], files: [...files.values()] }),
  );
  return files;
}

describe("code blocks of README.md and docs/*.md", () => {
  const files = writeBlocks();
  it("found code blocks to run", () => assert.ok(files.size > 0));

  it("all type-check (tsc --noEmit)", async () => {
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
    try {
      await run(process.execPath, [tsc, "--noEmit", "-p", join(cache, "tsconfig.json")], { cwd: root });
    } catch (e) {
      assert.fail(`type errors in doc blocks:\n${(e as { stdout?: string }).stdout}`);
    }
  });

  for (const block of blocks) {
    const file = files.get(block);
    if (file === undefined) continue; // a ```ts fragment: an illustration, not a program
    it(`${block.where} runs`, async () => {
      await runTs(file);
    });
  }
});
