// Unit tests of the Raft core, named after the section of the Raft paper (Ongaro & Ousterhout
// 2014) or of Ongaro's thesis (2014) that each one checks.

import { describe, expect, it } from 'vitest';
import { LEADERLESS_ELECTIONS, Raft, bootstrapState, emptyState } from '../../protocol/raft/raft.js';
import { ConfChangeType, type Entry, EntryType, type Message, MessageType, Role, emptyMessage } from '../../protocol/raft/types.js';
import { seededRng } from '../../protocol/rng.js';
import { encodeConfChange } from '../../protocol/codec.js';
import { MemoryCluster } from '../../sim/memory-cluster.js';

const enc = (s: string) => new TextEncoder().encode(s);
const ids = (n: number) => Array.from({ length: n }, (_, i) => `n${i + 1}`);

function entry(index: number, term: number, data = `e${index}`): Entry {
  return { index, term, type: EntryType.Normal, data: enc(data) };
}

/** A node whose log is [bootstrap conf of `voters`] + the given (index >= voters+1) entries. */
function nodeWithLog(id: string, voters: string[], terms: number[], hardTerm: number): Raft {
  const boot = bootstrapState(voters);
  const entries = [...boot.entries, ...terms.map((t, i) => entry(voters.length + 1 + i, t))];
  const r = new Raft(
    { id, electionTick: 10, heartbeatTick: 1, rng: seededRng(id.charCodeAt(1)) },
    { hardState: { term: hardTerm, vote: '', commit: voters.length }, entries },
  );
  // apply the bootstrap conf changes
  const rd = r.ready();
  r.advance(rd);
  return r;
}

