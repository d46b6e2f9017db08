// Unit tests of log compaction with a kept tail (etcd's SnapshotCatchUpEntries), the pure
// compactionPoint policy, the `applied` start option (etcd's Config.Applied) and the leader's
// snapshot / unreachable reports (etcd's ReportSnapshot, ReportUnreachable).

import { describe, expect, it } from 'vitest';
import { Raft, bootstrapState, type PersistedState } from '../../protocol/raft/raft.js';
import { compactionPoint, DEFAULT_TAIL_ENTRIES } from '../../protocol/raft/compaction.js';
import { ENTRY_OVERHEAD_BYTES } from '../../protocol/raft/log.js';
import { ProgressState } from '../../protocol/raft/progress.js';
import { RaftInvariantError } from '../../protocol/raft/errors.js';
import { ConfChangeType, type Entry, EntryType, MessageType, Role, emptyMessage } from '../../protocol/raft/types.js';
import { encodeConfChange } from '../../protocol/codec.js';
import { seededRng } from '../../protocol/rng.js';
import { MemoryCluster } from '../../sim/memory-cluster.js';

const enc = (s: string) => new TextEncoder().encode(s);
const ids = ['n1', 'n2', 'n3'];

function entry(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

/**
 * A 3-node cluster whose follower `lagging` was down while `missed` entries were committed;
 * then the leader compacts with a tail of `tailEntries` (its snapshot is at the applied index).
 */
function clusterWithLaggingFollower(seed: number, missed: number, tailEntries: number) {
  const c = new MemoryCluster(ids, { seed });
  const leader = c.electLeader();
  for (let i = 0; i < 10; i++) c.propose(`before${i}`);
  c.tick(2);
  const lagging = ids.find((x) => x !== leader.id)!;
  c.crash(lagging);
  for (let i = 0; i < missed; i++) c.propose(`missed${i}`);
  c.tick(2);
  const point = leader.compactionPoint({ everyEntries: 1, tailEntries });
  expect(point).toBe(leader.log.applied - tailEntries);
  const snap = leader.compact(point!, enc(`state@${leader.log.applied}`));
  let snapshotsSent = 0;
  c.dropIf = (m) => {
    if (m.type === MessageType.Snap) snapshotsSent++;
    return false;
  };
  return { c, leader, lagging, snap, point: point!, snapshots: () => snapshotsSent };
}

describe('§7 compaction with a kept tail', () => {
  it('keeps the entries after the compaction point while the snapshot covers the applied index', () => {
    const { leader, snap, point } = clusterWithLaggingFollower(31, 20, 8);
    expect(snap.meta.index).toBe(leader.log.applied);
    expect(leader.log.snapshot).toBe(snap);
    expect(leader.log.firstIndex()).toBe(point + 1);
    expect(leader.log.term(point)).toBe(leader.term); // the marker keeps the term at the point
    expect(leader.log.entryAt(point + 1)?.index).toBe(point + 1);
    expect(leader.log.entryAt(point)).toBeUndefined();
  });

  it('a follower that lags by less than the tail catches up with appends: no snapshot is sent', () => {
    const { c, leader, lagging, snap, snapshots } = clusterWithLaggingFollower(32, 20, 25);
    const laggingLast = c.nodes.get(lagging)!.stored.entries.at(-1)!.index;
    // Compacting exactly at the applied index would have forced a snapshot on this follower.
    expect(snap.meta.index).toBeGreaterThan(laggingLast);
    expect(leader.log.firstIndex()).toBeLessThanOrEqual(laggingLast + 1);
    c.restart(lagging);
    c.tick(5);
    expect(snapshots()).toBe(0);
    expect(c.get(lagging).log.lastIndex()).toBe(leader.log.lastIndex());
    expect(c.appliedData(lagging).filter((d) => d.startsWith('missed'))).toEqual(Array.from({ length: 20 }, (_, i) => `missed${i}`));
  });

  it('a follower that lags past the tail gets the snapshot, then the entries after it', () => {
    const { c, leader, lagging, snap, snapshots } = clusterWithLaggingFollower(33, 20, 5);
    c.restart(lagging);
    c.tick(5);
    expect(snapshots()).toBeGreaterThanOrEqual(1);
    expect(c.get(lagging).log.snapshot.meta.index).toBe(snap.meta.index);
    c.propose('after');
    c.tick(2);
    expect(c.get(lagging).log.lastIndex()).toBe(leader.log.lastIndex());
    expect(c.appliedData(lagging)).toContain('after');
  });

  it('the old one-argument compact still compacts exactly at the applied index', () => {
    const c = new MemoryCluster(ids, { seed: 34 });
    const leader = c.electLeader();
    for (let i = 0; i < 5; i++) c.propose(`v${i}`);
    const snap = leader.compact(enc('state'));
    expect(snap.meta.index).toBe(leader.log.applied);
    expect(leader.log.firstIndex()).toBe(leader.log.applied + 1);
  });

  it('refuses to compact beyond the applied index', () => {
    const c = new MemoryCluster(ids, { seed: 35 });
    const leader = c.electLeader();
    c.propose('x');
    expect(() => leader.compact(leader.log.applied + 1, enc('s'))).toThrow(/beyond applied/);
  });

  it('restarts from a snapshot plus a kept tail: the tail serves appends after the restart', () => {
    const voters = ['n1', 'n2', 'n3'];
    const boot = bootstrapState(voters);
    const entries = [...boot.entries, ...[4, 5, 6, 7, 8, 9, 10].map((i) => entry(i, 1))];
    // Snapshot at 8, stored entries from 5 on (the tail kept by a compaction to index 4).
    const state: PersistedState = {
      hardState: { term: 1, vote: '', commit: 10 },
      snapshot: { meta: { index: 8, term: 1, conf: { voters, learners: [] } }, data: enc('state@8') },
      entries: entries.filter((e) => e.index >= 5),
    };
    const r = new Raft({ id: 'n1', electionTick: 10, heartbeatTick: 1, rng: seededRng(1) }, state);
    // entry 5 only marks the term before the first held index
    expect(r.log.firstIndex()).toBe(6);
    expect(r.log.term(5)).toBe(1);
    expect(r.log.lastIndex()).toBe(10);
    expect(r.log.applied).toBe(8);
    const first = r.ready();
    expect(first.committedEntries.map((e) => e.index)).toEqual([9, 10]);
    r.advance(first);
    // a term-2 leader appends after index 6, inside the tail: accepted from the log
    r.step({ ...emptyMessage(MessageType.App, 'n2', 'n1', 2), index: 10, logTerm: 1, entries: [entry(11, 2)], commit: 11 });
    const rd = r.ready();
    expect(rd.messages.find((m) => m.type === MessageType.AppResp)).toMatchObject({ reject: false, index: 11 });
  });

  it('refuses a stored tail that disagrees with the snapshot term, or leaves a gap', () => {
    const voters = ['n1'];
    const snapshot = { meta: { index: 5, term: 2, conf: { voters, learners: [] } }, data: enc('s') };
    const cfg = { id: 'n1', electionTick: 10, heartbeatTick: 1, rng: seededRng(1) };
    const tail = [3, 4, 5, 6].map((i) => entry(i, 1));
    expect(() => new Raft(cfg, { hardState: { term: 2, vote: '', commit: 5 }, snapshot, entries: tail })).toThrow(/entry 5 has term 1/);
    expect(() => new Raft(cfg, { hardState: { term: 2, vote: '', commit: 5 }, snapshot, entries: [entry(7, 2)] })).toThrow(RaftInvariantError);
  });
});

describe('compactionPoint', () => {
  const base = { applied: 20_000, snapshotIndex: 10_000, firstIndex: 5_001, everyEntries: 10_000, logBytes: 1_000 };

  it('is due after everyEntries applied entries and keeps the tail (5000 by default, as etcd)', () => {
    expect(DEFAULT_TAIL_ENTRIES).toBe(5000);
    expect(compactionPoint(base)).toBe(15_000);
    expect(compactionPoint({ ...base, tailEntries: 100 })).toBe(19_900);
    expect(compactionPoint({ ...base, tailEntries: 0 })).toBe(20_000);
  });

  it('is not due before everyEntries, nor under the byte bound', () => {
    expect(compactionPoint({ ...base, applied: 19_999 })).toBeUndefined();
    expect(compactionPoint({ ...base, applied: 19_999, maxLogBytes: 1_000 })).toBeUndefined();
  });

  it('never goes below what is already compacted (a snapshot only)', () => {
    expect(compactionPoint({ ...base, firstIndex: 18_001 })).toBe(18_000);
  });

  it('is due over maxLogBytes and shortens the tail until half the bound is left', () => {
    // 100 bytes per entry held, entries 5001..20000
    const bytesAfter = (index: number) => Math.max(0, 20_000 - Math.max(index, 5_000)) * 100;
    const over = { ...base, applied: 19_000, logBytes: bytesAfter(0), maxLogBytes: 200_000, bytesAfter };
    // not due by count (9000 < 10000) but by bytes; half the bound = 100 000 bytes = 1000 entries
    expect(compactionPoint(over)).toBe(19_000);
    expect(compactionPoint({ ...over, maxLogBytes: 400_000 })).toBe(18_000);
    // the tail is kept when it fits
    expect(compactionPoint({ ...over, tailEntries: 500 })).toBe(19_000);
    expect(compactionPoint({ ...over, applied: 20_000, maxLogBytes: 1_200_000, tailEntries: 5000 })).toBe(15_000);
    // without bytesAfter the whole applied log goes
    expect(compactionPoint({ ...over, bytesAfter: undefined, maxLogBytes: 400_000 })).toBe(19_000);
  });

  it('over the byte bound with nothing applied to drop: not due', () => {
    expect(compactionPoint({ ...base, applied: 12_000, firstIndex: 12_001, logBytes: 10_000, maxLogBytes: 100 })).toBeUndefined();
  });

  it('refuses nonsense input with a clear error', () => {
    expect(() => compactionPoint({ ...base, everyEntries: 0 })).toThrow(/everyEntries must be a positive integer/);
    expect(() => compactionPoint({ ...base, tailEntries: -1 })).toThrow(/tailEntries/);
    expect(() => compactionPoint({ ...base, snapshotIndex: 30_000 })).toThrow(/snapshot index 30000 is after applied/);
  });

  it('Raft.compactionPoint reads the log and bytes of a live node', () => {
    const c = new MemoryCluster(ids, { seed: 36 });
    const leader = c.electLeader();
    for (let i = 0; i < 30; i++) c.propose('x'.repeat(100));
    const applied = leader.log.applied;
    expect(leader.compactionPoint({ everyEntries: applied + 1 })).toBeUndefined();
    expect(leader.compactionPoint({ everyEntries: 10, tailEntries: 10 })).toBe(applied - 10);
    // over a byte bound of 10 entries: keep at most 5 entries' bytes
    const perEntry = 100 + ENTRY_OVERHEAD_BYTES;
    expect(leader.compactionPoint({ everyEntries: 1_000_000, tailEntries: 20, maxLogBytes: 10 * perEntry })).toBe(applied - 5);
  });
});

describe('applied option (etcd Config.Applied)', () => {
  const voters = ['n1', 'n2', 'n3'];
  function state(): PersistedState {
    const boot = bootstrapState(voters);
    const removeN3: Entry = { index: 5, term: 1, type: EntryType.ConfChange, data: encodeConfChange({ type: ConfChangeType.RemoveNode, node: 'n3' }) };
    const entries = [...boot.entries, entry(4, 1), removeN3, ...[6, 7, 8, 9, 10].map((i) => entry(i, 1))];
    return { hardState: { term: 1, vote: '', commit: 10 }, entries };
  }
  const cfg = { id: 'n1', electionTick: 10, heartbeatTick: 1, rng: seededRng(1) };

  it('hands out only the committed entries after the applied index', () => {
    const r = new Raft({ ...cfg, applied: 7 }, state());
    expect(r.log.applied).toBe(7);
    expect(r.ready().committedEntries.map((e) => e.index)).toEqual([8, 9, 10]);
    const fresh = new Raft(cfg, state());
    expect(fresh.ready().committedEntries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  });

  it('takes the configuration of the entries already applied from the log', () => {
    const r = new Raft({ ...cfg, applied: 7 }, state());
    expect([...r.voters].sort()).toEqual(['n1', 'n2']);
    const before = new Raft({ ...cfg, applied: 4 }, state());
    expect([...before.voters].sort()).toEqual(voters);
  });

  it('refuses an applied index outside [snapshot index, commit]', () => {
    expect(() => new Raft({ ...cfg, applied: 11 }, state())).toThrow(/applied index 11 is out of range.*commit 10/);
    const withSnap: PersistedState = { ...state(), snapshot: { meta: { index: 3, term: 1, conf: { voters, learners: [] } }, data: enc('s') }, entries: state().entries.slice(3) };
    expect(() => new Raft({ ...cfg, applied: 2 }, withSnap)).toThrow(/snapshot index 3/);
    expect(() => new Raft({ ...cfg, applied: 1.5 }, state())).toThrow(/out of range/);
  });
});

describe('leader reports: reportSnapshot and reportUnreachable', () => {
  it('a failed snapshot is forgotten and sent again at the next heartbeat, not after an election timeout', () => {
    const run = (report: boolean) => {
      const { c, leader, lagging } = clusterWithLaggingFollower(37, 20, 5);
      let snaps = 0;
      c.dropIf = (m) => m.type === MessageType.Snap && ++snaps === 1; // the first snapshot is lost
      c.restart(lagging);
      c.tick(2);
      expect(snaps).toBe(1);
      const pr = leader.prs.get(lagging)!;
      expect(pr.state).toBe(ProgressState.Snapshot);
      if (report) {
        leader.reportSnapshot(lagging, false);
        expect(pr.state).toBe(ProgressState.Probe);
        expect(pr.pendingSnapshot).toBe(0);
        expect(pr.next).toBe(pr.match + 1);
      }
      c.tick(2); // well under the electionTick (10) after which an unacknowledged snapshot is resent
      return { snaps, c, leader, lagging };
    };
    const reported = run(true);
    expect(reported.snaps).toBe(2);
    expect(reported.c.get(reported.lagging).log.snapshot.meta.index).toBe(reported.leader.log.snapshot.meta.index);
    expect(run(false).snaps).toBe(1);
  });

  it('a delivered snapshot moves the follower to Probe from the snapshot index', () => {
    const { c, leader, lagging, snap } = clusterWithLaggingFollower(38, 20, 5);
    let snapshotSent = false;
    c.dropIf = (m) => {
      if (m.type === MessageType.Snap && m.to === lagging) snapshotSent = true;
      return snapshotSent && m.from === lagging; // the follower's answers to the snapshot are lost
    };
    c.restart(lagging);
    c.tick(2);
    const pr = leader.prs.get(lagging)!;
    expect(pr.state).toBe(ProgressState.Snapshot);
    leader.reportSnapshot(lagging, true);
    expect(pr.state).toBe(ProgressState.Probe);
    expect(pr.next).toBe(snap.meta.index + 1);
    expect(pr.isPaused()).toBe(true); // waits for an answer before the next append
    c.dropIf = undefined;
    c.tick(3);
    expect(c.get(lagging).log.lastIndex()).toBe(leader.log.lastIndex());
    expect(pr.state).toBe(ProgressState.Replicate);
  });

  it('reportSnapshot is a no-op for a follower not receiving a snapshot, on a non-leader and for an unknown peer', () => {
    const c = new MemoryCluster(ids, { seed: 39 });
    const leader = c.electLeader();
    c.propose('x');
    const follower = ids.find((x) => x !== leader.id)!;
    const pr = leader.prs.get(follower)!;
    expect(pr.state).toBe(ProgressState.Replicate);
    leader.reportSnapshot(follower, false);
    expect(pr.state).toBe(ProgressState.Replicate);
    leader.reportSnapshot('nobody', false);
    const other = c.get(follower);
    expect(other.role).toBe(Role.Follower);
    other.reportSnapshot(leader.id, false);
    other.reportUnreachable(leader.id);
    expect(other.hasReady()).toBe(false);
  });

  it('reportUnreachable drops a replicating follower to Probe, and only such a follower', () => {
    const c = new MemoryCluster(ids, { seed: 40 });
    const leader = c.electLeader();
    c.propose('x');
    const [f1, f2] = ids.filter((x) => x !== leader.id);
    const pr = leader.prs.get(f1)!;
    expect(pr.state).toBe(ProgressState.Replicate);
    leader.reportUnreachable(f1);
    expect(pr.state).toBe(ProgressState.Probe);
    expect(pr.next).toBe(pr.match + 1);
    expect(leader.prs.get(f2)!.state).toBe(ProgressState.Replicate);
    leader.reportUnreachable('nobody');
    // the follower comes back to Replicate on its next answer
    c.propose('y');
    expect(pr.state).toBe(ProgressState.Replicate);
    expect(c.get(f1).log.lastIndex()).toBe(leader.log.lastIndex());
  });
});
