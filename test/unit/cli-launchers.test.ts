// bin/omni and bin/omnid work from any directory and through symlinks (npm link, npx, ~/bin):
// the package root comes from the launcher's real path, dist/ (or tsx) and Node 24 from that root.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { OMNID_NODE_FLAGS } from '../../node/runtime-flags.js';
import { dropLauncherEnv } from '../../cli/runtime-env.js';
import { processAllocator } from '../../node/allocator.js';
import { existsSync } from 'node:fs';

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let dir = '';
/** The jemalloc bin/omnid preloads with OMNI_MALLOC=jemalloc (the first of the launcher's list), if this host has one. */
const JEMALLOC = ['/usr/lib/x86_64-linux-gnu/libjemalloc.so.2', '/usr/lib/aarch64-linux-gnu/libjemalloc.so.2', '/usr/lib64/libjemalloc.so.2', '/usr/lib/libjemalloc.so.2', '/usr/local/lib/libjemalloc.so.2'].find((p) => existsSync(p));
if (!JEMALLOC) {
  if (process.env.OMNI_REQUIRE_JEMALLOC === '1') throw new Error('OMNI_REQUIRE_JEMALLOC=1 but no libjemalloc.so.2 is installed (Debian: apt-get install libjemalloc2)');
  console.warn('!!! SKIPPING the jemalloc launcher test: libjemalloc2 is not installed (Debian: apt-get install libjemalloc2)');
}
let version = '';

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'omni-launchers-'));
  version = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  await mkdir(join(dir, 'bin'));
  await mkdir(join(dir, 'elsewhere'));
  // an absolute link, and a relative link to that link (a chain, as npm link makes)
  await symlink(join(ROOT, 'bin', 'omnid'), join(dir, 'bin', 'omnid'));
  await symlink('../bin/omnid', join(dir, 'elsewhere', 'omnid-again'));
  await symlink(join(ROOT, 'bin', 'omni'), join(dir, 'bin', 'omni'));
});
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('omnid runtime settings (bin/omnid)', () => {
  it('runs Node with a small young generation and glibc malloc settings, which the user may override', async () => {
    // OMNI_NODE_ARGS go to Node before the script: -p prints what the launched runtime sees.
    const probe = '-p [process.env.MALLOC_MMAP_THRESHOLD_,process.env.MALLOC_ARENA_MAX,process.env.OMNI_RUNTIME_ENV,process.execArgv.join()].join()';
    const env = { PATH: '/usr/bin:/bin', HOME: dir, OMNI_NODE_ARGS: probe };
    const seen = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env });
    // No MALLOC_MMAP_THRESHOLD_: mapping every 1 MiB buffer on its own made 1 MiB writes 2-4x slower.
    expect(seen.stdout.trim()).toMatch(/^,2, MALLOC_ARENA_MAX,--max-semi-space-size=4,--initial-old-space-size=64,--max-old-space-size=1024,-p,/);
    const mine = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, MALLOC_ARENA_MAX: '8' } });
    expect(mine.stdout.trim()).toMatch(/^,8,,/);
  });

  it('omnid drops what the launcher set from its environment, keeps what the user set', () => {
    const env: NodeJS.ProcessEnv = { MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '8', OMNI_RUNTIME_ENV: ' MALLOC_MMAP_THRESHOLD_ PATH', PATH: '/bin' };
    dropLauncherEnv(env);
    expect(env).toEqual({ MALLOC_ARENA_MAX: '8', PATH: '/bin' });
    const preloaded: NodeJS.ProcessEnv = { LD_PRELOAD: JEMALLOC ?? '/usr/lib/libjemalloc.so.2', OMNI_RUNTIME_ENV: ' LD_PRELOAD MALLOC_ARENA_MAX', MALLOC_ARENA_MAX: '2' };
    dropLauncherEnv(preloaded);
    expect(preloaded).toEqual({});
  });

  // CI installs Debian's libjemalloc2 (.ci/run, OMNI_REQUIRE_JEMALLOC=1): there this runs, never skips.
  it.skipIf(!JEMALLOC)('runs omnid on glibc unless OMNI_MALLOC=jemalloc preloads jemalloc (a user LD_PRELOAD: left alone)', async () => {
    // -p: what the launched runtime sees — its LD_PRELOAD, what the launcher says it set, the allocator mapped into it
    const probe = "-p [process.env.LD_PRELOAD,process.env.OMNI_RUNTIME_ENV,/libjemalloc/.test(require('fs').readFileSync('/proc/self/maps','utf8'))].join()";
    const env = { PATH: '/usr/bin:/bin', HOME: dir, OMNI_NODE_ARGS: probe };
    const byDefault = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env });
    expect(byDefault.stdout.trim()).toBe(', MALLOC_ARENA_MAX,false');
    for (const value of ['glibc', 'auto']) {
      const glibc = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, OMNI_MALLOC: value } });
      expect(glibc.stdout.trim()).toBe(', MALLOC_ARENA_MAX,false');
    }
    const jemalloc = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, OMNI_MALLOC: 'jemalloc' } });
    expect(jemalloc.stdout.trim()).toBe(`${JEMALLOC}, LD_PRELOAD MALLOC_ARENA_MAX,true`);
    const users = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, OMNI_MALLOC: 'jemalloc', LD_PRELOAD: '' } });
    expect(users.stdout.trim()).toBe(', MALLOC_ARENA_MAX,false');
    const bad = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, OMNI_MALLOC: 'tcmalloc' } }).catch((err: { code: number; stderr: string }) => err);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringContaining('OMNI_MALLOC must be glibc or jemalloc') });
  });

  it('the allocator omnid reports comes from the libraries mapped into it', () => {
    expect(processAllocator(() => '7f00-7f01 r-xp 0 08:01 12 /usr/lib/x86_64-linux-gnu/libjemalloc.so.2\n7f02-7f03 r-xp 0 08:01 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n')).toBe('jemalloc');
    expect(processAllocator(() => '7f02-7f03 r-xp 0 08:01 13 /usr/lib/x86_64-linux-gnu/libc.so.6\n')).toBe('glibc');
    expect(processAllocator(() => '7f02-7f03 r-xp 0 08:01 13 /lib/ld-musl-x86_64.so.1\n')).toBe('unknown');
    expect(processAllocator(() => {
      throw new Error('no /proc');
    })).toBe('unknown');
    expect(processAllocator()).toBe('glibc'); // this test process is not started by bin/omnid
  });
});