describe('§5.2 leader election', () => {
  it('elects exactly one leader in 3- and 5-node clusters', () => {
    for (const n of [3, 5]) {
      const c = new MemoryCluster(ids(n), { seed: n });
      const leader = c.electLeader();
      expect(c.leaders()).toHaveLength(1);
      for (const id of ids(n)) expect(c.get(id).term).toBe(leader.term);
    }
  });

  it('election safety: at most one leader per term across many seeds with partitions', () => {
    for (let seed = 1; seed <= 30; seed++) {
      const c = new MemoryCluster(ids(5), { seed });
      const seen = new Map<number, string>();
      for (let t = 0; t < 300; t++) {
        if (t % 50 === 10) c.partition(['n1', 'n2'], ['n3', 'n4', 'n5']);
        if (t % 50 === 30) c.heal();
        c.tick();
        for (const l of c.leaders()) {
          const prev = seen.get(l.term);
          expect(prev === undefined || prev === l.id).toBe(true);
          seen.set(l.term, l.id);
        }
      }
    }
  });

  it('§5.4.1 election restriction: a candidate with a stale log cannot win', () => {
    const voters = ['n1', 'n2', 'n3'];
    const stale = nodeWithLog('n1', voters, [1], 1);
    const upToDate = nodeWithLog('n2', voters, [1, 1], 1);
    const vote: Message = { ...emptyMessage(MessageType.Vote, 'n1', 'n2', 2), index: stale.log.lastIndex(), logTerm: stale.log.lastTerm() };
    upToDate.step(vote);
    const resp = upToDate.ready().messages.find((m) => m.type === MessageType.VoteResp)!;
    expect(resp.reject).toBe(true);
  });

  it('§5.2 a node votes for at most one candidate per term', () => {
    const voters = ['n1', 'n2', 'n3'];
    const r = nodeWithLog('n3', voters, [], 1);
    r.step({ ...emptyMessage(MessageType.Vote, 'n1', 'n3', 2), index: 3, logTerm: 1 });
    r.step({ ...emptyMessage(MessageType.Vote, 'n2', 'n3', 2), index: 3, logTerm: 1 });
    const resps = r.ready().messages.filter((m) => m.type === MessageType.VoteResp);
    expect(resps.map((m) => [m.to, m.reject])).toEqual([
      ['n1', false],
      ['n2', true],
    ]);
  });

  it('§9.6 pre-vote: a partitioned node rejoining does not disrupt the leader', () => {
    const c = new MemoryCluster(ids(3), { seed: 7 });
    const leader = c.electLeader();
    const other = ids(3).find((id) => id !== leader.id)!;
    const termBefore = leader.term;
    c.isolate(other);
    c.tick(100);
    expect(c.get(other).term).toBe(termBefore); // pre-votes failed: the term did not grow
    c.heal();
    c.tick(5);
    expect(c.leader()?.id).toBe(leader.id);
    expect(c.leader()?.term).toBe(termBefore);
  });

  it('forgetLeader (etcd ForgetLeader): followers that forgot a dead leader elect a new one without waiting out its lease', () => {
    const c = new MemoryCluster(ids(3), { seed: 11 });
    const leader = c.electLeader();
    const [a, b] = ids(3).filter((id) => id !== leader.id);
    c.isolate(leader.id); // the leader died: no tick passes, its lease is still running
    expect(c.get(b).forgetLeader(a)).toBe(false); // not b's leader: nothing changes
    c.get(a).campaign();
    c.stabilize();
    expect(c.leaders().filter((l) => l.id !== leader.id)).toHaveLength(0); // b, in the lease, ignored a
    expect(c.get(b).lead).toBe(leader.id);
    expect(c.get(b).forgetLeader(leader.id)).toBe(true);
    expect(c.get(b).forgetLeader(leader.id)).toBe(false); // already forgotten
    c.get(a).campaign();
    c.stabilize();
    expect(c.get(a).role).toBe(Role.Leader);
    expect(c.get(a).term).toBe(leader.term + 1);
    expect(c.get(b).lead).toBe(a);
  });

  it('forgetLeader on a follower of a live leader: its pre-vote is refused and the leader keeps its followers', () => {
    const c = new MemoryCluster(ids(3), { seed: 12 });
    const leader = c.electLeader();
    const [a, b] = ids(3).filter((id) => id !== leader.id);
    expect(c.get(a).forgetLeader(leader.id)).toBe(true);
    c.get(a).campaign();
    c.stabilize();
    c.tick(3);
    expect(c.leader()?.id).toBe(leader.id);
    expect(c.leader()?.term).toBe(leader.term);
    expect(c.get(a).lead).toBe(leader.id);
    expect(c.get(b).lead).toBe(leader.id);
  });

  describe('Figure 2: a new term from a candidate does not restart the election timer (simulator seed 93)', () => {
    // n1 holds the longest log of {n1,n2,n3}; n2's log is stale, and n2 starts a new term every
    // 7 ticks (a fast clock: its votes never come back before its own timeout). Every one of
    // its vote requests reaches n1 before n1's election timeout (10..19 ticks) runs out.
    const voters = ['n1', 'n2', 'n3'];
    const drain = (r: Raft): Message[] => {
      if (!r.hasReady()) return [];
      const rd = r.ready();
      r.advance(rd);
      return rd.messages;
    };
    const run = (candidateLog: { index: number; logTerm: number }): { campaigned: boolean; granted: number } => {
      const r = nodeWithLog('n1', voters, [1, 1], 1);
      let campaigned = false;
      let granted = 0;
      for (let t = 1; t <= 100 && !campaigned; t++) {
        if (t % 7 === 0) r.step({ ...emptyMessage(MessageType.Vote, 'n2', 'n1', r.term + 1), ...candidateLog });
        r.tick();
        for (const m of drain(r)) {
          if (m.type === MessageType.PreVote || m.type === MessageType.Vote) campaigned = true;
          if (m.type === MessageType.VoteResp && !m.reject) granted++;
        }
      }
      return { campaigned, granted };
    };

    it('the voter whose log could win still campaigns when it rejects every higher-term vote', () => {
      const { campaigned, granted } = run({ index: 4, logTerm: 1 }); // n1's last is 5/t1
      expect(granted).toBe(0);
      expect(campaigned).toBe(true);
    });

    it('granting a vote does restart it: a voter that grants every 7 ticks never campaigns', () => {
      const { campaigned, granted } = run({ index: 5, logTerm: 1 });
      expect(granted).toBeGreaterThan(10);
      expect(campaigned).toBe(false);
    });

    it('a candidate refused at a higher term keeps its timer: it stands again on its own schedule', () => {
      const r = nodeWithLog('n1', voters, [1, 1], 1);
      let t = 0;
      while (r.role !== Role.PreCandidate) {
        r.tick();
        drain(r);
        expect(++t).toBeLessThan(30);
      }
      // Pre-vote won: n1 is a candidate (term 2); then a stale candidate's higher terms arrive.
      r.step({ ...emptyMessage(MessageType.PreVoteResp, 'n3', 'n1', r.term + 1) });
      expect(r.role).toBe(Role.Candidate);
      drain(r);
      let stoodAgain = -1;
      for (let i = 1; i <= 40 && stoodAgain < 0; i++) {
        if (i % 7 === 0) r.step({ ...emptyMessage(MessageType.Vote, 'n2', 'n1', r.term + 1), index: 4, logTerm: 1 });
        r.tick();
        if (drain(r).some((m) => m.type === MessageType.PreVote)) stoodAgain = i;
      }
      expect(stoodAgain).toBeGreaterThan(0);
      expect(stoodAgain).toBeLessThan(20); // within its randomized timeout (10..19 ticks)
    });
  });

  it('§6.2 check-quorum: an isolated leader steps down', () => {
    const c = new MemoryCluster(ids(3), { seed: 3 });
    const leader = c.electLeader();
    c.isolate(leader.id);
    c.tick(25);
    expect(c.get(leader.id).role).toBe(Role.Follower);
    const others = c.leaders().filter((l) => l.id !== leader.id);
    expect(others).toHaveLength(1);
  });
});

