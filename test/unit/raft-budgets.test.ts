// Unit tests of the Raft core's byte budgets: in-memory log bytes, the leader's bound on
// uncommitted proposal bytes (etcd's MaxUncommittedEntriesSize), the bound on committed entry
// bytes per Ready (etcd's MaxCommittedSizePerReady) and the bound on entry bytes per append.

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Raft, bootstrapState, DEFAULT_MAX_COMMITTED_BYTES_PER_READY, type RaftConfig } from '../../protocol/raft/raft.js';
import { ENTRY_OVERHEAD_BYTES, RaftLog, emptySnapshot, entrySizeBytes } from '../../protocol/raft/log.js';
import { ConfChangeType, type Entry, EntryType, type Message, MessageType, Role, emptyMessage } from '../../protocol/raft/types.js';
import { seededRng } from '../../protocol/rng.js';
import { MemoryCluster } from '../../sim/memory-cluster.js';

const bytes = (n: number, fill = 120) => new Uint8Array(n).fill(fill);
const voters = ['n1', 'n2', 'n3'];

type Opts = Partial<Omit<RaftConfig, 'id' | 'rng'>>;

/** Persists and "applies" every Ready at once; returns the messages and committed entries. */
function drain(r: Raft): { messages: Message[]; committed: Entry[] } {
  const out = { messages: [] as Message[], committed: [] as Entry[] };
  while (r.hasReady()) {
    const rd = r.ready();
    out.messages.push(...rd.messages);
    out.committed.push(...rd.committedEntries);
    r.advance(rd);
  }
  return out;
}

/** n1 as leader of a 3-voter cluster at term 2, its no-op committed; followers are driven by hand. */
function leaderN1(opts: Opts = {}): Raft {
  const r = new Raft({ id: 'n1', electionTick: 10, heartbeatTick: 1, rng: seededRng(1), preVote: false, ...opts }, bootstrapState(voters));
  drain(r);
  r.campaign();
  r.step({ ...emptyMessage(MessageType.VoteResp, 'n2', 'n1', r.term) });
  expect(r.role).toBe(Role.Leader);
  drain(r);
  ackFrom(r, 'n2');
  return r;
}

/** n2 acknowledges the leader's whole log. */
function ackFrom(r: Raft, from: string): void {
  r.step({ ...emptyMessage(MessageType.AppResp, from, r.id, r.term), index: r.log.lastIndex() });
  drain(r);
}

describe('in-memory log bytes', () => {
  it('counts data plus a fixed overhead per held entry, through appends, truncation and compaction', () => {
    const r = new Raft({ id: 'n2', electionTick: 10, heartbeatTick: 1, rng: seededRng(2) }, bootstrapState(voters));
    drain(r);
    const boot = r.log.logBytes();
    expect(boot).toBeGreaterThan(3 * ENTRY_OVERHEAD_BYTES);
    const ents = [4, 5, 6].map((i) => ({ index: i, term: 2, type: EntryType.Normal, data: bytes(100) }));
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 2), index: 3, logTerm: 1, entries: ents, commit: 3 });
    expect(r.log.logBytes()).toBe(boot + 3 * (100 + ENTRY_OVERHEAD_BYTES));
    // a term-3 leader overwrites entries 5 and 6 with one 10-byte entry
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 3), index: 4, logTerm: 2, entries: [{ index: 5, term: 3, type: EntryType.Normal, data: bytes(10) }], commit: 5 });
    expect(r.log.logBytes()).toBe(boot + 100 + 10 + 2 * ENTRY_OVERHEAD_BYTES);
    drain(r);
    expect(r.log.applied).toBe(5);
    r.compact(4, bytes(1));
    expect(r.log.logBytes()).toBe(10 + ENTRY_OVERHEAD_BYTES);
    expect(r.log.bytesAfter(4)).toBe(10 + ENTRY_OVERHEAD_BYTES);
    expect(r.log.bytesAfter(5)).toBe(0);
  });
});

