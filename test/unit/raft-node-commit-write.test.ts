// A Ready that only moves the commit index is not a write of its own: its hard state goes into
// the batch that writes the rows its committed entries change — the next log write's batch, or
// a rows batch of its own a tick later (one LevelDB write instead of two or three per write on
// every node). Two real RaftNodes on disk: no commit-only log write happens, the
// rows' batches carry the commit index, and what is stored never has an applied index ahead of
// its commit index — also read back after a restart.
import { afterEach, describe, expect, it } from 'vitest';
import type { RaftStorage } from '../../node/raft/raft-storage.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';
import type { HardState } from '../../protocol/raft/types.js';
import { DiskRaftNodes } from '../support/disk-raft-nodes.js';

let cluster: DiskRaftNodes | undefined;
afterEach(async () => {
  await cluster?.destroy();
  cluster = undefined;
});

describe('RaftNode writes a commit index with the rows it applies', () => {
  it('no write of its own for a commit-only Ready; stored commit >= stored applied, also after a restart', async () => {
    cluster = new DiskRaftNodes(['a', 'b'], { tickMs: 50, electionTick: 4, heartbeatTick: 1 });
    const counts = new Map<string, { commitOnlySaves: number; rowsWithCommit: number }>();
    const stores = new Map<string, { dir: string; storage: RaftStorage }>();
    for (const id of ['a', 'b']) {
      const c = { commitOnlySaves: 0, rowsWithCommit: 0 };
      counts.set(id, c);
      const { dir, storage } = await cluster.open(id, (storage) => {
        const save = storage.save.bind(storage);
        storage.save = (part, sync) => {
          if (part.entries.length === 0 && part.hardState && !part.snapshot && !part.state) c.commitOnlySaves++;
          // a commit-only Ready's rows and commit index, carried by the next log write
          if (part.state && part.hardState) c.rowsWithCommit++;
          return save(part, sync);
        };
        const saveState = storage.saveState.bind(storage);
        storage.saveState = (rows, applied, sync, hs?: HardState) => {
          if (hs) c.rowsWithCommit++;
          return saveState(rows, applied, sync, hs);
        };
      });
      stores.set(id, { dir, storage });
    }
    const nodes = cluster.nodes;
    await waitFor('a leader', () => nodes.some((n) => n.isLeader), 20_000, 10);
    const leader = nodes.find((n) => n.isLeader)!;
    expect((await leader.propose(encodeCommand({ type: 'kv.put', key: 'warm', value: '0' }))).ok).toBe(true);
    for (const c of counts.values()) c.commitOnlySaves = c.rowsWithCommit = 0;
    for (let i = 0; i < 5; i++) expect((await leader.propose(encodeCommand({ type: 'kv.put', key: `k${i}`, value: String(i) }))).ok).toBe(true);
    await waitFor('the follower applied everything', () => nodes.every((n) => n.state.appliedIndex === leader.state.appliedIndex), 10_000, 10);
    for (const [id, c] of counts) {
      expect(c.commitOnlySaves, `${id}: commit-only log writes`).toBe(0);
      // held rows of several commits may share one batch (the next log write or a tick's)
      expect(c.rowsWithCommit, `${id}: row batches that carry the commit index`).toBeGreaterThanOrEqual(1);
    }
    const applied = leader.state.appliedIndex;
    await cluster.stopAll();
    for (const [id, { storage }] of stores) {
      const persisted = await storage.load();
      const state = await storage.loadState();
      expect(state?.appliedIndex, id).toBe(applied);
      expect(persisted.hardState.commit, id).toBeGreaterThanOrEqual(state!.appliedIndex);
      await storage.close();
    }
    // and they start again from it
    for (const [id, { dir }] of stores) expect((await cluster.reopen(id, dir)).state.appliedIndex).toBe(applied);
  }, 60_000);
});
