// Raft safety properties the simulator checks after every event (Raft paper Figure 3):
// election safety, state machine safety (which implies log matching on applied prefixes),
// leader completeness, and "nothing applied before it is committed".

import type { Raft } from '../protocol/raft/raft.js';
import type { Entry, NodeId, RaftObservation } from '../protocol/raft/types.js';

/** A configuration as a node's snapshot plus its applied conf changes imply it. */
export interface ConfSets {
  voters: Set<NodeId>;
  learners: Set<NodeId>;
}

export class SafetyViolation extends Error {
  readonly code = 'SAFETY_VIOLATION';
  constructor(message: string) {
    super(message);
    this.name = 'SafetyViolation';
  }
}

interface AppliedRecord {
  term: number;
  type: Entry['type'];
  data: Uint8Array;
  node: NodeId;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a === b) return true;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class InvariantChecker {
  private leaderByTerm = new Map<number, NodeId>();
  private applied = new Map<number, AppliedRecord>();
  private maxApplied = 0;
  private maxLeaderTerm = 0;
  checks = 0;

  /** Election safety (§5.2): at most one leader per term. */
  observeLeader(id: NodeId, term: number, raft: Raft): void {
    this.checks++;
    const known = this.leaderByTerm.get(term);
    if (known !== undefined && known !== id) {
      throw new SafetyViolation(`election safety: two leaders in term ${term}: ${known} and ${id}`);
    }
    if (known === undefined) {
      this.leaderByTerm.set(term, id);
      // A leader first seen after a later term's leader (a candidate paused before it won) was
      // elected long before it is seen: what was committed meanwhile need not be in its log,
      // and it cannot commit anything (every voter is in a later term).
      if (term >= this.maxLeaderTerm) this.checkLeaderCompleteness(id, term, raft);
      this.maxLeaderTerm = Math.max(this.maxLeaderTerm, term);
    }
  }

  /** Leader completeness (§5.4): a new leader's log holds every entry applied anywhere. */
  private checkLeaderCompleteness(id: NodeId, term: number, raft: Raft): void {
    const first = raft.log.firstIndex();
    for (let i = first; i <= this.maxApplied; i++) {
      const rec = this.applied.get(i);
      if (!rec) continue;
      const t = raft.log.term(i);
      if (t !== rec.term) {
        throw new SafetyViolation(
          `leader completeness: leader ${id} of term ${term} has term ${t ?? 'none'} at index ${i}, but ${rec.node} applied term ${rec.term} there`,
        );
      }
    }
  }

  /**
   * Election restriction (§5.4.1), for votes and pre-votes alike: a node grants only to a
   * candidate whose log is at least as up-to-date as its own.
   */
  observeCore(id: NodeId, o: RaftObservation): void {
    this.checks++;
    if (o.kind !== 'vote-granted') return;
    const c = o.candidateLast;
    const own = o.ownLast;
    if (c.term > own.term || (c.term === own.term && c.index >= own.index)) return;
    throw new SafetyViolation(
      `election restriction: ${id} granted a ${o.pre ? 'pre-vote' : 'vote'} in term ${o.term} to ${o.candidate} whose log (last ${c.index}@${c.term}) is behind its own (last ${own.index}@${own.term})`,
    );
  }

  /** A node's configuration is the one its snapshot plus its applied conf changes imply. */
  checkConf(id: NodeId, expected: ConfSets, raft: Raft): void {
    this.checks++;
    const show = (s: ReadonlySet<NodeId>) => [...s].sort().join(',');
    if (show(raft.voters) === show(expected.voters) && show(raft.learners) === show(expected.learners)) return;
    throw new SafetyViolation(
      `configuration: ${id} has voters [${show(raft.voters)}] learners [${show(raft.learners)}], but its snapshot and applied entries say voters [${show(expected.voters)}] learners [${show(expected.learners)}] (applied ${raft.log.applied})`,
    );
  }

  /** State machine safety (§5.4.3): every node applies the same entry at a given index. */
  observeApply(id: NodeId, e: Entry, committed: number): void {
    this.checks++;
    if (e.index > committed) {
      throw new SafetyViolation(`${id} applied index ${e.index} before it was committed (commit ${committed})`);
    }
    const rec = this.applied.get(e.index);
    if (!rec) {
      this.applied.set(e.index, { term: e.term, type: e.type, data: e.data, node: id });
      if (e.index > this.maxApplied) this.maxApplied = e.index;
      return;
    }
    if (rec.term !== e.term || rec.type !== e.type || !sameBytes(rec.data, e.data)) {
      throw new SafetyViolation(
        `state machine safety: ${id} applied term ${e.term} at index ${e.index}, but ${rec.node} applied term ${rec.term} there`,
      );
    }
  }
}
