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

const run = promisify(execFile);
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let dir = '';
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
    expect(seen.stdout.trim()).toMatch(/^,2, MALLOC_ARENA_MAX,--max-semi-space-size=4,-p,/);
    const mine = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: { ...env, MALLOC_ARENA_MAX: '8' } });
    expect(mine.stdout.trim()).toMatch(/^,8,,/);
  });

  it('omnid drops what the launcher set from its environment, keeps what the user set', () => {
    const env: NodeJS.ProcessEnv = { MALLOC_MMAP_THRESHOLD_: '131072', MALLOC_ARENA_MAX: '8', OMNI_RUNTIME_ENV: ' MALLOC_MMAP_THRESHOLD_ PATH', PATH: '/bin' };
    dropLauncherEnv(env);
    expect(env).toEqual({ MALLOC_ARENA_MAX: '8', PATH: '/bin' });
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
    // The flag takes effect: after many objects survived, the new space stays at 2 × 8 MiB (it grows
    // past 100 MiB without the flag on a host with a few GiB of memory).
    const grow = "const a = []; for (let i = 0; i < 3e6; i++) a.push({ i }); console.log(require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size)";
    const { stdout } = await run(join(ROOT, 'node_modules', '.bin', 'node'), [...OMNID_NODE_FLAGS, '-e', grow]);
    expect(Number(stdout)).toBeGreaterThan(0);
    expect(Number(stdout)).toBeLessThanOrEqual(16 * 1024 * 1024);
  });
});
