// bin/omni and bin/omnid work from any directory and through symlinks (npm link, npx, ~/bin):
// the package root comes from the launcher's real path, dist/ (or tsx) and Node 24 from that root.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

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
  it('runs Node with a young generation of at most 2 x 4 MiB, which OMNI_NODE_ARGS may override', async () => {
    // OMNI_NODE_ARGS go to Node before the script: -p prints what the launched runtime sees.
    const probe = (flags: string) => ({ PATH: '/usr/bin:/bin', HOME: dir, OMNI_NODE_ARGS: `${flags} -p require("v8").getHeapStatistics().total_available_size>0&&process.execArgv.join()` });
    const seen = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: probe('') });
    expect(seen.stdout.trim()).toMatch(/^--max-semi-space-size=4,-p,/);
    const mine = await run(join(dir, 'bin', 'omnid'), ['--version'], { cwd: dir, env: probe('--max-semi-space-size=16') });
    expect(mine.stdout.trim()).toMatch(/^--max-semi-space-size=4,--max-semi-space-size=16,-p,/);
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
});