describe('CLI launchers', () => {
  it('run through a symlink with the working directory outside the checkout', async () => {
    const env = { PATH: '/usr/bin:/bin', HOME: dir };
    const omnid = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env });
    expect(omnid.stdout).toMatch(new RegExp(`^omnid ${version.replace(/\./g, '\\.')} \\(node 24\\.`));
    const chained = await run(join(dir, 'elsewhere', 'omnid-again'), ['version'], { cwd: '/', env });
    expect(chained.stdout).toMatch(/^omnid /);
    const omni = await run(join(dir, 'bin', 'omni'), ['version'], { cwd: dir, env });
    expect(omni.stdout).toMatch(new RegExp(`^omni ${version.replace(/\./g, '\\.')} `));
    const help = await run(join(dir, 'bin', 'omni'), ['--help'], { cwd: '/', env });
    expect(help.stdout).toMatch(/^usage: omni <command>/);
  });

  it('start omnid with the runtime flags of node/runtime-flags.ts (bin/omnid, npm run omnid), which bound the young generation', async () => {
    expect(OMNID_NODE_FLAGS).toContain('--max-semi-space-size=4');
    const launcher = await readFile(join(ROOT, 'bin', 'omnid'), 'utf8');
    const execLine = launcher.split('\n').find((l) => l.startsWith('exec '))!;
    const script = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts.omnid;
    for (const flag of OMNID_NODE_FLAGS) {
      expect(execLine.split(' ')).toContain(flag);
      expect(script.split(' ')).toContain(flag);
    }
    // The flag takes effect: after many objects survived, the new space stays within a few
    // semi-spaces of 4 MiB — 8, 15 or 24.5 MiB as V8 reports it from run to run on this host — where
    // it grows past 100 MiB without the flag on a host with a few GiB of memory.
    const grow = "const a = []; for (let i = 0; i < 3e6; i++) a.push({ i }); console.log(require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)";
    const { stdout } = await run(join(ROOT, 'node_modules', '.bin', 'node'), [...OMNID_NODE_FLAGS, '-e', grow]);
    expect(Number(stdout)).toBeGreaterThan(0);
    expect(Number(stdout)).toBeLessThanOrEqual(32 * 1024 * 1024);
  });

  it('omnid runs with an old generation of at most 1,024 MB (V8 then grows it by 1.6× its live size, not 4×); OMNI_NODE_ARGS can raise it', async () => {
    expect(OMNID_NODE_FLAGS).toContain('--max-old-space-size=1024');
    const probe = "-p require('v8').getHeapStatistics().heap_size_limit";
    const env = { PATH: '/usr/bin:/bin', HOME: dir };
    const limit = Number((await run(join(ROOT, 'bin', 'omnid'), ['--version'], { env: { ...env, OMNI_NODE_ARGS: probe } })).stdout);
    const MB = 1024 * 1024;
    // the limit counts the young generation too (a few MiB with --max-semi-space-size=4); without the flag it is the host's (GiBs)
    expect(limit).toBeGreaterThanOrEqual(1024 * MB);
    expect(limit).toBeLessThan(1100 * MB);
    const raised = Number((await run(join(ROOT, 'bin', 'omnid'), ['--version'], { env: { ...env, OMNI_NODE_ARGS: `--max-old-space-size=2048 ${probe}` } })).stdout);
    expect(raised).toBeGreaterThanOrEqual(2048 * MB);
  });
});
