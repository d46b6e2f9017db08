// node/timeline.ts: with OMNI_TIMELINE_DIR a process writes its marks, in order, on the monotonic
// clock, to DIR/<pid> (at exit at the latest).
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const ROOT = resolve(__dirname, '../..');
const CODE = `import('${join(ROOT, 'node/timeline.ts')}').then(({ mark }) => { mark('first'); mark('second one'); console.log(process.pid); })`;

function run(env: Record<string, string | undefined>) {
  return spawnSync(join(ROOT, 'node_modules/.bin/node'), ['--import', 'tsx', '-e', CODE], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
}

describe('timeline marks', () => {
  it('are written to DIR/<pid> in order with a rising monotonic time when OMNI_TIMELINE_DIR is set', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'omni-timeline-test-')), 'made-by-the-process');
    try {
      const r = run({ OMNI_TIMELINE_DIR: dir });
      expect(r.status).toBe(0);
      const pid = r.stdout.trim();
      expect(await readdir(dir)).toEqual([pid]);
      const lines = (await readFile(join(dir, pid), 'utf8')).trim().split('\n').map((l) => l.split(' '));
      expect(lines.map((l) => [l[1], l.slice(2).join(' ')])).toEqual([
        [pid, 'first'],
        [pid, 'second one'],
      ]);
      expect(BigInt(lines[1][0]) >= BigInt(lines[0][0])).toBe(true);
      expect(BigInt(lines[0][0]) > 0n).toBe(true);
    } finally {
      await rm(resolve(dir, '..'), { recursive: true, force: true });
    }
  });
});
