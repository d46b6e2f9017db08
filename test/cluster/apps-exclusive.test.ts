// At most once, end to end (issue 12): an exclusive app on a real 3-node loopback cluster with
// the process driver. The omnid running its one task is frozen (SIGSTOP): its agent cannot renew
// the lease, so the process wrapper's watchdog kills the task once the lease file's deadline
// passes; the leader places a replacement elsewhere only after two leases of silence from that
// node. Each run of the task logs "start" and a heartbeat every 100 ms to one file, so any
// overlap would show as a replacement starting before the old task's last heartbeat. When the
// frozen omnid resumes, it reports the old task released and never runs it again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor } from './helpers.js';

const TASK = `const fs = require('fs'); const f = process.argv[1]; const id = process.env.OMNI_TASK_ID;
fs.appendFileSync(f, 'start ' + id + ' ' + process.env.OMNI_TASK_EPOCH + ' ' + Date.now() + '\\n');
setInterval(() => fs.appendFileSync(f, 'alive ' + id + ' ' + Date.now() + '\\n'), 100);`;

interface TaskView { id: string; node: string; desired: string; state: string; reason: string }
interface Inspect { pending: string; tasks: TaskView[]; events: { message: string }[] }

interface Run { id: string; epoch: number; startMs: number; lastAliveMs: number }

async function runs(file: string): Promise<Run[]> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const out = new Map<string, Run[]>();
  const all: Run[] = [];
  for (const line of text.split('\n')) {
    const [kind, id, a, b] = line.split(' ');
    if (kind === 'start') {
      const r = { id, epoch: Number(a), startMs: Number(b), lastAliveMs: Number(b) };
      all.push(r);
      out.set(id, [...(out.get(id) ?? []), r]);
    } else if (kind === 'alive') {
      const r = out.get(id)?.at(-1);
      if (r) r.lastAliveMs = Math.max(r.lastAliveMs, Number(a));
    }
  }
  return all;
}

describe('exclusive apps on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  let dir: string;
  let via = 'n1';
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, via, method, path, body);
  const inspect = async (name: string) => (await api<Inspect>('GET', `/v1/apps/${name}`)).body;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-exclusive-'));
    c = await formCluster(['n1', 'n2', 'n3']);
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('a frozen node loses its exclusive task before the replacement starts elsewhere, and never runs it again', async () => {
    const lead = (await api<{ leader: string }>('GET', '/v1/status')).body.leader;
    via = lead;
    const file = join(dir, 'events');
    const spec = { name: 'solo', command: [process.execPath, '-e', TASK, file], replicas: 1, exclusive: true, constraints: [`node.name!=${lead}`] };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const first = await waitFor('the task to run', async () => {
      const a = await inspect('solo');
      const t = a.tasks.find((x) => x.desired === 'run' && x.state === 'running');
      return t && (await runs(file)).length === 1 ? t : undefined;
    }, 60_000, 200);
    const victim = first.node;
    // Let the constraint allow every other node for the replacement (the leader included).
    void c.kill(victim, 'SIGSTOP');
    const frozenAt = Date.now();
    try {
      // The leader waits: the app says why.
      await waitFor('the pending reason', async () => (/exclusive: waiting for task/.test((await inspect('solo')).pending) ? true : undefined), 30_000, 200);
      const replaced = await waitFor('a replacement to run', async () => {
        const r = await runs(file);
        return r.length >= 2 ? r : undefined;
      }, 90_000, 200);
      const [old, next] = replaced;
      expect(old.id).toBe(first.id);
      expect(next.id).not.toBe(old.id);
      // The old run ended (its watchdog killed it) before the new one started: never both at once.
      expect(next.startMs).toBeGreaterThan(old.lastAliveMs);
      // ... and it was killed only after the lease it held could have run out (not before it was frozen).
      expect(old.lastAliveMs).toBeGreaterThanOrEqual(frozenAt - 200);
      // A higher allocation epoch for the later placement.
      expect(next.epoch).toBeGreaterThan(old.epoch);
      const a = await inspect('solo');
      expect(a.tasks.find((t) => t.id === next.id)?.node).not.toBe(victim);
    } finally {
      c.nodes.get(victim)!.proc.kill('SIGCONT');
    }
    // The frozen omnid resumes with a stale replica: it reports the old task released and never starts it.
    await waitFor('the old task released', async () => {
      const s = await api<{ value: string }>('GET', `/v1/kv/taskstatus/${first.id}`);
      return s.status === 200 && JSON.parse(s.body.value).released === true ? true : undefined;
    }, 60_000, 300);
    await new Promise((r) => setTimeout(r, 3000));
    const final = await runs(file);
    expect(final.filter((r) => r.id === first.id)).toHaveLength(1);
    const live = final.filter((r) => Date.now() - r.lastAliveMs < 1000);
    expect(live).toHaveLength(1);
    await api('DELETE', '/v1/apps/solo');
  });
});
