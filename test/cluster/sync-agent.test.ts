// The agent half of file sync (issue 16) on a real 3-node loopback cluster, process driver, the
// real CLI (bin/omni, run in the project directory):
// - a project over its disk size: omni run refuses before anything is written, naming both sizes;
// - `omni run` of a service: its task starts in the materialised workspace (reads a synced file,
//   writes new ones); `omni sync --pull` of the running app brings its latest files (the node
//   reads them back on demand); `omni stop` brings back what it wrote while stopping;
// - conflict rules on the node: a file changed by a service's task and in the workspace since the
//   task started: the task's copy wins (the workspace's kept as NAME.conflict); for a job run the
//   workspace's ("the cache's") copy wins and the run's is kept as NAME.conflict; the job run sees
//   the cluster's files;
// - `omni sync --watch`: a local change reaches the running task, what the task writes comes down;
// - a plain `omni sync` (and `omni run` of the running app) puts the changed files into the running
//   task's directory before it returns;
// - each cron run starts from the cluster's files and its outputs come back;
// - a running task over the disk size is reported in its status, its read-back refused;
// - the workspace survives the loss of the node the service ran on (chunks on R = 2 nodes);
// - with --workspace-sync, the node reads a running service's files back by itself: what it
//   wrote survives the node's kill -9 with no client ever asking.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { RegistryClient } from '../../cli/omni/registry-client.js';
import { syncProject } from '../../cli/omni/sync.js';
import { formCluster, waitFor } from './helpers.js';

const OMNI = resolve('bin/omni');

interface Out { code: number | null; stdout: string; stderr: string }
interface AppJson {
  name: string; state: string; userState: string;
  job?: { phase: string; outcome: string };
  tasks: { id: string; node: string; desired: string; state: string; cause: string; workspace?: { bytes: number; overLimit?: string } }[];
}

