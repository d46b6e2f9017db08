// The log tail a compaction keeps (etcd's SnapshotCatchUpEntries) is on disk, not only in
// memory: after the leader and the other follower restart, a follower that fell a few entries
// behind before the restart still catches up with appends from the restarted leader's stored
// tail — no snapshot is sent. Three real RaftNodes over RaftStorage (LevelDB), messages passed
// in this process; a cut follower; the two others stopped, their stores closed and opened again.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { encodeCommand } from '../../protocol/cluster/state.js';

const IDS = ['a', 'b', 'c'];
// A compaction after every applied entry, keeping TAIL of them; none kept for lagging followers
// beyond the tail (keepLogBytesForFollowers 0): only the tail can serve the cut follower.
const EVERY = 1;
const TAIL = 10;
const dirs = new Map<string, string>();
const nodes = new Map<string, RaftNode>();
const storages = new Map<string, RaftStorage>();
const cut = new Set<string>();
let snapshotsSent = 0;

afterEach(async () => {
  for (const n of nodes.values()) await n.stop();
  for (const s of storages.values()) await s.close().catch(() => undefined);
  for (const d of dirs.values()) await rm(d, { recursive: true, force: true });
  nodes.clear();
  storages.clear();
  dirs.clear();
  cut.clear();
  snapshotsSent = 0;
});

async function openNode(id: string): Promise<RaftNode> {
  const storage = await RaftStorage.open(dirs.get(id)!);
  storages.set(id, storage);
  const node = await RaftNode.open({
    id,
    storage,
    send: (ms) => {
      for (const m of ms) {
        if (cut.has(m.to) || cut.has(m.from)) continue;
        setImmediate(() => nodes.get(m.to)?.step(m));
      }
    },
    log: silentLogger,
    timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
    snapshotEveryEntries: EVERY,
    snapshotTailEntries: TAIL,
    keepLogBytesForFollowers: 0,
    // A follower that needs a snapshot never gets one here: catching up must come from the log.
    sendSnapshot: async () => {
      snapshotsSent++;
      return false;
    },
  });
  nodes.set(id, node);
  node.start();
  return node;
}

const leaderOf = () => waitFor('a leader', () => [...nodes.values()].find((n) => n.isLeader), 10_000, 10);

async function writes(prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const leader = await leaderOf();
    expect((await leader.propose(encodeCommand({ type: 'kv.put', key: `${prefix}${i % 5}`, value: `${prefix}-${i}` }))).ok).toBe(true);
  }
}

describe('the log tail kept by a compaction', () => {
  it('survives a restart: a follower a few entries behind catches up from the restarted leader with appends, no snapshot', async () => {
    for (const id of IDS) {
      const dir = await mkdtemp(join(tmpdir(), `omni-tail-${id}-`));
      dirs.set(id, dir);
      const storage = await RaftStorage.open(dir);
      const boot = bootstrapState(IDS);
      await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
      await storage.close();
    }
    for (const id of IDS) await openNode(id);
    await writes('k', 2 * TAIL);
    const behind = IDS.find((id) => !nodes.get(id)!.isLeader)!;
    await waitFor('every node applied the first writes', () => IDS.every((id) => nodes.get(id)!.raft.log.applied === nodes.get(IDS.find((x) => nodes.get(x)!.isLeader)!)!.raft.log.applied), 5000, 10);
    cut.add(behind);
    await writes('m', TAIL / 2);
    const others = IDS.filter((id) => id !== behind);
    const lagApplied = nodes.get(behind)!.raft.log.applied;
    for (const id of others) {
      const n = nodes.get(id)!;
      // Each of the two compacted, keeping a tail that still reaches back to the lagging follower.
      await waitFor(`${id} compacted`, () => n.raft.log.firstIndex() > 1, 5000, 10);
      expect(n.raft.log.firstIndex()).toBeLessThanOrEqual(lagApplied + 1);
      expect(n.raft.log.applied).toBeGreaterThan(lagApplied + 2);
    }
    for (const id of others) {
      const n = nodes.get(id)!;
      await n.stop();
      await storages.get(id)!.close();
      nodes.delete(id);
      expect(n.raft.log.firstIndex()).toBeLessThanOrEqual(lagApplied + 1);
    }
    for (const id of others) {
      const n = await openNode(id);
      // The stored log starts where the compaction left it, not after the applied index (a
      // compaction after the restart keeps the entries the cut follower needs: keepAfter).
      expect(n.raft.log.firstIndex()).toBeLessThanOrEqual(lagApplied + 1);
      expect(n.state.appliedIndex).toBeGreaterThan(lagApplied + 2);
    }
    cut.delete(behind);
    const leader = await leaderOf();
    expect(leader.id).not.toBe(behind);
    await writes('n', 2);
    const lagging = nodes.get(behind)!;
    await waitFor('the lagging follower caught up', () => lagging.raft.log.applied === leader.raft.log.applied, 10_000, 10);
    expect(snapshotsSent).toBe(0);
    expect(lagging.state.kvGet('m0')?.value).toBe(leader.state.kvGet('m0')?.value);
  });
});
