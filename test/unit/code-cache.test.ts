// cli/code-cache.ts (dist/omnid.cjs runs omnid's bundle through it, issue 13): a CommonJS file run
// as require would, with a V8 code cache made after start-up that only the same file, Node and
// flags ever use. Each case runs in a child process (a cache is per process start).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const NODE = join(ROOT, 'node_modules', '.bin', 'node');
let dir = '';
let driver = '';

beforeAll(async () => {
  dir = await realpath(await mkdtemp(join(tmpdir(), 'omni-code-cache-')));
  driver = join(dir, 'driver.mts');
  // runs FILE through the code cache of CACHE_DIR (written at once: writeAfterMs 0), prints the cache's state, stays 300 ms for the write
  await writeFile(
    driver,
    `import { runWithCodeCache } from ${JSON.stringify(pathToFileURL(join(ROOT, 'cli', 'code-cache.ts')).href)};
const [file, cacheDir] = process.argv.slice(2);
const state = runWithCodeCache(file, { cacheDir, writeAfterMs: 0 });
console.log('cache: ' + state);
setTimeout(() => undefined, 300);
`,
  );
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Runs `file` through the driver; stdout's lines and the cache's state. */
async function runFile(file: string, cacheDir: string, nodeArgs: string[] = []): Promise<{ lines: string[]; state: string }> {
  const { stdout } = await run(NODE, [...nodeArgs, '--import', 'tsx', driver, file, cacheDir], { cwd: ROOT, timeout: 60_000 });
  const lines = stdout.trim().split('\n');
  return { lines: lines.slice(0, -1), state: lines.at(-1)!.replace(/^cache: /, '') };
}

/** A case's directory `d`, its program `prog` (d/prog.cjs, holding `source` when given) and its cache directory `cache` (d/cache). */
async function caseProgram(name: string, source?: string): Promise<{ d: string; prog: string; cache: string }> {
  const d = join(dir, name);
  await mkdir(d, { recursive: true });
  const prog = join(d, 'prog.cjs');
  if (source !== undefined) await writeFile(prog, source);
  return { d, prog, cache: join(d, 'cache') };
}

describe('runWithCodeCache', () => {
  it('runs a file as require would: its module, exports, require from its directory, __filename, __dirname', async () => {
    const { d, prog, cache } = await caseProgram(
      'module',
      `const dep = require('./dep.cjs');
exports.early = 1;
console.log(JSON.stringify({ dep, filename: __filename, dirname: __dirname, sameExports: module.exports === exports, early: module.exports.early, moduleFile: module.filename, path: require.resolve('./dep.cjs') }));
`,
    );
    await writeFile(join(d, 'dep.cjs'), "module.exports = { from: 'dep' };\n");
    const { lines, state } = await runFile(prog, cache);
    expect(state).toBe('none');
    expect(JSON.parse(lines[0])).toEqual({ dep: { from: 'dep' }, filename: prog, dirname: d, sameExports: true, early: 1, moduleFile: prog, path: join(d, 'dep.cjs') });
  });

  it('the first start writes a cache, the next uses it and runs the same', async () => {
    const { prog, cache } = await caseProgram('reuse', "function twice(x) { return 2 * x; }\nconsole.log('result ' + twice(21));\n");
    expect(await runFile(prog, cache)).toEqual({ lines: ['result 42'], state: 'none' });
    const files = await readdir(cache);
    expect(files).toHaveLength(1);
    expect(files[0]).toMatch(/^prog\.cjs-[0-9a-f]{32}\.v8$/);
    expect(await runFile(prog, cache)).toEqual({ lines: ['result 42'], state: 'accepted' });
  });

  it('a file changed to other contents of the same length never runs the old code', async () => {
    const { prog, cache } = await caseProgram('changed', "console.log('version A');\n");
    await runFile(prog, cache);
    expect(await runFile(prog, cache)).toEqual({ lines: ['version A'], state: 'accepted' });
    await writeFile(prog, "console.log('version B');\n");
    expect(await runFile(prog, cache)).toEqual({ lines: ['version B'], state: 'none' });
    expect(await runFile(prog, cache)).toEqual({ lines: ['version B'], state: 'accepted' });
  });

  it('a damaged cache file is not used, and the start replaces it', async () => {
    const { prog, cache } = await caseProgram('damaged', "console.log('fine');\n");
    await runFile(prog, cache);
    const [name] = await readdir(cache);
    const bytes = await readFile(join(cache, name));
    bytes[bytes.length - 10] ^= 0xff;
    await writeFile(join(cache, name), bytes);
    expect(await runFile(prog, cache)).toEqual({ lines: ['fine'], state: 'corrupt' });
    expect(await runFile(prog, cache)).toEqual({ lines: ['fine'], state: 'accepted' });
    // cut short (a write torn by a crash)
    await writeFile(join(cache, name), bytes.subarray(0, 20));
    expect(await runFile(prog, cache)).toEqual({ lines: ['fine'], state: 'corrupt' });
  });

  it('other V8 flags use a cache of their own', async () => {
    const { prog, cache } = await caseProgram('flags', "console.log('flags');\n");
    await runFile(prog, cache);
    expect((await runFile(prog, cache)).state).toBe('accepted');
    expect((await runFile(prog, cache, ['--max-semi-space-size=2'])).state).toBe('none');
    expect(await readdir(cache)).toHaveLength(2);
    expect((await runFile(prog, cache, ['--max-semi-space-size=2'])).state).toBe('accepted');
  });

  it('a cache directory that cannot be made only means no cache', async () => {
    const { d, prog } = await caseProgram('unwritable', "console.log('still runs');\n");
    const cache = join(prog, 'cache'); // under a file: mkdir fails (ENOTDIR), also as root
    expect(await runFile(prog, cache)).toEqual({ lines: ['still runs'], state: 'none' });
    expect(await runFile(prog, cache)).toEqual({ lines: ['still runs'], state: 'none' });
    expect(await readdir(d)).toEqual(['prog.cjs']);
  });

  it("stack traces give the file's own lines and columns, from the cache too", async () => {
    const { prog, cache } = await caseProgram('stack', "'use strict';\nfunction failHere() {\n  throw new Error('boom');\n}\ntry { failHere(); } catch (e) { console.log(e.stack.split('\\n')[1].trim()); }\n");
    for (const state of ['none', 'accepted']) expect(await runFile(prog, cache)).toEqual({ lines: [`at failHere (${prog}:3:9)`], state });
  });

  it('a throw on the first line keeps its column (the wrapper has a line of its own)', async () => {
    const line1 = "try { (function onLineOne() { throw new Error('first'); })(); } catch (e) { console.log(e.stack.split('\\n')[1].trim()); }";
    const { prog, cache } = await caseProgram('stack-line1', `${line1}\n`);
    const column = line1.indexOf('new Error') + 1; // V8 names where the Error is made
    for (const state of ['none', 'accepted']) expect(await runFile(prog, cache)).toEqual({ lines: [`at onLineOne (${prog}:1:${column})`], state });
  });

  it('reads a file with non-ASCII text as UTF-8', async () => {
    const { prog, cache } = await caseProgram('utf8', "console.log('héllo ✓ 日本');\n");
    expect((await runFile(prog, cache)).lines).toEqual(['héllo ✓ 日本']);
  });
});
