// Jobs end to end (issue 16) on a real 3-node loopback cluster with the process driver: a job
// that exits 0 succeeds and is never run again, even after the leader that saw it succeed is
// killed (-9); a job that fails twice then succeeds (a file counter) is retried with a growing
// backoff; a job that always fails is reported failed after its retries.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor, recordsKeptAsText } from './helpers.js';

interface JobView { phase: string; outcome: string; run: number; succeeded: number; failures: number; attempts: number; retries: number; exitCodes: (number | null)[]; reason: string }
interface Inspect { type: string; job?: JobView; pending: string; tasks: { id: string; desired: string; state: string }[]; jobRecord?: { history: { outcome: string; exitCode: number | null }[] } }

const run = promisify(execFile);
const lines = async (f: string) => (await readFile(f, 'utf8').catch(() => '')).split('\n').filter(Boolean);

describe('jobs on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  let dir: string;
  let via = 'n1';
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, via, method, path, body);
  const inspect = async (name: string) => (await api<Inspect>('GET', `/v1/apps/${name}`)).body;
  const finished = (name: string) =>
    waitFor(`job ${name} to finish`, async () => {
      const a = await inspect(name);
      return a.job?.phase === 'STOPPED' ? a : undefined;
    }, 90_000, 200);

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-jobs-'));
    c = await formCluster(['n1', 'n2', 'n3']);
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('fails twice, then succeeds: retried as new tasks with a growing backoff', async () => {
    const counter = join(dir, 'counter');
    const log = join(dir, 'flaky.log');
    const script = join(dir, 'flaky.sh');
    // Each attempt bumps the counter and logs its start time (ms); attempts 1 and 2 exit 1, the third 0.
    await writeFile(script, `n=$(cat "${counter}" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > "${counter}"\necho "$n $(node -e 'console.log(Date.now())')" >> "${log}"\n[ "$n" -ge 3 ] || exit 1\n`);
    const spec = { name: 'flaky', type: 'job', command: ['sh', script], retries: 3, backoff: { delayMs: 500, maxDelayMs: 5000 } };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const a = await finished('flaky');
    expect(a.job).toMatchObject({ phase: 'STOPPED', outcome: 'succeeded', attempts: 3, failures: 2, succeeded: 1, exitCodes: [1, 1, 0] });
    const starts = (await lines(log)).map((l) => Number(l.split(' ')[1]));
    expect(starts).toHaveLength(3);
    // The backoff after failure n is 500·2^(n-1) ms: retries are never placed sooner.
    expect(starts[1] - starts[0]).toBeGreaterThanOrEqual(500);
    expect(starts[2] - starts[1]).toBeGreaterThanOrEqual(1000);
  });

  it('a job that keeps failing is failed after its retries, with its exit codes', async () => {
    const spec = { name: 'broken', type: 'job', command: ['sh', '-c', 'echo about to fail; exit 7'], retries: 1, backoff: { delayMs: 200, maxDelayMs: 200 } };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const a = await finished('broken');
    expect(a.job).toMatchObject({ outcome: 'failed', attempts: 2, failures: 2, exitCodes: [7, 7] });
    expect(a.job!.reason).toMatch(/exit(ed with)? code 7/);
    await new Promise((r) => setTimeout(r, 2000));
    expect((await inspect('broken')).job!.attempts).toBe(2); // terminal: no third attempt
  });

  it('the CLI: omni run --job waits for the outcome (exit 0 / 1), omni ps and inspect show it, --json too', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get(via)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 90_000 });
    const ok = await omni('run', '--name', 'clijob', '--job', '--', 'sh', '-c', 'echo hi');
    expect(ok.stdout).toMatch(/clijob: STOPPED \(succeeded\): run 1, 1 attempt, 1 succeeded, 0\/3 retries used, exit codes 0/);
    const bad = await omni('run', '--name', 'clibad', '--type', 'job', '--retries', '0', '--', 'sh', '-c', 'echo nope; exit 3').then(
      () => { throw new Error('omni run of a failing job exited 0'); },
      (err: { code: number; stdout: string }) => err,
    );
    expect(bad.code).toBe(1);
    expect(bad.stdout).toMatch(/STOPPED \(failed\).*exit codes 3/);
    expect(bad.stdout).toMatch(/nope/);
    const ps = JSON.parse((await omni('ps', '--json')).stdout) as { apps: { name: string; type: string; job?: JobView }[] };
    expect(ps.apps.find((a) => a.name === 'clijob')).toMatchObject({ type: 'job', job: { phase: 'STOPPED', outcome: 'succeeded' } });
    expect((await omni('ps')).stdout).toMatch(/clibad\s+1\s+STOPPED \(failed\)/);
    expect((await omni('inspect', 'clibad')).stdout).toMatch(/job attempts[\s\S]*failed\s+3/);
    // --deadline: a run still going after 2 s fails, its task stopped (the sleep is killed)
    const late = await omni('run', '--name', 'clilate', '--job', '--deadline', '2', '--', 'sleep', '600').then(
      () => { throw new Error('omni run of a job past its deadline exited 0'); },
      (err: { code: number; stdout: string }) => err,
    );
    expect(late.code).toBe(1);
    expect(late.stdout).toMatch(/STOPPED \(failed\)[\s\S]*did not finish within activeDeadlineSeconds \(2 s\)/);
    const lateTasks = (await c.client(via).get<{ tasks: { desired: string; state: string }[] }>('/v1/apps/clilate')).tasks;
    expect(lateTasks.every((t) => t.desired === 'stop')).toBe(true);
    // --ttl: the finished job is removed by the leader 1 s after it finished
    const ttl = await omni('run', '--name', 'clittl', '--job', '--ttl', '1', '--', 'sh', '-c', 'echo short-lived');
    expect(ttl.stdout).toMatch(/clittl: STOPPED \(succeeded\)/);
    await waitFor('the finished job removed', async () => ((await api('GET', '/v1/apps/clittl')).status === 404 ? true : undefined), 30_000);
    await expect(omni('run', '--name', 'x', '--ttl', '5', '--', 'true')).rejects.toMatchObject({ stderr: expect.stringContaining('--ttl is for a job') });
    // Refused with the reason: a job has no ports.
    const refused = await omni('run', '--name', 'jp', '--job', '--port', '80', '--', 'true').catch((e: { stderr: string; code: number }) => e);
    expect((refused as { stderr: string }).stderr).toMatch(/job has no ports/);
  });

  it('succeeds once, and a new leader (the old one killed -9) never runs it again', async () => {
    const lead = (await api<{ leader: string }>('GET', '/v1/status')).body.leader;
    via = ['n1', 'n2', 'n3'].find((n) => n !== lead)!;
    const ran = join(dir, 'once.log');
    const spec = { name: 'once', type: 'job', command: ['sh', '-c', `echo ran >> "${ran}"; exit 0`], constraints: [`node.name!=${lead}`] };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const a = await finished('once');
    expect(a.job).toMatchObject({ outcome: 'succeeded', attempts: 1, exitCodes: [0] });
    expect(await lines(ran)).toEqual(['ran']);
    await c.kill(lead);
    await waitFor('a new leader', async () => {
      const s = (await api<{ leader: string | null }>('GET', '/v1/status')).body;
      return s.leader && s.leader !== lead ? s : undefined;
    }, 60_000, 200);
    // Several orchestrator rounds of the new leader (and the agents' rounds) go by.
    await new Promise((r) => setTimeout(r, 5000));
    const after = await inspect('once');
    expect(after.job).toMatchObject({ phase: 'STOPPED', outcome: 'succeeded', attempts: 1 });
    expect(after.tasks.filter((t) => t.desired === 'run')).toEqual([]);
    expect(await lines(ran)).toEqual(['ran']);
  });

  it('keeps every record Omni wrote in protobuf on every node (none kept as JSON text)', async () => {
    const counts = await recordsKeptAsText(c);
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const n of Object.values(counts)) expect(n).toBe(0);
  });
});
