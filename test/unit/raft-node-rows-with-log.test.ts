// A Ready that writes its log and also applies committed entries writes the rows they change in
// its log's batch (one LevelDB write instead of two). A real RaftNode on disk under a burst of
// proposals: such batches happen, what is stored is the state (also after a restart), the stored
// applied index never passes the stored commit index, and a merged write that fails for lack of
// space is retried without applying its entries twice. A commit-only Ready's rows wait for the
// next log write (one write at a time: the next proposal's), for a tick, or not at all when big.
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { RaftNode } from '../../node/raft/raft-node.js';
import type { RaftStorage } from '../../node/raft/raft-storage.js';
import type { Entry, Ready } from '../../protocol/raft/types.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';
import { DiskRaftNodes } from '../support/disk-raft-nodes.js';

const ID = 'solo';
let cluster: DiskRaftNodes | undefined;

afterEach(async () => {
  await cluster?.destroy();
  cluster = undefined;
});

/** A one-voter node on a fresh data dir (it leads at once), retrying a full disk every 20 ms. */
async function soloNode(tickMs = 10): Promise<{ dir: string; node: RaftNode; storage: RaftStorage; fatal: Error[] }> {
  const fatal: Error[] = [];
  cluster = new DiskRaftNodes([ID], { tickMs, electionTick: 10, heartbeatTick: 1 }, { noSpaceRetryMs: 20, onFatal: (err) => fatal.push(err) });
  const { node, dir, storage } = await cluster.open(ID);
  await waitFor('a leader', () => node.isLeader, 5000, 10);
  return { dir, node, storage, fatal };
}


const put = (key: string, value: string) => encodeCommand({ type: 'kv.put', key, value });

/** Proposals in waves that overlap: each wave's entries are written while the last wave's commit. */
async function burst(node: RaftNode, prefix: string, count: number): Promise<void> {
  const results = await Promise.all(Array.from({ length: count }, (_, i) => new Promise<void>((r) => setTimeout(r, i % 10)).then(() => node.propose(put(`${prefix}${i}`, `v${i}`)))));
  for (const r of results) expect(r.ok).toBe(true);
}