describe('in-memory log bytes (property)', () => {
  type Op = { kind: 'append'; back: number; count: number; size: number } | { kind: 'commitApply'; upTo: number } | { kind: 'compact'; keep: number };
  const op: fc.Arbitrary<Op> = fc.oneof(
    fc.record({ kind: fc.constant('append' as const), back: fc.nat(5), count: fc.integer({ min: 1, max: 6 }), size: fc.nat(300) }),
    fc.record({ kind: fc.constant('commitApply' as const), upTo: fc.nat(40) }),
    fc.record({ kind: fc.constant('compact' as const), keep: fc.nat(10) }),
  );

  it('logBytes and bytesAfter always match the entries held, through appends, overwrites and compactions', () => {
    fc.assert(
      fc.property(fc.array(op, { maxLength: 60 }), (ops) => {
        const log = new RaftLog(emptySnapshot(), [], 0);
        let term = 1;
        for (const o of ops) {
          if (o.kind === 'append') {
            // overwrite up to `back` uncommitted entries, as a new leader's append would
            const after = Math.max(log.committed, log.lastIndex() - o.back);
            term++;
            log.append(Array.from({ length: o.count }, (_, i) => ({ index: after + 1 + i, term, type: EntryType.Normal, data: bytes(o.size) })));
          } else if (o.kind === 'commitApply') {
            const to = Math.min(log.lastIndex(), log.committed + o.upTo);
            log.commitTo(to);
            log.appliedTo(to);
          } else {
            log.compact(Math.max(log.firstIndex() - 1, log.applied - o.keep), bytes(1), { voters: ['n1'], learners: [] });
          }
          let sum = 0;
          for (let i = log.firstIndex(); i <= log.lastIndex(); i++) sum += entrySizeBytes(log.entryAt(i)!);
          expect(log.logBytes()).toBe(sum);
          const mid = Math.floor((log.firstIndex() + log.lastIndex()) / 2);
          let after = 0;
          for (let i = mid + 1; i <= log.lastIndex(); i++) after += entrySizeBytes(log.entryAt(i)!);
          expect(log.bytesAfter(mid)).toBe(after);
          expect(log.snapshot.meta.index).toBeGreaterThanOrEqual(log.firstIndex() - 1);
        }
      }),
      { seed: 12, numRuns: 200 },
    );
  });
});

describe('maxUncommittedBytes (leader)', () => {
  it('refuses a proposal that would pass the bound, then accepts once the entries commit', () => {
    const r = leaderN1({ maxUncommittedBytes: 100 });
    expect(r.propose(bytes(60))).toMatchObject({ ok: true });
    const refused = r.propose(bytes(60));
    expect(refused).toMatchObject({ ok: false, code: 'TOO_MANY_PENDING_BYTES', leader: 'n1' });
    expect(refused.ok ? '' : refused.message).toMatch(/60 bytes; 60 more would pass the 100-byte bound/);
    expect(r.propose(bytes(40))).toMatchObject({ ok: true }); // exactly at the bound
    expect(r.propose(bytes(1))).toMatchObject({ ok: false, code: 'TOO_MANY_PENDING_BYTES' });
    drain(r);
    ackFrom(r, 'n2'); // a quorum has everything: committed
    expect(r.log.committed).toBe(r.log.lastIndex());
    expect(r.propose(bytes(60))).toMatchObject({ ok: true });
  });

  it('never refuses an empty entry or a conf change', () => {
    const r = leaderN1({ maxUncommittedBytes: 50 });
    expect(r.propose(bytes(50))).toMatchObject({ ok: true });
    expect(r.propose(bytes(1))).toMatchObject({ ok: false, code: 'TOO_MANY_PENDING_BYTES' });
    expect(r.propose(new Uint8Array(0))).toMatchObject({ ok: true });
    expect(r.proposeConfChange({ type: ConfChangeType.AddLearner, node: 'n4' })).toMatchObject({ ok: true });
  });

  it('takes one entry larger than the bound when nothing is uncommitted (as etcd), and nothing after it', () => {
    const r = leaderN1({ maxUncommittedBytes: 100 });
    expect(r.propose(bytes(500))).toMatchObject({ ok: true });
    expect(r.propose(bytes(1))).toMatchObject({ ok: false, code: 'TOO_MANY_PENDING_BYTES' });
    drain(r);
    ackFrom(r, 'n2');
    expect(r.propose(bytes(1))).toMatchObject({ ok: true });
  });

  it('a new leader starts with nothing counted against the bound', () => {
    const r = leaderN1({ maxUncommittedBytes: 100 });
    expect(r.propose(bytes(90))).toMatchObject({ ok: true });
    drain(r);
    // n3 wins term 3 before the 90 bytes commit; n1 follows, then wins term 4 itself
    r.step({ ...emptyMessage(MessageType.Heartbeat, 'n3', 'n1', r.term + 1) });
    expect(r.role).toBe(Role.Follower);
    drain(r);
    r.campaign();
    r.step({ ...emptyMessage(MessageType.VoteResp, 'n2', 'n1', r.term) });
    expect(r.role).toBe(Role.Leader);
    drain(r);
    expect(r.propose(bytes(90))).toMatchObject({ ok: true });
  });

  it('with the default bound, a few large proposals are taken', () => {
    const r = leaderN1();
    for (let i = 0; i < 8; i++) expect(r.propose(bytes(1024 * 1024))).toMatchObject({ ok: true });
  });
});

