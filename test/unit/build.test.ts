// The prebuilt bundles (scripts/build.mjs, issue 13): bin/omnid runs dist/omnid.bundle.cjs only while no
// source is newer than the build; otherwise it rebuilds first, and if that fails it runs the
// TypeScript sources through tsx: never a stale bundle. Tried on a copy of the project, so the
// checkout's own dist/ and sources are left alone. Also: a bundle's stack traces name .ts files.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { appendFile, cp, mkdtemp, readdir, readFile, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const NODE = join(ROOT, 'node_modules', '.bin', 'node');
/** A line of `omnid --help` that the test rewrites in the bundle or in the source. */
const HELP_LINE = 'restart a member from its data dir';
let dir = '';
let copy = '';

beforeAll(async () => {
  dir = await realpath(await mkdtemp(join(tmpdir(), 'omni-build-test-')));
  copy = join(dir, 'omni');
  for (const d of ['bin', 'scripts', 'cli', 'node', 'protocol']) await cp(join(ROOT, d), join(copy, d), { recursive: true });
  for (const f of ['package.json', 'tsconfig.json']) await cp(join(ROOT, f), join(copy, f));
  await symlink(await realpath(join(ROOT, 'node_modules')), join(copy, 'node_modules'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function omnidHelp(): Promise<{ stdout: string; stderr: string }> {
  return run(join(copy, 'bin', 'omnid'), ['--help'], { cwd: dir, timeout: 90_000 });
}

async function check(): Promise<number> {
  return run(NODE, [join(copy, 'scripts', 'build.mjs'), '--check'], { timeout: 30_000 }).then(
    () => 0,
    (e: { code?: number }) => e.code ?? -1,
  );
}

describe('bin/omnid and dist/', () => {
  it('runs the bundle while it is current, rebuilds it when a source is newer, falls back to tsx when that fails', async () => {
    // no dist/ yet: out of date; the first start builds it
    expect(await check()).toBe(1);
    expect((await omnidHelp()).stdout).toContain(HELP_LINE);
    expect(await check()).toBe(0);

    // a current bundle is what runs (marked here in the bundle only)
    const bundle = join(copy, 'dist', 'omnid.bundle.cjs');
    const built = await readFile(bundle, 'utf8');
    expect(built).toContain(HELP_LINE);
    await writeFile(bundle, built.replace(HELP_LINE, 'MARK-IN-THE-BUNDLE'));
    expect(await check()).toBe(0);
    expect((await omnidHelp()).stdout).toContain('MARK-IN-THE-BUNDLE');

    // a source saved after the build: the stale bundle must not run (two starts at once: one builds, the other waits)
    await appendFile(join(copy, 'node', 'errors.ts'), '\n// edited after the build\n');
    expect(await check()).toBe(1);
    const [a, b] = await Promise.all([omnidHelp(), omnidHelp()]);
    for (const out of [a, b]) {
      expect(out.stdout).toContain(HELP_LINE);
      expect(out.stdout).not.toContain('MARK-IN-THE-BUNDLE');
    }
    expect(await check()).toBe(0);
    expect((await readdir(join(copy, 'dist'))).filter((f) => f.startsWith('.build.lock') || f.startsWith('.tmp-') || f.startsWith('.stamp-'))).toEqual([]);

    // the check runs in the launcher's shell (no find): a source at the deepest level counts, and so
    // does a source removed (its directory's date)
    const rebuild = () => run(NODE, [join(copy, 'scripts', 'build.mjs')], { timeout: 90_000 });
    await appendFile(join(copy, 'node', 'apps', 'drivers', 'process.ts'), '\n// edited after the build\n');
    expect(await check()).toBe(1);
    await writeFile(join(copy, 'protocol', 'raft', 'added-after.ts'), 'export {};\n');
    await rebuild();
    expect(await check()).toBe(0);
    await rm(join(copy, 'protocol', 'raft', 'added-after.ts'));
    expect(await check()).toBe(1);
    await rebuild();
    expect(await check()).toBe(0);

    // the build fails: the sources run through tsx, still never the stale bundle
    const entry = join(copy, 'cli', 'omnid.ts');
    await writeFile(entry, (await readFile(entry, 'utf8')).replace(HELP_LINE, 'MARK-IN-THE-SOURCE'));
    await writeFile(join(copy, 'scripts', 'build.mjs'), "process.stderr.write('build broken on purpose\\n');\nprocess.exit(3);\n");
    const fallback = await omnidHelp();
    expect(fallback.stdout).toContain('MARK-IN-THE-SOURCE');
    expect(fallback.stderr).toContain('could not rebuild');
  });

  it('each command runs from the bundle of its own module; the main bundle has no command in it', async () => {
    const commands = JSON.parse(await readFile(join(ROOT, 'cli', 'omni-commands.json'), 'utf8')) as Record<string, [string, string]>;
    expect(Object.keys(commands).length).toBeGreaterThan(20);
    // the checkout's dist/ (bin/omni rebuilds it first if a source is newer)
    for (const [cmd, [module]] of Object.entries(commands)) {
      const { stdout } = await run(join(ROOT, 'bin', 'omni'), [cmd, '--help'], { timeout: 60_000 }).catch((e: { stdout: string; stderr: string; message: string }) => {
        throw new Error(`omni ${cmd} --help: ${e.message}\n${e.stderr}`);
      });
      expect(stdout, cmd).toMatch(new RegExp(`^usage: omni (${cmd}|compose)\\b`));
      const bundle = await readFile(join(ROOT, 'dist', `omni-${module}.bundle.cjs`), 'utf8');
      expect(bundle.includes(`usage: omni ${cmd === 'compose' ? '' : cmd}`), `${cmd} is in omni-${module}.bundle.cjs`).toBe(true);
    }
    const main = await readFile(join(ROOT, 'dist', 'omni.bundle.cjs'), 'utf8');
    for (const cmd of ['status', 'kv', 'ps', 'run', 'sync']) expect(main.includes(`usage: omni ${cmd} `), cmd).toBe(false);
    const launcher = await readFile(join(ROOT, 'dist', 'omni.cjs'), 'utf8');
    for (const [cmd, [module]] of Object.entries(commands)) expect(launcher).toContain(`"${cmd}":"omni-${module}.bundle.cjs"`);
    // help, version and an unknown command: the main bundle
    expect((await run(join(ROOT, 'bin', 'omni'), ['--help'], { timeout: 60_000 })).stdout).toMatch(/^usage: omni <command>/);
    expect((await run(join(ROOT, 'bin', 'omni'), ['version'], { timeout: 60_000 })).stdout).toMatch(/^omni \d+\.\d+\.\d+ \(node /);
    // omni help CMD is omni CMD --help, through CMD's own bundle; help of no command is the main help
    expect((await run(join(ROOT, 'bin', 'omni'), ['help', 'run'], { timeout: 60_000 })).stdout).toMatch(/^usage: omni run --name NAME/);
    expect((await run(join(ROOT, 'bin', 'omni'), ['help', 'compose'], { timeout: 60_000 })).stdout).toMatch(/^usage: omni compose /);
    expect((await run(join(ROOT, 'bin', 'omni'), ['help', 'no-such-command'], { timeout: 60_000 })).stdout).toMatch(/^usage: omni <command>/);
    expect((await run(join(ROOT, 'bin', 'omnid'), ['help', 'join'], { timeout: 60_000 })).stdout).toMatch(/^usage: omnid join /);
    const unknown = await run(join(ROOT, 'bin', 'omni'), ['no-such-command'], { timeout: 60_000 }).then(
      () => ({ code: 0, stderr: '' }),
      (e: { code: number; stderr: string }) => e,
    );
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error: unknown command no-such-command/);
  }, 180_000);

  it("a bundle's stack traces name the TypeScript source, line and column", async () => {
    const { esbuildOptions } = (await import(pathToFileURL(join(ROOT, 'scripts', 'build.mjs')).href)) as {
      esbuildOptions: (entries: Record<string, string>, outdir: string) => Parameters<typeof build>[0];
    };
    const out = join(dir, 'stack');
    await build(esbuildOptions({ fixture: 'test/fixtures/stack-trace-fixture.ts' }, out));
    const { stdout } = await run(NODE, [join(out, 'fixture.cjs')], { timeout: 30_000 });
    const fixture = join(ROOT, 'test', 'fixtures', 'stack-trace-fixture.ts');
    const throwLine = (await readFile(fixture, 'utf8')).split('\n').findIndex((l) => l.includes("throw new Error('boom")) + 1;
    expect(stdout).toMatch(/^Error: boom from the fixture\n {4}at failHere \(/);
    expect(stdout).toContain(`${fixture}:${throwLine}:9)`);
    expect(stdout).not.toContain('fixture.cjs:');

    // with the index file the build writes for omnid's map: the positions come from it. Made here
    // from a copy of the map whose sources are renamed (same length: the same offsets), so the
    // name in the trace shows which was read.
    const { writeSourceMapIndex } = (await import(pathToFileURL(join(ROOT, 'scripts', 'build.mjs')).href)) as { writeSourceMapIndex: (mapPath: string) => Promise<string> };
    const mapPath = join(out, 'fixture.cjs.map');
    const original = await readFile(mapPath, 'utf8');
    const renamed = original.replace('stack-trace-fixture.ts', 'index-named-fixture.ts');
    expect(renamed.length).toBe(original.length);
    await writeFile(mapPath, renamed);
    await writeSourceMapIndex(mapPath);
    await writeFile(mapPath, original);
    const trace = async () => (await run(NODE, [join(out, 'fixture.cjs')], { timeout: 30_000 })).stdout;
    expect(await trace()).toContain(`${join(ROOT, 'test', 'fixtures', 'index-named-fixture.ts')}:${throwLine}:9)`);
    // an index that does not fit the map (another size), or a damaged one: the map itself is read
    await writeFile(mapPath, `${original} `);
    expect(await trace()).toContain(`${fixture}:${throwLine}:9)`);
    await writeFile(mapPath, original);
    await writeFile(`${mapPath}.idx`, 'not an index');
    expect(await trace()).toContain(`${fixture}:${throwLine}:9)`);
  });
});
