// The driver's feedback into the Raft core (etcd's ReportSnapshot / ReportUnreachable): a follower
// in snapshot state leaves it when the streamed transfer reports finish or failure, and a follower
// the transport cannot reach stops being pipelined to.
import { describe, expect, it } from 'vitest';
import { MemoryCluster } from '../../sim/memory-cluster.js';
import { ProgressState } from '../../protocol/raft/progress.js';
import { MessageType } from '../../protocol/raft/types.js';

const ids = ['n1', 'n2', 'n3'];

/** A leader whose progress for a lagging follower is in snapshot state (its snapshots are dropped). */
function leaderSendingSnapshot(seed: number) {
  const c = new MemoryCluster(ids, { seed });
  const leader = c.electLeader();
  const lagging = ids.find((x) => x !== leader.id)!;
  c.crash(lagging);
  for (let i = 0; i < 30; i++) c.propose(`v${i}`);
  c.tick(2);
  c.compact(leader.id);
  let snaps = 0;
  c.dropIf = (m) => m.type === MessageType.Snap && m.to === lagging && ++snaps > 0;
  c.restart(lagging);
  for (let i = 0; i < 5 && leader.prs.get(lagging)!.state !== ProgressState.Snapshot; i++) c.tick(1);
  const pr = leader.prs.get(lagging)!;
  expect(pr.state).toBe(ProgressState.Snapshot);
  expect(snaps).toBeGreaterThan(0);
  return { c, leader, lagging, pr };
}

describe('reportSnapshot / reportUnreachable (driver feedback)', () => {
  it('finish: the follower is probed from past the snapshot, and appends wait for its answer', () => {
    const { leader, lagging, pr } = leaderSendingSnapshot(31);
    const snapIndex = pr.pendingSnapshot;
    expect(snapIndex).toBe(leader.log.snapshot.meta.index);
    leader.reportSnapshot(lagging, true);
    expect(pr.state).toBe(ProgressState.Probe);
    expect(pr.next).toBe(Math.max(pr.match + 1, snapIndex + 1));
    expect(pr.isPaused()).toBe(true);
  });

  it('failure: the follower is probed from past its match index (and may get a snapshot again)', () => {
    const { c, leader, lagging, pr } = leaderSendingSnapshot(32);
    leader.reportSnapshot(lagging, false);
    expect(pr.state).toBe(ProgressState.Probe);
    expect(pr.pendingSnapshot).toBe(0);
    expect(pr.next).toBe(pr.match + 1);
    // Delivered for real this time, the follower catches up.
    c.dropIf = undefined;
    c.tick(5);
    expect(c.get(lagging).log.lastIndex()).toBe(leader.log.lastIndex());
  });

  it('is ignored off the leader, for a follower not in snapshot state, and for unknown ids', () => {
    const { c, leader, lagging, pr } = leaderSendingSnapshot(33);
    const other = ids.find((x) => x !== leader.id && x !== lagging)!;
    const otherPr = leader.prs.get(other)!;
    const before = { state: otherPr.state, next: otherPr.next };
    leader.reportSnapshot(other, false);
    leader.reportSnapshot('nobody', true);
    expect({ state: otherPr.state, next: otherPr.next }).toEqual(before);
    c.get(other).reportSnapshot(lagging, true); // a follower: no progress to change
    expect(pr.state).toBe(ProgressState.Snapshot);
  });

  it('reportUnreachable moves a replicating follower to probe, and leaves others alone', () => {
    const { leader, lagging, pr } = leaderSendingSnapshot(34);
    const other = ids.find((x) => x !== leader.id && x !== lagging)!;
    const otherPr = leader.prs.get(other)!;
    expect(otherPr.state).toBe(ProgressState.Replicate);
    leader.reportUnreachable(other);
    expect(otherPr.state).toBe(ProgressState.Probe);
    leader.reportUnreachable(lagging);
    expect(pr.state).toBe(ProgressState.Snapshot);
  });
});