describe('§5.3 log replication', () => {
  it('replicates and commits proposals on every node in order', () => {
    const c = new MemoryCluster(ids(5), { seed: 11 });
    c.electLeader();
    for (let i = 0; i < 20; i++) c.propose(`cmd${i}`);
    c.tick(3);
    for (const id of ids(5)) expect(c.appliedData(id)).toEqual(Array.from({ length: 20 }, (_, i) => `cmd${i}`));
  });

  it('log matching: a follower with a conflicting suffix is repaired to the leader log', () => {
    const voters = ['n1', 'n2', 'n3'];
    // n1 (leader-to-be, term 3 entries) and n2 (stale term-2 suffix that never committed)
    const c = new MemoryCluster([]);
    const n1 = bootstrapState(voters);
    n1.entries.push(entry(4, 1), entry(5, 3), entry(6, 3));
    n1.hardState = { term: 3, vote: '', commit: 3 };
    const n2 = bootstrapState(voters);
    n2.entries.push(entry(4, 1), entry(5, 2, 'stale'), entry(6, 2, 'stale'), entry(7, 2, 'stale'));
    n2.hardState = { term: 2, vote: '', commit: 3 };
    c.addNode('n1', n1);
    c.addNode('n2', n2);
    c.addNode('n3', { ...bootstrapState(voters), hardState: { term: 3, vote: '', commit: 3 } });
    c.stabilize();
    c.get('n1').campaign();
    c.stabilize();
    c.tick(3);
    expect(c.get('n1').role).toBe(Role.Leader);
    const leaderLog = c.get('n1').log;
    const f = c.get('n2').log;
    expect(f.lastIndex()).toBe(leaderLog.lastIndex());
    for (let i = 1; i <= leaderLog.lastIndex(); i++) expect(f.term(i)).toBe(leaderLog.term(i));
    expect(c.appliedData('n2')).not.toContain('stale');
  });

  it('fast backtracking: a follower far behind with a divergent log needs few rejections', () => {
    const voters = ['n1', 'n2', 'n3'];
    const c = new MemoryCluster([]);
    const n1 = bootstrapState(voters);
    for (let i = 0; i < 200; i++) n1.entries.push(entry(4 + i, 5));
    n1.hardState = { term: 5, vote: '', commit: 3 };
    const n2 = bootstrapState(voters);
    for (let i = 0; i < 300; i++) n2.entries.push(entry(4 + i, 4, 'old'));
    n2.hardState = { term: 4, vote: '', commit: 3 };
    c.addNode('n1', n1);
    c.addNode('n2', n2);
    c.addNode('n3', { ...bootstrapState(voters), hardState: { term: 5, vote: '', commit: 3 } });
    let rejections = 0;
    c.dropIf = (m) => {
      if (m.type === MessageType.AppResp && m.reject && m.from === 'n2') rejections++;
      return false;
    };
    c.stabilize();
    c.get('n1').campaign();
    c.stabilize();
    c.tick(5);
    expect(c.get('n2').log.lastIndex()).toBe(c.get('n1').log.lastIndex());
    expect(rejections).toBeLessThanOrEqual(3);
  });

  it('flow control: no more than maxInflightMsgs appends are in flight to a follower', () => {
    const c = new MemoryCluster(ids(3), { seed: 5, maxInflightMsgs: 2, maxSizePerMsgBytes: 1 });
    const leader = c.electLeader();
    let inFlight = 0;
    let maxSeen = 0;
    // hold the follower's responses: count appends carrying entries sent to n? without answers
    const follower = ids(3).find((x) => x !== leader.id)!;
    c.dropIf = (m) => {
      if (m.type === MessageType.App && m.to === follower && m.entries.length > 0) {
        inFlight++;
        maxSeen = Math.max(maxSeen, inFlight);
      }
      return m.to === follower || m.from === follower; // the follower is slow: nothing arrives
    };
    for (let i = 0; i < 10; i++) leader.propose(enc(`x${i}`));
    c.stabilize();
    expect(maxSeen).toBeLessThanOrEqual(2);
    expect(leader.log.committed).toBeGreaterThan(0); // the other follower still commits
  });

  it('Ready: entries to persist come with mustSync, and followers reply only in the same Ready', () => {
    const r = nodeWithLog('n2', ['n1', 'n2', 'n3'], [], 1);
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 2), index: 3, logTerm: 1, entries: [entry(4, 2)], commit: 3 });
    const rd = r.ready();
    expect(rd.entries.map((e) => e.index)).toEqual([4]);
    expect(rd.mustSync).toBe(true);
    expect(rd.messages.find((m) => m.type === MessageType.AppResp)?.index).toBe(4);
    r.advance(rd);
    expect(r.log.persisted).toBe(4);
  });
});