describe('synced workspaces on the nodes (3 nodes, process driver)', () => {
  let c: LocalCluster;
  let dir: string;
  let svcNode = '';
  const env = (node: string) => ({ ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' });
  const omni = (cwd: string, args: string[], node = 'w1', timeout = 180_000): Promise<Out> =>
    new Promise((res) => {
      execFile(OMNI, args, { cwd, env: env(node), timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => res({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }));
    });
  const app = async (name: string, node = 'w2'): Promise<AppJson> => {
    const client = c.client(node);
    try {
      return (await client.raw('GET', `/v1/apps/${name}`)).body as AppJson;
    } finally {
      client.close();
    }
  };
  const regOf = async (name: string) => new RegistryClient((await c.client(name).get<{ url: string }>('/v1/registry')).url, c.adminToken, undefined);
  /** The test's own sync (no read-back first): what another client pushing to the workspace does. */
  const push = async (d: string, appName: string, node: string) => syncProject({ client: c.client(node), app: appName, dir: d, registry: await regOf(node), direction: 'push' });
  const project = async (name: string, config: string, files: Record<string, string>) => {
    const d = join(dir, name);
    await mkdir(join(d, '.omni'), { recursive: true });
    await writeFile(join(d, '.omni', 'config.yaml'), config);
    for (const [p, v] of Object.entries(files)) await writeFile(join(d, p), v);
    return d;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-sync-agent-'));
    await new Promise((res) => execFile(OMNI, ['--version'], { timeout: 120_000 }, res));
    // the node's own periodic read-back off: these tests say when a read-back happens (below: on)
    c = await formCluster(['w1', 'w2', 'w3'], { flags: ['--workspace-sync', 'off'] });
  }, 240_000);
  afterAll(async () => {
    if (process.env.OMNI_TEST_DIAG === '1') for (const [n, node] of c?.nodes ?? []) console.log(n, node.lines.filter((l) => /workspace|agent:/.test(l)).slice(-30).join('\n'));
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('a workspace over the disk size is refused before anything is written, naming both sizes', async () => {
    const d = await project('fat', 'name: fat\ncommand: sleep 600\ndisk: 1M\n', { 'big.bin': 'x'.repeat(2 * 1024 * 1024) });
    const r = await omni(d, ['run', '--detach']);
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toMatch(/workspace would hold 2\.0 MiB on the cluster, over the app's disk size of 1\.0 MiB/);
    expect((await app('fat')) as unknown).toMatchObject({ error: { code: 'NOT_FOUND' } }); // nothing submitted
  }, 120_000);

  it('a running task whose workspace grows over the disk size is reported (not stopped); its read-back is refused, naming both sizes', async () => {
    const d = await project('grow', 'name: grow\ncommand: head -c 2000000 /dev/zero > blob.bin; while true; do sleep 0.2; done\ndisk: 1M\n', { 'small.txt': 'small\n' });
    const run = await omni(d, ['run', '--detach']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    // measured at its start and every 15 s after
    const t = await waitFor('the over-size workspace reported', async () => (await app('grow')).tasks?.find((x) => x.workspace?.overLimit), 60_000, 500);
    expect(t.state).toBe('running');
    // measured while the file may still grow: over 1 MiB, at most the 2,000,000 bytes written
    expect(t.workspace!.bytes).toBeGreaterThan(1024 * 1024);
    expect(t.workspace!.bytes).toBeLessThanOrEqual(2_000_000 + 6);
    expect(t.workspace!.overLimit).toMatch(/the workspace holds 1\.\d MiB, over the app's disk size of 1\.0 MiB/);
    // omni sync: the node refuses to read it back (503 with the sizes); the client's sync goes on
    const s = await omni(d, ['sync', '--app', 'grow', '--pull'], 'w2');
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/not all written back first .*over the app's disk size of 1\.0 MiB/);
    await expect(stat(join(d, 'blob.bin'))).rejects.toThrow();
    const stop = await omni(d, ['stop', '--yes']);
    expect(stop.code, stop.stderr + stop.stdout).toBe(0);
    const after = (await app('grow')).tasks.find((x) => x.id === t.id)!;
    expect(after.cause).toMatch(/its files were not written back to the workspace: .*over the app's disk size/);
  }, 200_000);

  it('a service runs in its synced files; omni sync --pull gets what it wrote; omni stop brings back what it wrote while stopping; the task wins a conflict', async () => {
    const cmd = [
      'cat input.txt > seen.txt',
      'echo "$OMNI_WORKSPACE" > where.txt',
      'echo task-shared > shared.txt',
      // .gitignore (*.tmp): the laptop's ignored file never reaches the task, the task's never comes back
      'if test -e local-only.tmp; then echo leaked; else echo absent; fi > ignored-check.txt',
      'echo scratch > run.tmp',
      // HOME is the task's own, not its workspace: what tools keep there is not synced
      'echo "$HOME" > home.txt',
      'echo hist > "$HOME/.history"',
      "trap 'echo bye > bye.txt; echo task-notes > notes.txt; exit 0' TERM",
      'while true; do sleep 0.2; done',
    ].join('; ');
    const d = await project('svc', `name: svc\ncommand: ${JSON.stringify(cmd)}\ndisk: 100M\n`, { 'input.txt': 'hello from the laptop\n', 'notes.txt': 'v0\n', 'shared.txt': 'v0\n', '.gitignore': '*.tmp\n', 'local-only.tmp': 'not for the cluster\n' });
    const run = await omni(d, ['run', '--detach']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    const a = await waitFor('the svc task running', async () => {
      const x = await app('svc');
      if (!x.tasks?.some((t) => t.state === 'running')) throw new Error(JSON.stringify(x).slice(0, 1500));
      return x;
    }, 60_000);
    svcNode = a.tasks.find((t) => t.state === 'running')!.node; // the node's name
    // on demand: the running task's files come back (the node reads them back first)
    await waitFor('the running task\'s files to come back', async () => {
      const s = await omni(d, ['sync', '--app', 'svc', '--pull'], 'w3');
      if (s.code !== 0) throw new Error(s.stderr);
      return (await stat(join(d, 'seen.txt')).catch(() => undefined)) !== undefined ? true : undefined;
    }, 60_000, 1000);
    expect(await readFile(join(d, 'seen.txt'), 'utf8')).toBe('hello from the laptop\n');
    // its working directory is its workspace, under the node's data dir (not the client's)
    const where = (await readFile(join(d, 'where.txt'), 'utf8')).trim();
    expect(where).toMatch(/\/workspaces\/[a-z0-9-]+\/files$/);
    expect(where.startsWith(d)).toBe(false);
    // --pull leaves the client's unsynced changes alone: shared.txt came down (the task changed it)
    expect(await readFile(join(d, 'shared.txt'), 'utf8')).toBe('task-shared\n');
    expect(await readFile(join(d, 'ignored-check.txt'), 'utf8')).toBe('absent\n');
    const home = (await readFile(join(d, 'home.txt'), 'utf8')).trim();
    expect(home).not.toBe(where);
    expect(home.startsWith(where)).toBe(false);
    expect(existsSync(join(d, '.history'))).toBe(false);

    // another client changes shared.txt in the workspace while the task changed it too (after
    // the on-demand read-back, the task changes it again): at the stop the task's copy wins
    const other = join(dir, 'svc-other');
    await mkdir(other);
    await syncProject({ client: c.client('w2'), app: 'svc', dir: other, registry: await regOf('w2'), direction: 'pull' });
    await writeFile(join(other, 'notes.txt'), 'other-notes\n');
    await push(other, 'svc', 'w2');
    // and the laptop edits notes.txt without syncing: it loses to the cluster's copy at the stop
    await writeFile(join(d, 'input.txt'), 'edited on the laptop\n');

    const stop = await omni(d, ['stop', '--yes']);
    expect(stop.code, stop.stderr + stop.stdout).toBe(0);
    // written by the task while stopping, brought back by omni stop
    expect(await readFile(join(d, 'bye.txt'), 'utf8')).toBe('bye\n');
    // node: the task changed notes.txt (v0 → task-notes) and the workspace did (v0 → other-notes):
    // for a service the task's copy wins, the workspace's is kept as notes.txt.conflict
    expect(await readFile(join(d, 'notes.txt'), 'utf8')).toBe('task-notes\n');
    expect(await readFile(join(d, 'notes.txt.conflict'), 'utf8')).toBe('other-notes\n');
    // the laptop's own edit went up (only it changed input.txt)
    const after = await syncProject({ client: c.client('w2'), app: 'svc', dir: other, registry: await regOf('w2'), direction: 'pull' });
    expect(after.conflicts).toEqual([]);
    expect(await readFile(join(other, 'input.txt'), 'utf8')).toBe('edited on the laptop\n');
    expect(await readFile(join(other, 'bye.txt'), 'utf8')).toBe('bye\n');
    // the cluster's copy has neither side's ignored files (other had no rules when it first pulled: it would have got them)
    expect(existsSync(join(other, 'run.tmp'))).toBe(false);
    expect(existsSync(join(other, 'local-only.tmp'))).toBe(false);
    expect(existsSync(join(other, '.history'))).toBe(false);
    // a rerun of stop is a no-op sync
    const again = await omni(d, ['stop', '--yes']);
    expect(again.code).toBe(0);
    expect(again.stderr).toMatch(/files in sync/);
  }, 400_000);

  it('a job run sees the cluster files; the cache wins a conflict with what the run wrote', async () => {
    const cmd = 'cat input.txt > seen.txt; sleep 8; echo from-the-run > shared.txt; echo done > result.txt';
    const d = await project('batch', `type: job\ncommand: ${JSON.stringify(cmd)}\n`, { 'input.txt': 'job input\n', 'shared.txt': 'v0\n' });
    const run = await omni(d, ['run', '--detach']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    await waitFor('the job task running', async () => ((await app('batch')).tasks?.some((t) => t.state === 'running') ? true : undefined), 60_000);
    // while the run sleeps, another client changes shared.txt in the workspace
    const other = join(dir, 'batch-other');
    await mkdir(other);
    await syncProject({ client: c.client('w3'), app: 'batch', dir: other, registry: await regOf('w3'), direction: 'pull' });
    await writeFile(join(other, 'shared.txt'), 'from-the-cache\n');
    await push(other, 'batch', 'w3');
    await waitFor('the job run to end', async () => ((await app('batch')).job?.phase === 'STOPPED' ? true : undefined), 90_000, 250);
    expect((await app('batch')).job?.outcome).toBe('succeeded');
    const r = await syncProject({ client: c.client('w1'), app: 'batch', dir: d, registry: await regOf('w1') });
    expect(r.conflicts).toEqual([]);
    expect(await readFile(join(d, 'seen.txt'), 'utf8')).toBe('job input\n');
    expect(await readFile(join(d, 'result.txt'), 'utf8')).toBe('done\n');
    expect(await readFile(join(d, 'shared.txt'), 'utf8')).toBe('from-the-cache\n');
    expect(await readFile(join(d, 'shared.txt.conflict'), 'utf8')).toBe('from-the-run\n');
  }, 300_000);

  it('each cron run starts from the cluster files and its outputs come back to the workspace', async () => {
    const d = await project('tick', `type: cron\nschedule: "*/3 * * * * *"\ncommand: 'cat input.txt > "seen-$OMNI_CRON_RUN.txt"; ls > "ls-$OMNI_CRON_RUN.txt"'\n`, { 'input.txt': 'cron input\n' });
    const run = await omni(d, ['run']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    // two runs' outputs in the workspace: the first run's file came back, and the second run started from the cluster's files
    await waitFor('two cron runs written back', async () => {
      const s = await omni(d, ['sync', '--app', 'tick', '--pull'], 'w2');
      if (s.code !== 0) throw new Error(s.stderr);
      return (await stat(join(d, 'seen-2.txt')).catch(() => undefined)) !== undefined ? true : undefined;
    }, 90_000, 1000);
    expect(await readFile(join(d, 'seen-1.txt'), 'utf8')).toBe('cron input\n');
    expect(await readFile(join(d, 'seen-2.txt'), 'utf8')).toBe('cron input\n');
    // run 2 started with run 1's output in its directory (the cache), not an empty one
    expect((await readFile(join(d, 'ls-2.txt'), 'utf8')).split('\n')).toContain('seen-1.txt');
    await omni(d, ['schedule', 'disable', 'tick']);
  }, 200_000);

  it('omni sync --watch: a local change reaches the running task, what the task writes comes down, until Ctrl-C', async () => {
    // the task copies every in/*.txt to out/NAME.seen, over and over
    const cmd = 'mkdir -p out; while true; do for f in in/*.txt; do [ -f "$f" ] && cp "$f" "out/$(basename "$f").seen"; done; sleep 0.2; done';
    const d = await project('watcher', `name: watcher\ncommand: ${JSON.stringify(cmd)}\ndisk: 100M\n`, {});
    await mkdir(join(d, 'in'));
    await writeFile(join(d, 'in', 'a.txt'), 'first\n');
    const run = await omni(d, ['run', '--detach']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    await waitFor('the watcher task running', async () => ((await app('watcher')).tasks?.some((t) => t.state === 'running') ? true : undefined), 60_000);
    const w = spawn(OMNI, ['sync', '--app', 'watcher', '--watch', '--interval', '500ms', '--json'], { cwd: d, env: env('w3'), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    w.stdout.on('data', (b: Buffer) => (out += b.toString()));
    w.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((res) => w.on('exit', (code) => res(code)));
    try {
      // what the task wrote comes down without any command
      await waitFor('out/a.txt.seen from the task', async () => (await readFile(join(d, 'out', 'a.txt.seen'), 'utf8').catch(() => undefined)), 60_000, 250);
      expect(await readFile(join(d, 'out', 'a.txt.seen'), 'utf8')).toBe('first\n');
      // a file written here goes up, reaches the task's directory, is copied there and comes back
      await writeFile(join(d, 'in', 'b.txt'), 'second\n');
      await waitFor('out/b.txt.seen from the task', async () => (await readFile(join(d, 'out', 'b.txt.seen'), 'utf8').catch(() => undefined)), 60_000, 250);
      expect(await readFile(join(d, 'out', 'b.txt.seen'), 'utf8')).toBe('second\n');
      // one JSON object per sync that moved something
      const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { uploaded: number; downloaded: number; revision: number });
      expect(lines.some((l) => l.uploaded >= 1)).toBe(true);
      expect(lines.some((l) => l.downloaded >= 1)).toBe(true);
      expect(lines.every((l) => Number.isInteger(l.revision))).toBe(true);
    } finally {
      w.kill('SIGINT');
    }
    expect(await exited, err).toBe(0);
    const stop = await omni(d, ['stop', '--yes']);
    expect(stop.code, stop.stderr + stop.stdout).toBe(0);
  }, 300_000);

  it('omni sync and omni run of a running service put the changed files into its task\'s directory before they return', async () => {
    const d = await project('live', `name: live\ncommand: ${JSON.stringify('echo "$OMNI_WORKSPACE" > where.txt; while true; do sleep 0.2; done')}\ndisk: 100M\n`, { 'app.txt': 'v1\n' });
    const run = await omni(d, ['run', '--detach']);
    expect(run.code, run.stderr + run.stdout).toBe(0);
    await waitFor('the live task running', async () => ((await app('live')).tasks?.some((t) => t.state === 'running') ? true : undefined), 60_000);
    // where the task works (its directory on its node, on this host)
    const where = await waitFor('where.txt from the task', async () => {
      const s = await omni(d, ['sync', '--app', 'live', '--pull'], 'w3');
      if (s.code !== 0) throw new Error(s.stderr);
      return (await readFile(join(d, 'where.txt'), 'utf8').catch(() => undefined))?.trim();
    }, 60_000, 1000);
    expect(await readFile(join(where, 'app.txt'), 'utf8')).toBe('v1\n');
    // a plain omni sync: the change and a new file are in the task's directory when it returns
    // (before, they reached a running task only with the next sync's read-back)
    await writeFile(join(d, 'app.txt'), 'v2\n');
    await writeFile(join(d, 'new.txt'), 'new\n');
    const s = await omni(d, ['sync', '--app', 'live'], 'w2');
    expect(s.code, s.stderr).toBe(0);
    expect(s.stdout).toMatch(/^live: the changes reached 1 running task$/m);
    expect(await readFile(join(where, 'app.txt'), 'utf8')).toBe('v2\n');
    expect(await readFile(join(where, 'new.txt'), 'utf8')).toBe('new\n');
    // a deletion too; --json says what reached the tasks
    await rm(join(d, 'new.txt'));
    const j = await omni(d, ['sync', '--app', 'live', '--json'], 'w1');
    expect(j.code, j.stderr).toBe(0);
    expect((JSON.parse(j.stdout) as { delivery?: unknown }).delivery).toEqual({ reached: 1 });
    expect(await stat(join(where, 'new.txt')).catch(() => undefined)).toBeUndefined();
    // omni run of the app while it runs (the same spec: not restarted): the edit reaches the task
    await writeFile(join(d, 'app.txt'), 'v3\n');
    const again = await omni(d, ['run', '--detach']);
    expect(again.code, again.stderr + again.stdout).toBe(0);
    expect(again.stderr + again.stdout).toMatch(/live: the changes reached 1 running task/);
    expect(await readFile(join(where, 'app.txt'), 'utf8')).toBe('v3\n');
    // nothing changed: nothing delivered
    const noop = await omni(d, ['sync', '--app', 'live'], 'w3');
    expect(noop.code, noop.stderr).toBe(0);
    expect(noop.stdout).not.toMatch(/reached/);
    const stop = await omni(d, ['stop', '--yes']);
    expect(stop.code, stop.stderr + stop.stdout).toBe(0);
  }, 300_000);

  it('the workspace survives the loss of the node the service ran on', async () => {
    expect(svcNode).not.toBe('');
    await c.kill(svcNode);
    const survivor = ['w1', 'w2', 'w3'].find((n) => n !== svcNode)!;
    const fresh = join(dir, 'svc-after-loss');
    await mkdir(fresh);
    const r = await waitFor('a pull through a surviving node', async () => {
      try {
        return await syncProject({ client: c.client(survivor), app: 'svc', dir: fresh, registry: await regOf(survivor), direction: 'pull' });
      } catch {
        return undefined; // a leader election after the kill
      }
    }, 60_000, 1000);
    expect(r.downloaded).toBeGreaterThan(0);
    expect(await readFile(join(fresh, 'bye.txt'), 'utf8')).toBe('bye\n');
    expect(await readFile(join(fresh, 'notes.txt'), 'utf8')).toBe('task-notes\n');
    expect(await readFile(join(fresh, 'seen.txt'), 'utf8')).toBe('hello from the laptop\n');
  }, 180_000);
});

describe('the node reads a running service\'s files back by itself (--workspace-sync 1s)', () => {
  let c: LocalCluster;
  let dir: string;
  const regOf = async (name: string) => new RegistryClient((await c.client(name).get<{ url: string }>('/v1/registry')).url, c.adminToken, undefined);
  const record = async (node: string) => {
    const client = c.client(node);
    try {
      const r = await client.raw('GET', '/v1/kv/sync%2Fauto');
      return r.status === 200 ? (JSON.parse((r.body as { value: string }).value) as { revision: number }).revision : 0;
    } finally {
      client.close();
    }
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-sync-auto-'));
    c = await formCluster(['v1', 'v2', 'v3'], { flags: ['--workspace-sync', '1s'] });
  }, 240_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('what a running service writes reaches the workspace with no client asking, and survives kill -9 of its node', async () => {
    const src = join(dir, 'src');
    await mkdir(src);
    await writeFile(join(src, 'input.txt'), 'in\n');
    await syncProject({ client: c.client('v1'), app: 'auto', dir: src, registry: await regOf('v1'), direction: 'push' });
    const first = await record('v1');
    const client = c.client('v1');
    try {
      const r = await client.raw('POST', '/v1/apps', { name: 'auto', command: ['sh', '-c', 'sleep 1; echo "made by the task" > made.txt; while true; do sleep 0.2; done'], constraints: ['node.name!=v1'] });
      expect(r.status, JSON.stringify(r.body)).toBe(201);
    } finally {
      client.close();
    }
    // no omni sync, no stop: the node's own read-back writes a new revision
    await waitFor('a revision written by the node', async () => ((await record('v1')) > first ? true : undefined), 60_000, 300);
    const a = (await c.client('v1').raw('GET', '/v1/apps/auto')).body as AppJson;
    const node = a.tasks.find((t) => t.desired === 'run')!.node;
    await c.kill(node); // kill -9: nothing more is read back from it
    const survivor = ['v1', 'v2', 'v3'].find((n) => n !== node)!;
    const fresh = join(dir, 'after');
    await mkdir(fresh);
    await waitFor('a pull through a surviving node', async () => {
      try {
        return await syncProject({ client: c.client(survivor), app: 'auto', dir: fresh, registry: await regOf(survivor), direction: 'pull' });
      } catch {
        return undefined; // an election after the kill
      }
    }, 60_000, 1000);
    expect(await readFile(join(fresh, 'made.txt'), 'utf8')).toBe('made by the task\n');
    expect(await readFile(join(fresh, 'input.txt'), 'utf8')).toBe('in\n');
  }, 180_000);
});
