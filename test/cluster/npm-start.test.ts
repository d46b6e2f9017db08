// `npm start` (cli/local.ts): a real 3-process cluster that forms, steps the root down and
// serves a write through a follower. --exit makes it stop once shown.
import { describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { promisify } from 'node:util';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { LocalCluster } from '../../node/local-cluster.js';

const run = promisify(execFile);

describe('npm start', () => {
  it('forms a 3-node local cluster, prints omni status, round-trips a key and serves an example app', async () => {
    const { stdout } = await run('node_modules/.bin/node', ['--import', 'tsx', 'cli/local.ts', '--exit'], { timeout: 90_000 });
    expect(stdout).toMatch(/cluster ready in [\d.]+ s/);
    expect(stdout).toMatch(/health\s+healthy/);
    expect(stdout).toMatch(/voters\s+node1, node2, node3 \(target 3\)/);
    expect(stdout).toMatch(/root node\s+node1 \(retired\)/);
    expect(stdout).toMatch(/omni kv get hello\s+\(via node\d\) → world/);
    expect(stdout).toMatch(/hello-web is healthy: 3\/3 replicas, one per node/);
    expect(stdout).toMatch(/curl http:\/\/127\.0\.0\.1:\d+\/ → hello from hello-web-[0-9a-f]+/);
  });
});

/** Processes that belong to the cluster under `rootDir`: its path in their command line, or their working dir below it (app tasks). */
function processesUnder(rootDir: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      let cwd = '';
      try {
        cwd = readlinkSync(`/proc/${entry}/cwd`);
      } catch {
        // not ours to read
      }
      if (cmdline.includes(rootDir) || cwd.startsWith(rootDir + '/')) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

describe('Ctrl-C on npm start', () => {
  // Ctrl-C in a terminal sends SIGINT to the whole foreground process group (npm, its shell,
  // node): npm start runs in a process group of its own here and the group gets the signal.
  const moments: [string, RegExp][] = [
    ['while the first node starts', /^starting node1 /],
    ['while the last node joins', /^starting node3 /],
    ['while the example app deploys', /^\$ omni run --name hello-web/],
    ['once it runs', /press Ctrl-C to stop it/],
  ];
  for (const [when, trigger] of moments) {
    it(`stops every node and app task and removes the data dir, ${when}`, async () => {
      const p = spawn('npm', ['start', '--silent'], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      const exited = new Promise<number | null>((r) => p.once('exit', (code) => r(code)));
      try {
        await new Promise<void>((resolve, reject) => {
          const onData = (b: Buffer) => {
            out += b.toString();
            if (out.split('\n').some((l) => trigger.test(l))) resolve();
          };
          p.stdout!.on('data', onData);
          p.stderr!.on('data', onData);
          void exited.then(() => reject(new Error(`npm start ended early:\n${out}`)));
        });
        await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 400)));
        process.kill(-p.pid!, 'SIGINT');
        await exited;
      } finally {
        try {
          process.kill(-p.pid!, 'SIGKILL');
        } catch {
          // the group is gone
        }
      }
      const rootDir = /with data in (\S+)/.exec(out)?.[1];
      expect(rootDir, out).toBeDefined();
      expect(out).toMatch(/stopped; nothing is left running/);
      expect(existsSync(rootDir!)).toBe(false);
      // omnid processes and app tasks (their working dirs are below the data dir) are all gone
      expect(processesUnder(rootDir!)).toEqual([]);
    }, 120_000);
  }
});

describe('a cluster an earlier npm start left behind', () => {
  it('is removed by the next one (its owner is gone); a live owner\'s cluster is kept', async () => {
    const tag = `sweep-test-${process.pid}`;
    const dead = spawn('true');
    await new Promise((r) => dead.once('exit', r));
    const left = await LocalCluster.create({ owner: tag });
    await writeFile(join(left.rootDir, 'owner.json'), JSON.stringify({ pid: dead.pid, tag }));
    const live = await LocalCluster.create({ owner: tag }); // owned by this (live) process
    try {
      expect(await LocalCluster.sweepAbandoned(tag)).toEqual([left.rootDir]);
      expect(existsSync(left.rootDir)).toBe(false);
      expect(existsSync(live.rootDir)).toBe(true);
    } finally {
      await live.destroy();
    }
  });
});