describe('RaftNode writes applied rows with its log', () => {
  it('a Ready with new entries and committed ones writes both in one batch; the stored state is the state, after a restart too', async () => {
    const { dir, node, storage, fatal } = await soloNode();
    const realSave = storage.save.bind(storage);
    const merged: { appliedIndex: number; commit: number | undefined; rows: number }[] = [];
    vi.spyOn(storage, 'save').mockImplementation((part, sync) => {
      if (part.state) merged.push({ appliedIndex: part.state.appliedIndex, commit: part.hardState?.commit, rows: part.state.rows.size });
      return realSave(part, sync);
    });
    for (let wave = 0; wave < 20 && !merged.some((m) => m.rows > 0); wave++) await burst(node, `w${wave}/`, 40);
    expect(merged.length, 'log writes that carried rows').toBeGreaterThan(0);
    // (the entry a new leader appends changes no row: its batch carries the applied index only)
    expect(merged.some((m) => m.rows > 0), 'log writes that carried changed rows').toBe(true);
    for (const m of merged) {
      // the batch's hard state (when it has one) covers the entries its rows reflect
      if (m.commit !== undefined) expect(m.commit).toBeGreaterThanOrEqual(m.appliedIndex);
    }
    const applied = node.state.appliedIndex;
    const keys = node.state.kvCount();
    expect(fatal).toEqual([]);
    cluster!.nodes.splice(cluster!.nodes.indexOf(node), 1);
    await node.stop();
    const persisted = await storage.load();
    const stored = await storage.loadState();
    expect(stored?.appliedIndex).toBe(applied);
    expect(persisted.hardState.commit).toBeGreaterThanOrEqual(stored!.appliedIndex);
    await storage.close();
    const again = await cluster!.reopen(ID, dir);
    expect(again.state.appliedIndex).toBeGreaterThanOrEqual(applied);
    expect(again.state.kvCount()).toBe(keys);
    expect(again.state.kvGet('w0/7')?.value).toBe('v7');
  }, 60_000);

  it('a merged write that fails for lack of space is retried; its entries are applied once', async () => {
    const { node, storage, fatal } = await soloNode();
    const realSave = storage.save.bind(storage);
    let failed = 0;
    vi.spyOn(storage, 'save').mockImplementation(async (part, sync) => {
      if (part.state && failed < 3) {
        failed++;
        throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 });
      }
      return realSave(part, sync);
    });
    for (let wave = 0; wave < 20 && failed === 0; wave++) await burst(node, `w${wave}/`, 40).catch(() => undefined);
    expect(failed, 'merged writes refused').toBeGreaterThan(0);
    await waitFor('writes resume', () => !node.outOfSpace, 10_000, 10);
    // every key written once (a second apply would stop the node: APPLY_DIVERGED)
    await burst(node, 'after/', 20);
    expect(fatal).toEqual([]);
    for (let i = 0; i < 20; i++) expect(node.state.kvGet(`after/${i}`)).toMatchObject({ value: `v${i}`, version: 1 });
    for (const r of node.state.kvListMeta('w', 10_000)) expect(r.version).toBe(1);
  }, 60_000);

  it('one write at a time: the rows a commit applied ride the log batch of the next write; the last ones are written at the next tick', async () => {
    const { node, storage, fatal } = await soloNode(50);
    const realSave = storage.save.bind(storage);
    const realSaveState = storage.saveState.bind(storage);
    let carried = 0;
    let ownBatches = 0;
    vi.spyOn(storage, 'save').mockImplementation((part, sync) => {
      if (part.state && part.entries.length > 0) carried++;
      return realSave(part, sync);
    });
    vi.spyOn(storage, 'saveState').mockImplementation((rows, applied, sync, hs) => {
      ownBatches++;
      return realSaveState(rows, applied, sync, hs);
    });
    for (let i = 0; i < 10; i++) expect((await node.propose(put(`k${i}`, `v${i}`))).ok).toBe(true);
    // each proposal's log write carried the rows of the one before (a tick may have written some on their own)
    expect(carried + ownBatches).toBeGreaterThanOrEqual(9);
    expect(carried).toBeGreaterThanOrEqual(5);
    await waitFor('the last rows written', async () => (await storage.loadState())?.appliedIndex === node.state.appliedIndex, 5000, 10);
    expect(fatal).toEqual([]);
  }, 30_000);

  it('held rows wait for a log write while small; a big value is written at once', async () => {
    // ticks a minute apart: nothing is written by a tick during this test
    const { node, storage } = await soloNode(60_000);
    expect((await node.propose(put('small', 'v'))).ok).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    expect((await storage.loadState())?.appliedIndex, 'small rows held').toBeLessThan(node.state.appliedIndex);
    // the value read back while its row is held
    expect(node.state.kvGet('small')?.value).toBe('v');
    expect((await node.propose(put('big', 'x'.repeat(300_000)))).ok).toBe(true);
    await waitFor('big rows written', async () => (await storage.loadState())?.appliedIndex === node.state.appliedIndex, 5000, 10);
    expect((await node.kvGet('big'))?.value.length).toBe(300_000);
    // a stop writes what is held
    expect((await node.propose(put('last', 'v'))).ok).toBe(true);
    const applied = node.state.appliedIndex;
    cluster!.nodes.splice(cluster!.nodes.indexOf(node), 1);
    await node.stop();
    expect((await storage.loadState())?.appliedIndex).toBe(applied);
    await storage.close();
  }, 30_000);

  it('a leader applies before its log write (rows in the batch); a follower writes and acknowledges first, then applies', async () => {
    // per node: for each Ready that wrote entries and applied committed ones, whether its write
    // (persisted) came before the first of its entries was applied
    const order = new Map<string, { writeFirst: number; applyFirst: number }>();
    const seq = { n: 0 };
    const observer = (id: string) => {
      const persistedAt = new Map<Ready, number>();
      const appliedAt = new Map<number, number>();
      const o = { writeFirst: 0, applyFirst: 0 };
      order.set(id, o);
      return {
        persisted: (rd: Ready) => void persistedAt.set(rd, seq.n++),
        applying: (e: Entry) => void appliedAt.set(e.index, seq.n++),
        handled: (rd: Ready) => {
          if (rd.entries.length === 0 || rd.committedEntries.length === 0) return;
          if (persistedAt.get(rd)! < appliedAt.get(rd.committedEntries[0].index)!) o.writeFirst++;
          else o.applyFirst++;
        },
      };
    };
    const nodes: RaftNode[] = [];
    cluster = new DiskRaftNodes(['a', 'b'], { tickMs: 20, electionTick: 5, heartbeatTick: 1 }, (id) => ({ observer: observer(id) }));
    for (const id of ['a', 'b']) nodes.push((await cluster.open(id)).node);
    await waitFor('a leader', () => nodes.some((n) => n.isLeader), 20_000, 10);
    const leader = nodes.find((n) => n.isLeader)!;
    const follower = nodes.find((n) => n !== leader)!;
    for (let wave = 0; wave < 10; wave++) await burst(leader, `w${wave}/`, 40);
    await waitFor('the follower applied everything', () => follower.state.appliedIndex === leader.state.appliedIndex, 10_000, 10);
    const l = order.get(leader.id)!;
    const f = order.get(follower.id)!;
    expect(l.applyFirst, 'leader Readys that applied before writing').toBeGreaterThan(0);
    expect(f.writeFirst, 'follower Readys that wrote (and acknowledged) first').toBeGreaterThan(0);
    expect(f.applyFirst, 'follower Readys that applied before writing').toBe(0);
  }, 60_000);

  it('a Ready with only messages writes nothing: held rows never hold back a heartbeat answer', async () => {
    let quiet = false;
    let quietSaves = 0;
    cluster = new DiskRaftNodes(['a', 'b'], { tickMs: 20, electionTick: 10, heartbeatTick: 1 });
    const opened = await Promise.all(['a', 'b'].map((id) => cluster!.open(id)));
    await waitFor('a leader', () => opened.some((o) => o.node.isLeader), 20_000, 10);
    const leader = opened.find((o) => o.node.isLeader)!.node;
    const follower = opened.find((o) => !o.node.isLeader)!;
    const realSave = follower.storage.save.bind(follower.storage);
    vi.spyOn(follower.storage, 'save').mockImplementation((part, sync) => {
      if (quiet) quietSaves++;
      return realSave(part, sync);
    });
    for (let i = 0; i < 10; i++) {
      expect((await leader.propose(put(`q${i}`, 'v'))).ok).toBe(true);
      await waitFor('the follower applied it', () => follower.node.state.appliedIndex === leader.state.appliedIndex, 5000, 2);
      // no new entries from here: the follower's Readys are heartbeats (and a tick's rows batch)
      quiet = true;
      await new Promise((r) => setTimeout(r, 60));
      quiet = false;
    }
    expect(quietSaves, 'log writes while nothing was proposed').toBe(0);
  }, 60_000);
});