describe('§5.4.2 committing entries from previous terms (Figure 8)', () => {
  /**
   * Builds the paper's Figure 8 (c): n1 is leader of term 4 holding an entry of term 2 at
   * index 7 that it has replicated to n2 and n3 (a majority), while n5 holds a term-3 entry at
   * index 7. The leader's own term-4 entry (index 8) has not reached anyone.
   */
  function figure8(bugs?: Set<'commit-old-term'>) {
    const voters = ids(5);
    const c = new MemoryCluster([], { seed: 8, maxSizePerMsgBytes: 1, ...(bugs ? { bugs } : {}) });
    const withLog = (terms: number[], term: number) => {
      const s = bootstrapState(voters);
      terms.forEach((t, i) => s.entries.push(entry(6 + i, t, `t${t}`)));
      s.hardState = { term, vote: '', commit: 5 };
      return s;
    };
    c.addNode('n1', withLog([1, 2], 4)); // index 6: term 1, index 7: term 2
    c.addNode('n2', withLog([1, 2], 4));
    c.addNode('n3', withLog([1], 4));
    c.addNode('n4', withLog([1], 4));
    c.addNode('n5', withLog([1, 3], 3));
    c.stabilize();
    // n1 becomes leader of term 5 with n2, n3, n4 (n5 is down). Its no-op (index 8) is lost in
    // transit to everyone that could accept it; probes that will be rejected still arrive, so
    // n3 and n4 receive index 7 alone (one entry per message).
    c.crash('n5');
    c.dropIf = (m) =>
      m.type === MessageType.App && m.entries.some((e) => e.index === 8) && c.get(m.to).log.term(7) !== undefined;
    c.get('n1').campaign();
    c.stabilize();
    return c;
  }

  it('a leader does not commit an old-term entry by counting replicas', () => {
    const c = figure8();
    const n1 = c.get('n1');
    expect(n1.role).toBe(Role.Leader);
    expect([...['n2', 'n3', 'n4']].filter((id) => c.get(id).log.term(7) === 2).length).toBeGreaterThanOrEqual(2);
    expect(n1.log.committed).toBeLessThan(7); // on a majority, but not committed
    // n1 dies; n5 (term 3 at index 7) can win and overwrite index 7 — which is fine, it was never committed
    c.crash('n1');
    c.dropIf = undefined;
    c.restart('n5');
    c.get('n5').campaign();
    c.stabilize();
    c.tick(20);
    const leader = c.electLeader();
    for (const id of ['n2', 'n3', 'n4', 'n5']) {
      expect(c.get(id).log.term(7)).toBe(leader.log.term(7));
    }
  });

  it('with the commit-old-term bug the same schedule commits index 7 (the simulator must catch this)', () => {
    const c = figure8(new Set(['commit-old-term']));
    expect(c.get('n1').log.committed).toBeGreaterThanOrEqual(7);
    expect(c.nodes.get('n1')!.applied.some((e) => e.index === 7 && e.term === 2)).toBe(true);
    // ... and then loses it: n5 wins and overwrites the "committed" index 7
    c.crash('n1');
    c.dropIf = undefined;
    c.restart('n5');
    c.partition(['n2'], ['n3'], ['n4']); // they can only reach n5, so only n5 can win
    const leader = c.electLeader();
    expect(leader.id).toBe('n5');
    c.heal();
    c.tick(3);
    expect(c.get('n2').log.term(7)).toBe(3);
  });
});

describe('§7 log compaction and InstallSnapshot', () => {
  it('a follower that missed compacted entries catches up by snapshot', () => {
    const c = new MemoryCluster(ids(3), { seed: 21 });
    const leader = c.electLeader();
    const lagging = ids(3).find((x) => x !== leader.id)!;
    c.crash(lagging);
    for (let i = 0; i < 30; i++) c.propose(`v${i}`);
    c.tick(2);
    c.compact(leader.id);
    expect(leader.log.firstIndex()).toBeGreaterThan(10);
    let snapshots = 0;
    c.dropIf = (m) => {
      if (m.type === MessageType.Snap) snapshots++;
      return false;
    };
    c.restart(lagging);
    c.tick(5);
    expect(snapshots).toBeGreaterThanOrEqual(1);
    expect(c.get(lagging).log.lastIndex()).toBe(leader.log.lastIndex());
    expect(c.get(lagging).log.snapshot.meta.index).toBe(leader.log.snapshot.meta.index);
    c.propose('after');
    c.tick(2);
    expect(c.appliedData(lagging)).toContain('after');
  });

  it('a snapshot restored while a Ready is in flight is not undone by that Ready\'s older conf change (issue 11)', () => {
    // n2 is handed a Ready whose committed entries remove n3 (index 4); before the driver
    // acknowledges it, a snapshot at index 10 arrives whose configuration has n3 again.
    const voters = ['n1', 'n2', 'n3'];
    const r = nodeWithLog('n2', voters, [], 1);
    const removeN3: Entry = { index: 4, term: 1, type: EntryType.ConfChange, data: encodeConfChange({ type: ConfChangeType.RemoveNode, node: 'n3' }) };
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 1), index: 3, logTerm: 1, entries: [removeN3], commit: 4 });
    r.advance(r.ready()); // entry 4 persisted
    const inFlight = r.ready(); // ... and now handed out to apply
    expect(inFlight.committedEntries.map((e) => e.index)).toEqual([4]);
    const snapshot = { meta: { index: 10, term: 1, conf: { voters, learners: [] } }, data: enc('state at 10') };
    r.step({ ...emptyMessage(MessageType.Snap, 'n1', 'n2', 1), snapshot });
    r.advance(inFlight);
    expect([...r.voters].sort()).toEqual(voters);
    const install = r.ready();
    expect(install.snapshot?.meta.index).toBe(10);
    expect(install.committedEntries).toEqual([]);
    r.advance(install);
    expect([...r.voters].sort()).toEqual(voters);
    expect(r.log.applied).toBe(10);
  });

  it('with the snapshot-conf-regression bug injected, the same replay ends with n3 removed (the test can fail)', () => {
    const voters = ['n1', 'n2', 'n3'];
    const boot = bootstrapState(voters);
    const r = new Raft({ id: 'n2', electionTick: 10, heartbeatTick: 1, rng: seededRng(2), bugs: new Set(['snapshot-conf-regression']) }, { hardState: { term: 1, vote: '', commit: 3 }, entries: boot.entries });
    r.advance(r.ready());
    const removeN3: Entry = { index: 4, term: 1, type: EntryType.ConfChange, data: encodeConfChange({ type: ConfChangeType.RemoveNode, node: 'n3' }) };
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 1), index: 3, logTerm: 1, entries: [removeN3], commit: 4 });
    r.advance(r.ready());
    const inFlight = r.ready();
    r.step({ ...emptyMessage(MessageType.Snap, 'n1', 'n2', 1), snapshot: { meta: { index: 10, term: 1, conf: { voters, learners: [] } }, data: enc('state at 10') } });
    r.advance(inFlight);
    expect([...r.voters].sort()).toEqual(['n1', 'n2']);
  });

  it('compaction keeps entries after the snapshot and survives restart', () => {
    const c = new MemoryCluster(ids(3), { seed: 22 });
    const leader = c.electLeader();
    for (let i = 0; i < 10; i++) c.propose(`v${i}`);
    c.compact(leader.id);
    c.propose('tail');
    c.crash(leader.id);
    c.restart(leader.id);
    c.stabilize();
    const restarted = c.get(leader.id);
    expect(restarted.log.snapshot.meta.index).toBeGreaterThan(0);
    expect(c.appliedData(leader.id)).toEqual(['tail']);
  });
});