describe('maxCommittedBytesPerReady', () => {
  /** A follower n2 told that 10 entries of 30 data bytes (54 counted) are committed. */
  function followerWithCommitted(opts: Opts): Raft {
    const r = new Raft({ id: 'n2', electionTick: 10, heartbeatTick: 1, rng: seededRng(2), ...opts }, bootstrapState(voters));
    drain(r);
    const ents = Array.from({ length: 10 }, (_, i) => ({ index: 4 + i, term: 2, type: EntryType.Normal, data: bytes(30, i) }));
    r.step({ ...emptyMessage(MessageType.App, 'n1', 'n2', 2), index: 3, logTerm: 1, entries: ents, commit: 13 });
    r.advance(r.ready()); // persisted
    return r;
  }

  it('hands out committed entries in batches of at most the bound, in order', () => {
    const r = followerWithCommitted({ maxCommittedBytesPerReady: 120 });
    const sizes: number[] = [];
    const applied: number[] = [];
    while (r.hasReady()) {
      const rd = r.ready();
      sizes.push(rd.committedEntries.length);
      expect(rd.committedEntries.reduce((s, e) => s + entrySizeBytes(e), 0)).toBeLessThanOrEqual(120);
      applied.push(...rd.committedEntries.map((e) => e.index));
      r.advance(rd);
    }
    expect(sizes).toEqual([2, 2, 2, 2, 2]);
    expect(applied).toEqual(Array.from({ length: 10 }, (_, i) => 4 + i));
    expect(r.log.applied).toBe(13);
  });

  it('always hands out at least one entry, even one larger than the bound', () => {
    const r = followerWithCommitted({ maxCommittedBytesPerReady: 10 });
    const sizes: number[] = [];
    while (r.hasReady()) {
      const rd = r.ready();
      sizes.push(rd.committedEntries.length);
      r.advance(rd);
    }
    expect(sizes).toEqual(Array.from({ length: 10 }, () => 1));
  });

  it('by default hands out all of a small backlog in one Ready', () => {
    expect(DEFAULT_MAX_COMMITTED_BYTES_PER_READY).toBeGreaterThan(10 * 54);
    const r = followerWithCommitted({});
    expect(r.ready().committedEntries.map((e) => e.index)).toEqual(Array.from({ length: 10 }, (_, i) => 4 + i));
  });

  it('refuses a bound that is not a positive integer', () => {
    expect(() => leaderN1({ maxCommittedBytesPerReady: 0 })).toThrow(/maxCommittedBytesPerReady must be a positive integer/);
    expect(() => leaderN1({ maxUncommittedBytes: -1 })).toThrow(/maxUncommittedBytes must be a positive integer/);
  });
});

describe('maxSizePerMsgBytes (appends to a follower)', () => {
  it('caps the entry bytes of each append, with at least one entry per message', () => {
    const c = new MemoryCluster(voters, { seed: 41, maxSizePerMsgBytes: 300 });
    const leader = c.electLeader();
    const apps: Message[] = [];
    c.dropIf = (m) => {
      if (m.type === MessageType.App && m.entries.length > 0) apps.push(m);
      return false;
    };
    for (let i = 0; i < 20; i++) leader.propose(bytes(100, i));
    leader.propose(bytes(1000)); // larger than the bound: sent alone
    c.stabilize();
    c.tick(3);
    expect(apps.length).toBeGreaterThan(0);
    for (const m of apps) {
      const size = m.entries.reduce((s, e) => s + entrySizeBytes(e), 0);
      if (m.entries.length > 1) expect(size).toBeLessThanOrEqual(300);
    }
    expect(apps.some((m) => m.entries.length === 1 && m.entries[0].data.byteLength === 1000)).toBe(true);
    for (const id of voters) expect(c.get(id).log.lastIndex()).toBe(leader.log.lastIndex());
  });
});
