// kill -9 of the leader under continuous writes: a new leader takes over, no acknowledged
// write is lost, and the killed node catches up after a restart.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, status, get, put, waitFor } from './helpers.js';

describe('leader failure under write load', () => {
  let c: LocalCluster;
  beforeAll(async () => {
    c = await formCluster(['f1', 'f2', 'f3']);
  });
  afterAll(async () => c?.destroy());

  it('elects a new leader and keeps every acknowledged write', async () => {
    const names = ['f1', 'f2', 'f3'];
    const before = await status(c, 'f1');
    const leader = before.leader!;
    const acked = new Map<string, string>();
    let stop = false;
    let attempts = 0;
    const writers = [0, 1, 2, 3].map(async (w) => {
      for (let i = 0; !stop; i++) {
        const target = names[(w + i) % 3];
        if (!c.nodes.get(target)!.running) continue;
        const key = `load/${w}/${i}`;
        const client = c.client(target);
        attempts++;
        try {
          await client.put(`/v1/kv/${encodeURIComponent(key)}`, { value: `v${i}` });
          acked.set(key, `v${i}`);
        } catch {
          // unacknowledged: may or may not be applied, never counted
        } finally {
          client.close();
        }
      }
    });
    await waitFor('some writes before the crash', () => acked.size >= 50);
    const killedAt = Date.now();
    await c.kill(leader);
    const survivor = names.find((n) => n !== leader)!;
    const after = await waitFor('a new leader', async () => {
      const s = await status(c, survivor);
      return s.leader && s.leader !== leader ? s : undefined;
    });
    const ackedAtFailover = acked.size;
    await waitFor('writes succeed again', () => acked.size >= ackedAtFailover + 50);
    const recoveredMs = Date.now() - killedAt;
    stop = true;
    await Promise.all(writers);
    expect(after.term).toBeGreaterThan(before.term);
    expect(recoveredMs).toBeGreaterThan(0);
    expect(attempts).toBeGreaterThanOrEqual(acked.size);
    // Every acknowledged write is readable (linearizably) through each survivor.
    for (const n of names.filter((x) => x !== leader)) {
      const client = c.client(n);
      try {
        const { items } = await client.get<{ items: { key: string; value: string }[] }>('/v1/kv?prefix=load/&limit=10000');
        const have = new Map(items.map((i) => [i.key, i.value]));
        const missing = [...acked].filter(([k, v]) => have.get(k) !== v);
        expect(missing, `lost on ${n}`).toEqual([]);
      } finally {
        client.close();
      }
    }
    // The killed node restarts from its data dir and catches up.
    await c.restart(leader);
    const last = [...acked.keys()].pop()!;
    const caughtUp = await waitFor('restarted node catches up', async () => {
      const v = await get(c, leader, last, true).catch(() => undefined);
      return v?.value === acked.get(last) ? v : undefined;
    });
    expect(caughtUp.value).toBe(acked.get(last));
    const s = await status(c, leader);
    expect(s.voters).toEqual(['f1', 'f2', 'f3']);
  });

  it('survives a kill -9 of every node: all restart on their old addresses and keep the data', async () => {
    const names = ['f1', 'f2', 'f3'];
    await put(c, 'f2', 'before/full-restart', 'kept');
    await Promise.all(names.map((n) => c.kill(n)));
    for (const n of names) await c.restart(n);
    const s = await waitFor('a leader after a full restart', async () => {
      const st = await status(c, 'f1');
      return st.leader ? st : undefined;
    }, 60_000);
    expect(s.voters).toEqual(names);
    expect((await get(c, 'f3', 'before/full-restart')).value).toBe('kept');
    await put(c, 'f1', 'after/full-restart', 'ok');
    expect((await get(c, 'f2', 'after/full-restart')).value).toBe('ok');
  });
});
