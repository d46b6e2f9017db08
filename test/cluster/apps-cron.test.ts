// Cron apps (issue 16) on a real 3-node loopback cluster with the process driver: a seconds-level
// schedule fires runs at its scheduled times (each run sees its scheduled time in
// OMNI_CRON_SCHEDULED_MS and logs it with the time it started); killing the leader with -9 at a
// fire time neither runs a scheduled time twice nor loses one beyond the starting deadline;
// `omni schedule disable` stops the fires and `enable` resumes them; a service's schedule runs its
// command beside the service's replicas.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor, recordsKeptAsText } from './helpers.js';

interface Sched { state: 'ON' | 'OFF'; nextFireMs: number | null; lastRun: number; lastScheduledMs: number; active: { run: number; scheduledMs: number }[]; missed: number; skipped: number }
interface RunRow { run: number; scheduledMs: number; firedAtMs: number; status: string; attempts: number }
interface Inspect { type: string; state: string; healthy: number; replicas: number; schedule?: Sched; cronRecord?: { runs: RunRow[]; active: RunRow[]; missed: number } }

const run = promisify(execFile);
/** Lines "RUN SCHEDULED_MS STARTED_MS" written by each run's task. */
const runLog = async (f: string) =>
  (await readFile(f, 'utf8').catch(() => ''))
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split(' ').map(Number) as [number, number, number]);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('cron apps on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  let dir: string;
  let via = 'n1';
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, via, method, path, body);
  const inspect = async (name: string) => (await api<Inspect>('GET', `/v1/apps/${name}`)).body;
  const leader = async () => (await api<{ leader: string }>('GET', '/v1/status')).body.leader;
  /** A cron app whose every run appends "RUN SCHEDULED_MS STARTED_MS" to log. */
  const cronSpec = (name: string, log: string, schedule: string, extra: Record<string, unknown> = {}) => ({
    name,
    type: 'cron',
    schedule,
    historyLimit: { successful: 50, failed: 50 },
    command: ['sh', '-c', `echo "$OMNI_CRON_RUN $OMNI_CRON_SCHEDULED_MS $(date +%s%3N)" >> "${log}"`],
    ...extra,
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-cron-'));
    c = await formCluster(['n1', 'n2', 'n3']);
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('fires at the scheduled times: aligned to the schedule, never early, one run per time, in order', async () => {
    const log = join(dir, 'every2.log');
    expect((await api('POST', '/v1/apps', cronSpec('every2', log, '*/2 * * * * *'))).status).toBe(201);
    await waitFor('5 runs of every2', async () => ((await runLog(log)).length >= 5 ? true : undefined), 60_000, 200);
    expect((await api('POST', '/v1/apps/every2/schedule/disable')).status).toBe(200);
    await sleep(1500); // a run fired before the disable finishes
    const lines = await runLog(log);
    const a = await inspect('every2');
    const runs = a.cronRecord!.runs.filter((r) => r.run > 0);
    expect(runs.length).toBeGreaterThanOrEqual(5);
    // Every fired time is a whole even second (the schedule, in UTC) and no time fired twice.
    for (const r of runs) {
      expect(r.scheduledMs % 2000).toBe(0);
      expect(r.firedAtMs).toBeGreaterThanOrEqual(r.scheduledMs);
      expect(r.status).toBe('succeeded');
    }
    expect(new Set(runs.map((r) => r.scheduledMs)).size).toBe(runs.length);
    expect(runs.map((r) => r.run)).toEqual(runs.map((_, i) => i + 1));
    // Each run's task ran once, knew its scheduled time, and started after it.
    expect(lines.map(([n]) => n)).toEqual(runs.map((r) => r.run));
    for (const [n, scheduled, started] of lines) {
      expect(scheduled).toBe(runs.find((r) => r.run === n)!.scheduledMs);
      expect(started).toBeGreaterThanOrEqual(scheduled);
    }
    // Runs come every 2 s unless one was skipped or missed (recorded with the reason).
    const missedOrSkipped = a.cronRecord!.runs.filter((r) => r.run === 0).map((r) => r.scheduledMs);
    const all = [...runs.map((r) => r.scheduledMs), ...missedOrSkipped].sort((x, y) => x - y);
    for (let i = 1; i < all.length; i++) expect(all[i] - all[i - 1]).toBe(2000);
    const lat = runs.map((r) => r.firedAtMs - r.scheduledMs);
    console.log(`every2: ${runs.length} runs, fire latency ms min ${Math.min(...lat)} max ${Math.max(...lat)} (2-core shared host)`);
  });

  it('omni schedule disable stops the fires, enable resumes them (idempotent, --json), omni ps and inspect show it', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get(via)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 90_000 });
    const log = join(dir, 'toggle.log');
    const created = await omni('run', '--name', 'toggle', '--cron', '*/2 * * * * *', '--', 'sh', '-c', `echo "$OMNI_CRON_RUN $OMNI_CRON_SCHEDULED_MS $(date +%s%3N)" >> "${log}"`);
    expect(created.stdout).toMatch(/toggle: schedule ON '\*\/2 \* \* \* \* \*' UTC, forbid; next \d{4}-/);
    await waitFor('toggle fires', async () => ((await runLog(log)).length >= 2 ? true : undefined), 60_000, 200);
    expect((await omni('schedule', 'disable', 'toggle')).stdout).toBe('toggle: schedule OFF\n');
    expect(JSON.parse((await omni('schedule', 'disable', 'toggle', '--json')).stdout)).toEqual({ name: 'toggle', schedule: 'OFF', changed: false });
    expect((await omni('ps')).stdout).toMatch(/toggle\s+1\s+schedule OFF/);
    await sleep(1500); // a run fired just before the disable finishes
    const atOff = (await runLog(log)).length;
    await sleep(5000); // two periods and more
    expect((await runLog(log)).length).toBe(atOff);
    const off = await inspect('toggle');
    expect(off.schedule).toMatchObject({ state: 'OFF', nextFireMs: null });
    expect((await omni('schedule', 'enable', 'toggle')).stdout).toBe('toggle: schedule ON\n');
    await waitFor('toggle fires again', async () => ((await runLog(log)).length > atOff ? true : undefined), 30_000, 200);
    const on = await inspect('toggle');
    expect(on.schedule!.state).toBe('ON');
    // Nothing was caught up for the time OFF: the first run after enabling is for a time after it.
    const ps = JSON.parse((await omni('ps', '--json')).stdout) as { apps: { name: string; type: string; schedule?: Sched }[] };
    expect(ps.apps.find((x) => x.name === 'toggle')).toMatchObject({ type: 'cron', schedule: { state: 'ON', missed: 0 } });
    expect((await omni('inspect', 'toggle')).stdout).toMatch(/schedule\s+ON[\s\S]*schedule runs \(newest last\):[\s\S]*succeeded/);
    const refused = await omni('schedule', 'enable', 'nosuch').catch((e: { stderr: string; code: number }) => e);
    expect((refused as { code: number }).code).not.toBe(0);
    const bad = await omni('run', '--name', 'badcron', '--cron', '61 * * * *', '--', 'true').catch((e: { stderr: string }) => e);
    expect((bad as { stderr: string }).stderr).toMatch(/schedule: not a valid cron expression/);
    await omni('schedule', 'disable', 'toggle');
  });

  it('omni schedule trigger runs a yearly job now, once, and refuses under forbid while it runs; omni logs --run N', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get(via)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 90_000 });
    const log = join(dir, 'yearly.log');
    await omni('run', '--name', 'yearly', '--cron', '0 0 1 1 *', '--', 'sh', '-c', `echo "$OMNI_CRON_RUN $OMNI_CRON_SCHEDULED_MS $(date +%s%3N)" >> "${log}"; echo "ran $OMNI_CRON_RUN"; sleep 3`);
    const asked = Date.now();
    expect((await omni('schedule', 'trigger', 'yearly')).stdout).toMatch(/^yearly: a run was asked for; the leader fires it now/);
    await waitFor('the run started', async () => ((await runLog(log)).length === 1 ? true : undefined), 30_000, 100);
    const [[runNo, scheduledMs]] = await runLog(log);
    expect(runNo).toBe(1);
    expect(scheduledMs).toBeGreaterThanOrEqual(asked - 1000); // the time it was asked for, not a scheduled one
    // forbid (the default) while run 1 goes on
    const refused = await omni('schedule', 'trigger', 'yearly').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(refused?.code).toBe(1);
    expect(refused?.stderr).toMatch(/run 1 of yearly is still running and its concurrencyPolicy is forbid/);
    await waitFor('run 1 succeeded', async () => ((await inspect('yearly')).cronRecord?.runs.some((r) => r.run === 1 && r.status === 'succeeded') ? true : undefined), 30_000, 200);
    await sleep(1500);
    expect((await runLog(log)).length).toBe(1); // once
    expect(JSON.parse((await omni('schedule', 'trigger', 'yearly', '--json')).stdout)).toEqual({ name: 'yearly', triggered: true, changed: true });
    await waitFor('run 2', async () => ((await runLog(log)).length === 2 ? true : undefined), 30_000, 100);
    expect((await runLog(log))[1][0]).toBe(2);
    // omni logs --run N: the output of that run's tasks only
    const logsOf2 = await waitFor('run 2 logged', async () => {
      const out = (await omni('logs', 'yearly', '--run', '2', '--tail', '20')).stdout;
      return out.includes('ran 2') ? out : undefined;
    }, 30_000, 300);
    expect(logsOf2).not.toContain('ran 1');
    expect((await omni('logs', 'yearly', '--run', '1', '--tail', '20')).stdout).toContain('ran 1');
    const noRun = await omni('logs', 'yearly', '--run', '9').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(noRun?.stderr).toMatch(/app yearly has no task of run 9/);
    const badRun = await omni('logs', 'yearly', '--run', 'x').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(badRun?.code).toBe(2);
    const notCron = await omni('schedule', 'trigger', 'nosuch').then(() => undefined, (e: { code: number; stderr: string }) => e);
    expect(notCron?.stderr).toMatch(/no app named nosuch/);
    await omni('rm', 'yearly');
  });

  it('the leader killed (-9) at fire times: each time runs exactly once, none is lost beyond the starting deadline', async () => {
    const log = join(dir, 'failover.log');
    // A 30 s starting deadline covers an election.
    expect((await api('POST', '/v1/apps', cronSpec('failover', log, '*/3 * * * * *', { startingDeadlineSeconds: 30 }))).status).toBe(201);
    await waitFor('2 runs of failover', async () => ((await runLog(log)).length >= 2 ? true : undefined), 60_000, 200);
    const kills: { at: number; fireMs: number }[] = [];
    // Three kills, each a few ms after a fire time (the leader's timer fires 5 ms after the second;
    // its kv.txn commits a few ms later): before the decision, between it and the commit, after.
    for (const offsetMs of [3, 9, 20]) {
      const lead = await leader();
      via = ['n1', 'n2', 'n3'].find((n) => n !== lead)!;
      const next = (await inspect('failover')).schedule!.nextFireMs!;
      await sleep(Math.max(0, next - Date.now() - 40));
      while (Date.now() < next + offsetMs); // spin the last ms: a timer is not that precise
      const at = Date.now();
      await c.kill(lead);
      kills.push({ at, fireMs: next });
      await waitFor('a new leader', async () => {
        const l = await leader().catch(() => null);
        return l && l !== lead ? l : undefined;
      }, 60_000, 200);
      await c.restart(lead);
      await waitFor(`${lead} back`, async () => {
        const client = c.client(lead);
        try {
          const s = await client.get<{ health: string; leader: string | null }>('/v1/status?stale=true');
          return s.leader ? true : undefined;
        } catch {
          return undefined;
        } finally {
          client.close();
        }
      }, 60_000, 200);
    }
    // Periods under the last leader too.
    const lastKill = kills.at(-1)!.at;
    await waitFor('2 runs after the last kill', async () => ((await runLog(log)).filter(([, s]) => s > lastKill + 1000).length >= 2 ? true : undefined), 60_000, 200);
    await api('POST', '/v1/apps/failover/schedule/disable');
    await sleep(1500);
    const lines = await runLog(log);
    const a = await inspect('failover');
    const fired = [...a.cronRecord!.runs, ...a.cronRecord!.active].filter((r) => r.run > 0);
    // No scheduled time was fired twice: one run per scheduled time, run numbers without a gap.
    expect(new Set(fired.map((r) => r.scheduledMs)).size).toBe(fired.length);
    expect(fired.map((r) => r.run).sort((x, y) => x - y)).toEqual(fired.map((_, i) => i + 1));
    // Each run's command ran once per attempt (a task lost with its node is retried as a new attempt).
    for (const r of fired) expect(lines.filter(([n, s]) => n === r.run && s === r.scheduledMs).length, `run ${r.run}`).toBeLessThanOrEqual(r.attempts);
    expect(lines.every(([n, s]) => fired.some((r) => r.run === n && r.scheduledMs === s))).toBe(true);
    // None lost: every time from the first run to the last ran, or is recorded missed (collapsed
    // into the one catch-up run after an election; never past the 30 s deadline here) or skipped
    // (concurrencyPolicy forbid: a run whose task was lost with the killed node was still retrying).
    const missed = a.cronRecord!.runs.filter((r) => r.status === 'missed' || r.status === 'skipped').map((r) => r.scheduledMs);
    const dump = JSON.stringify({ runs: a.cronRecord!.runs.map((r) => [r.run, new Date(r.scheduledMs).toISOString(), r.status, r.attempts]), kills: kills.map((k) => new Date(k.fireMs).toISOString()) });
    const ran = fired.map((r) => r.scheduledMs).sort((x, y) => x - y);
    for (let t = ran[0]; t <= ran.at(-1)!; t += 3000) expect(ran.includes(t) || missed.includes(t), `${new Date(t).toISOString()} in ${dump}`).toBe(true);
    for (const k of kills) expect(ran.includes(k.fireMs) || missed.includes(k.fireMs)).toBe(true);
    console.log(`failover: ${fired.length} runs, ${missed.length} missed or skipped; kills at +${kills.map((k) => k.at - k.fireMs).join(', +')} ms after a fire time, which ran: ${kills.map((k) => ran.includes(k.fireMs)).join(', ')}; attempts ${fired.map((r) => r.attempts).join(',')}`);
  });

  it('a service with a schedule: its replicas serve, its schedule runs its command with the same env', async () => {
    const log = join(dir, 'svc.log');
    const spec = {
      name: 'apisched',
      command: ['sh', '-c', 'sleep 1000'],
      env: { GREETING: 'hello' },
      replicas: 2,
      schedule: { cron: '*/2 * * * * *', command: `echo "$GREETING $OMNI_CRON_RUN" >> "${log}"` },
    };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    await waitFor('2 scheduled runs', async () => ((await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean).length >= 2 ? true : undefined), 60_000, 200);
    const a = await inspect('apisched');
    expect(a.type).toBe('service');
    expect(a.replicas).toBe(2);
    expect(a.schedule!.state).toBe('ON');
    const lines = (await readFile(log, 'utf8')).split('\n').filter(Boolean);
    expect(lines.slice(0, 2)).toEqual(['hello 1', 'hello 2']);
    await waitFor('2 replicas running', async () => ((await inspect('apisched')).healthy === 2 ? true : undefined), 30_000, 200);
  });

  it('keeps every record Omni wrote in protobuf on every node (none kept as JSON text)', async () => {
    const counts = await recordsKeptAsText(c);
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const n of Object.values(counts)) expect(n).toBe(0);
  });
});