describe('§4 membership changes (single-server, thesis §4.1) and learners', () => {
  it('adds a learner that catches up without voting, then promotes it to voter', () => {
    const c = new MemoryCluster(ids(3), { seed: 31 });
    const leader = c.electLeader();
    for (let i = 0; i < 5; i++) c.propose(`a${i}`);
    c.addNode('n4');
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    expect(leader.learners.has('n4')).toBe(true);
    expect(c.appliedData('n4')).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
    // a learner never campaigns
    c.tick(50);
    expect(c.get('n4').role).toBe(Role.Follower);
    expect(leader.proposeConfChange({ type: ConfChangeType.AddVoter, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(2);
    expect(leader.voters.has('n4')).toBe(true);
    expect(c.get('n4').voters.size).toBe(4);
  });

  it('sends a member it adds the log from its first index at once (no refused probe at the last index first)', () => {
    const c = new MemoryCluster(ids(3), { seed: 34 });
    const leader = c.electLeader();
    for (let i = 0; i < 5; i++) c.propose(`a${i}`);
    c.stabilize();
    c.addNode('n4');
    const toN4: Message[] = [];
    const fromN4: Message[] = [];
    c.dropIf = (m) => {
      if (m.to === 'n4' && m.type === MessageType.App) toN4.push(m);
      if (m.from === 'n4' && m.type === MessageType.AppResp) fromN4.push(m);
      return false;
    };
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    expect(toN4.length).toBeGreaterThan(0);
    expect(toN4[0].index).toBe(0); // prev index 0: the entries from index 1 on
    expect(toN4[0].entries.length).toBeGreaterThan(5);
    expect(fromN4.some((m) => m.reject)).toBe(false);
    expect(c.appliedData('n4')).toEqual(['a0', 'a1', 'a2', 'a3', 'a4']);
  });

  it('once its log is compacted, the leader probes an added member at its last index (no batch the empty member must refuse) and sends a snapshot', () => {
    const c = new MemoryCluster(ids(3), { seed: 35 });
    const leader = c.electLeader();
    for (let i = 0; i < 5; i++) c.propose(`a${i}`);
    c.stabilize();
    c.compact(leader.id);
    expect(leader.log.firstIndex()).toBeGreaterThan(1);
    c.addNode('n4');
    const toN4: Message[] = [];
    c.dropIf = (m) => {
      if (m.to === 'n4' && (m.type === MessageType.App || m.type === MessageType.Snap)) toN4.push(m);
      return false;
    };
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    const first = toN4.find((m) => m.type === MessageType.App)!;
    expect(first.entries.length).toBe(0);
    expect(toN4.some((m) => m.type === MessageType.Snap)).toBe(true);
    expect(c.get('n4').log.committed).toBe(leader.log.committed);
  });

  it('allows one membership change at a time', () => {
    const c = new MemoryCluster(ids(3), { seed: 32 });
    const leader = c.electLeader();
    c.addNode('n4');
    c.addNode('n5');
    c.isolate('n2');
    c.isolate('n3'); // the change cannot commit
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    const second = leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n5' });
    expect(second.ok).toBe(false);
    if (!second.ok) expect(second.code).toBe('CONF_CHANGE_PENDING');
  });

  it('removes a voter; the leader removing itself steps down and the rest elect a new leader', () => {
    const c = new MemoryCluster(ids(3), { seed: 33 });
    const leader = c.electLeader();
    expect(leader.proposeConfChange({ type: ConfChangeType.RemoveNode, node: leader.id }).ok).toBe(true);
    c.stabilize();
    c.tick(2);
    expect(c.get(leader.id).role).toBe(Role.Follower);
    const next = c.electLeader();
    expect(next.id).not.toBe(leader.id);
    expect(next.voters.size).toBe(2);
    c.propose('after-removal');
    c.tick(2);
    expect(c.appliedData(next.id)).toContain('after-removal');
  });

  it('refuses to remove the last voter', () => {
    const c = new MemoryCluster(['solo'], { seed: 34 });
    const leader = c.electLeader();
    const res = leader.proposeConfChange({ type: ConfChangeType.RemoveNode, node: 'solo' });
    expect(res.ok).toBe(false);
  });
});

describe('§3.10 leadership transfer (thesis)', () => {
  it('hands leadership to the named voter with TimeoutNow', () => {
    const c = new MemoryCluster(ids(3), { seed: 41 });
    const leader = c.electLeader();
    c.propose('x');
    const target = ids(3).find((x) => x !== leader.id)!;
    let sawTimeoutNow = false;
    c.dropIf = (m) => {
      if (m.type === MessageType.TimeoutNow) sawTimeoutNow = true;
      return false;
    };
    leader.transferLeader(target);
    c.stabilize();
    expect(sawTimeoutNow).toBe(true);
    expect(c.get(target).role).toBe(Role.Leader);
    expect(c.leaders()).toHaveLength(1);
  });

  it('refuses proposals while transferring and gives up after an election timeout', () => {
    const c = new MemoryCluster(ids(3), { seed: 42 });
    const leader = c.electLeader();
    const target = ids(3).find((x) => x !== leader.id)!;
    c.isolate(target);
    leader.transferLeader(target);
    c.stabilize();
    const refused = leader.propose(enc('during'));
    expect(refused.ok).toBe(false);
    c.tick(12);
    expect(leader.role).toBe(Role.Leader);
    expect(leader.propose(enc('after')).ok).toBe(true);
  });
});

describe('§6.4 ReadIndex linearizable reads', () => {
  it('the leader answers a read after a quorum heartbeat, without appending to the log', () => {
    const c = new MemoryCluster(ids(3), { seed: 51 });
    const leader = c.electLeader();
    c.propose('w');
    const lastBefore = leader.log.lastIndex();
    expect(leader.readIndex(enc('r1'))).toBe(true);
    c.stabilize();
    const rs = c.nodes.get(leader.id)!.readStates;
    expect(rs.map((r) => new TextDecoder().decode(r.context))).toEqual(['r1']);
    expect(rs[0].index).toBe(leader.log.committed);
    expect(leader.log.lastIndex()).toBe(lastBefore);
  });

  it('a follower forwards the read to the leader', () => {
    const c = new MemoryCluster(ids(3), { seed: 52 });
    const leader = c.electLeader();
    c.propose('w');
    const f = ids(3).find((x) => x !== leader.id)!;
    expect(c.get(f).readIndex(enc('r2'))).toBe(true);
    c.stabilize();
    expect(c.nodes.get(f)!.readStates[0]?.index).toBe(leader.log.committed);
  });

  it('reads that arrive before the next Ready share one heartbeat round, released together by its quorum', () => {
    const c = new MemoryCluster(ids(3), { seed: 54 });
    const leader = c.electLeader();
    c.propose('w');
    c.stabilize();
    const f = ids(3).find((x) => x !== leader.id)!;
    // two of the leader's own reads and one a follower forwarded, all before the leader's next Ready
    expect(leader.readIndex(enc('a'))).toBe(true);
    expect(leader.readIndex(enc('b'))).toBe(true);
    leader.step({ ...emptyMessage(MessageType.ReadIndex, f, leader.id, leader.term), context: enc('c') });
    const rd = leader.ready();
    const beats = rd.messages.filter((m) => m.type === MessageType.Heartbeat);
    leader.advance(rd);
    // one heartbeat per follower, carrying the newest request's context
    expect(beats.map((m) => m.to).sort()).toEqual(ids(3).filter((x) => x !== leader.id).sort());
    expect(beats.every((m) => new TextDecoder().decode(m.context) === 'c')).toBe(true);
    // one follower's acknowledgement makes a quorum with the leader: all three are answered
    leader.step({ ...emptyMessage(MessageType.HeartbeatResp, f, leader.id, leader.term), context: beats[0].context });
    const out = leader.ready();
    leader.advance(out);
    expect(out.readStates.map((r) => new TextDecoder().decode(r.context))).toEqual(['a', 'b']);
    const forwarded = out.messages.filter((m) => m.type === MessageType.ReadIndexResp);
    expect(forwarded.map((m) => [m.to, new TextDecoder().decode(m.context), m.index])).toEqual([[f, 'c', leader.log.committed]]);
    for (const r of out.readStates) expect(r.index).toBe(leader.log.committed);
  });

  it('a deposed leader cannot serve a read: acknowledgements from a newer term confirm nothing', () => {
    // The quorum round of a ReadIndex is answered by followers that have moved on to a newer
    // term (another leader was elected meanwhile): the old leader must step down, not serve.
    const readWith = (ackTerm: (t: number) => number) => {
      const c = new MemoryCluster(ids(3), { seed: 53 });
      const leader = c.electLeader();
      c.stabilize();
      leader.readIndex(enc('r3'));
      const rd = leader.ready();
      const beats = rd.messages.filter((m) => m.type === MessageType.Heartbeat && m.context.length > 0);
      leader.advance(rd);
      expect(beats.length).toBe(2);
      for (const hb of beats) leader.step({ ...emptyMessage(MessageType.HeartbeatResp, hb.to, leader.id, ackTerm(leader.term)), context: hb.context });
      return { leader, readStates: leader.hasReady() ? leader.ready().readStates : [] };
    };
    const stale = readWith((t) => t + 1);
    expect(stale.readStates).toHaveLength(0);
    expect(stale.leader.role).toBe(Role.Follower);
    // The same acknowledgements in the leader's own term do confirm the read (the test can fail).
    const current = readWith((t) => t);
    expect(current.readStates).toHaveLength(1);
    expect(current.leader.role).toBe(Role.Leader);
  });
});

describe('§5.4.3 state machine safety under crashes', () => {
  it('a restarted node re-applies the same committed entries', () => {
    const c = new MemoryCluster(ids(3), { seed: 61 });
    c.electLeader();
    for (let i = 0; i < 5; i++) c.propose(`s${i}`);
    c.tick(2);
    const before = c.appliedData('n2');
    c.crash('n2');
    c.restart('n2');
    c.tick(3);
    expect(c.appliedData('n2').slice(0, before.length)).toEqual(before);
  });

  it('a brand-new node has nothing and is not a voter until added', () => {
    const r = new Raft({ id: 'x', electionTick: 10, heartbeatTick: 1, rng: seededRng(1) }, emptyState());
    for (let i = 0; i < 100; i++) r.tick();
    expect(r.role).toBe(Role.Follower);
    expect(r.isPromotable()).toBe(false);
  });
});

describe('refusal: leader and candidate messages only from voters (issue 9)', () => {
  /** 3 voters and a caught-up learner n4 (the would-be attacker). */
  function withLearner(seed: number): { c: MemoryCluster; leader: Raft } {
    const c = new MemoryCluster(ids(3), { seed });
    const leader = c.electLeader();
    c.addNode('n4');
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    expect(c.get('n4').learners.has('n4')).toBe(true);
    return { c, leader };
  }
  const forged = (type: MessageType, to: string, term: number): Message => ({ ...emptyMessage(type, 'n4', to, term), index: 1_000, logTerm: term, commit: 1_000 });

  it('a forged learner heartbeat, append, snapshot or timeoutNow with a high term moves no term and forces no election', () => {
    const { c, leader } = withLearner(61);
    const term = leader.term;
    const lead = leader.id;
    const voters = ids(3);
    for (const to of voters) {
      for (const type of [MessageType.Heartbeat, MessageType.App, MessageType.Snap, MessageType.TimeoutNow]) {
        c.get(to).step(forged(type, to, term + 100));
      }
    }
    c.stabilize();
    for (const id of voters) {
      expect(c.get(id).term).toBe(term);
      expect(c.get(id).lead).toBe(lead);
      expect(c.get(id).refusedMessages).toBeGreaterThanOrEqual(4);
    }
    expect(c.get(lead).role).toBe(Role.Leader);
    c.tick(30);
    expect(c.get(lead).term).toBe(term);
    expect(c.leaders().map((l) => l.id)).toEqual([lead]);
  });

  it('a forged append cannot put entries into a voter log', () => {
    const { c, leader } = withLearner(62);
    const follower = ids(3).find((x) => x !== leader.id)!;
    const f = c.get(follower);
    const last = f.log.lastIndex();
    const m: Message = { ...emptyMessage(MessageType.App, 'n4', follower, leader.term), index: last, logTerm: f.log.lastTerm(), commit: last + 1, entries: [entry(last + 1, leader.term, 'token.add admin')] };
    f.step(m);
    c.stabilize();
    expect(f.log.lastIndex()).toBe(last);
    expect(c.appliedData(follower)).not.toContain('token.add admin');
  });

  it('vote and pre-vote requests and high-term answers from a learner are dropped', () => {
    const { c, leader } = withLearner(63);
    const term = leader.term;
    const sent: Message[] = [];
    c.dropIf = (m) => {
      if (m.to === 'n4') sent.push(m);
      return false;
    };
    for (const to of ids(3)) {
      c.get(to).step({ ...forged(MessageType.PreVote, to, term + 1), index: 10_000, logTerm: term + 50 });
      c.get(to).step({ ...forged(MessageType.Vote, to, term + 50), index: 10_000, logTerm: term + 50 });
    }
    c.get(leader.id).step(forged(MessageType.AppResp, leader.id, term + 100));
    c.get(leader.id).step(forged(MessageType.HeartbeatResp, leader.id, term + 100));
    c.stabilize();
    expect(sent.filter((m) => m.type === MessageType.VoteResp || m.type === MessageType.PreVoteResp)).toEqual([]);
    for (const id of ids(3)) expect(c.get(id).term).toBe(term);
    expect(c.get(leader.id).role).toBe(Role.Leader);
  });

  it('a learner still replicates: its answers of the current term are taken', () => {
    const { c } = withLearner(64);
    c.propose('after-learner');
    c.tick(2);
    expect(c.appliedData('n4')).toContain('after-learner');
  });

  it('a node promoted in a follower log it has not applied yet may lead it', () => {
    const c = new MemoryCluster(ids(3), { seed: 65 });
    const leader = c.electLeader();
    c.addNode('n4');
    expect(leader.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    const others = ids(3).filter((x) => x !== leader.id);
    // n4 is promoted; the follower others[1] gets the entry but never hears that it committed.
    c.dropIf = (m) => m.to === others[1] && m.from === leader.id && (m.type === MessageType.Heartbeat || (m.type === MessageType.App && m.entries.length === 0));
    expect(leader.proposeConfChange({ type: ConfChangeType.AddVoter, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    const lagging = c.get(others[1]);
    expect(lagging.voters.has('n4')).toBe(false);
    c.dropIf = undefined;
    // Leadership moves to n4 at once: the lagging follower must take its messages.
    c.get(leader.id).transferLeader('n4');
    c.stabilize();
    c.tick(3);
    expect(c.get('n4').role).toBe(Role.Leader);
    c.propose('from-n4', 'n4');
    c.tick(2);
    expect(c.appliedData(others[1])).toContain('from-n4');
    expect(lagging.voters.has('n4')).toBe(true);
  });

  it('a node that missed a promotion refuses the new leader until its voters vouch for it', () => {
    const c = new MemoryCluster(ids(3), { seed: 66 });
    const first = c.electLeader();
    const away = ids(3).find((x) => x !== first.id)!;
    c.crash(away);
    c.addNode('n4');
    expect(first.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    expect(first.proposeConfChange({ type: ConfChangeType.AddVoter, node: 'n4' }).ok).toBe(true);
    c.stabilize();
    c.tick(3);
    first.transferLeader('n4');
    c.stabilize();
    c.tick(3);
    expect(c.get('n4').role).toBe(Role.Leader);
    c.propose('while-away', 'n4');
    c.restart(away);
    c.tick(5);
    const back = c.get(away);
    expect(back.voters.has('n4')).toBe(false);
    expect(back.leaderClaims.has('n4')).toBe(true);
    expect(c.appliedData(away)).not.toContain('while-away');
    back.vouch('n4');
    c.tick(5);
    expect(c.appliedData(away)).toContain('while-away');
    expect(back.voters.has('n4')).toBe(true);
  });

  it('a voter with a stale configuration hears an unknown candidate only after LEADERLESS_ELECTIONS timeouts without a leader, then follows it (found by the simulator, seed 342)', () => {
    // n1 lagged: its configuration is {n1,n2,n3}; the cluster's is {n1,n2,n5} (n5 added after
    // n1 stopped hearing), n2 is lost, and n5's log is ahead of n1's. n5 needs n1's vote.
    const r = new Raft({ id: 'n1', electionTick: 10, heartbeatTick: 1, rng: seededRng(7) }, bootstrapState(['n1', 'n2', 'n3']));
    r.advance(r.ready());
    const preVote = (term: number): Message => ({ ...emptyMessage(MessageType.PreVote, 'n5', 'n1', term), index: 50, logTerm: 9 });
    const answers = (): Message[] => {
      if (!r.hasReady()) return [];
      const rd = r.ready();
      r.advance(rd);
      return rd.messages.filter((m) => m.to === 'n5');
    };
    r.step(preVote(r.term + 1));
    expect(answers()).toEqual([]);
    expect(r.refusedMessages).toBe(1);
    // n1 campaigns on its own (nobody answers) for LEADERLESS_ELECTIONS election timeouts.
    for (let i = 0; i < LEADERLESS_ELECTIONS * 10 - 1; i++) {
      r.tick();
      if (r.hasReady()) r.advance(r.ready());
    }
    r.step(preVote(r.term + 1));
    expect(answers()).toEqual([]);
    r.tick();
    if (r.hasReady()) r.advance(r.ready());
    r.step(preVote(r.term + 1));
    expect(answers().map((m) => [m.type, m.reject])).toEqual([[MessageType.PreVoteResp, false]]);
    const term = r.term + 1;
    r.step({ ...emptyMessage(MessageType.Vote, 'n5', 'n1', term), index: 50, logTerm: 9 });
    expect(answers().map((m) => [m.type, m.reject])).toEqual([[MessageType.VoteResp, false]]);
    expect(r.vote).toBe('n5');
    // The candidate it voted for leads it in that term, though n1 does not know n5 as a voter.
    r.step({ ...emptyMessage(MessageType.Heartbeat, 'n5', 'n1', term), commit: 0 });
    expect(r.lead).toBe('n5');
    expect(r.role).toBe(Role.Follower);
    // With a leader known again, an unknown candidate is refused at once.
    const refused = r.refusedMessages;
    r.tick();
    r.step({ ...emptyMessage(MessageType.Vote, 'n9', 'n1', term + 100), index: 1000, logTerm: term + 100 });
    expect(r.refusedMessages).toBe(refused + 1);
    expect(r.term).toBe(term);
  });

  it('a node without a configuration (joining) takes messages from anyone', () => {
    const r = new Raft({ id: 'j', electionTick: 10, heartbeatTick: 1, rng: seededRng(1) }, emptyState());
    r.step({ ...emptyMessage(MessageType.Heartbeat, 'x', 'j', 5), commit: 0 });
    expect(r.term).toBe(5);
    expect(r.refusedMessages).toBe(0);
  });
});
