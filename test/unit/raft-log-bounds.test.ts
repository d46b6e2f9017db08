// Bounds on what a leader holds for its followers (issue 12, a 1 GiB state joining under load):
// the entry bytes in flight to one follower (etcd's MaxInflightBytes), and the entries a
// compaction keeps for followers that still need them (a follower catching up from the log, one
// being sent a snapshot) — within a byte budget, past which the follower gets a snapshot instead.
import { describe, expect, it } from 'vitest';
import { compactionPoint } from '../../protocol/raft/compaction.js';
import { ENTRY_OVERHEAD_BYTES } from '../../protocol/raft/log.js';
import { Inflights, ProgressState } from '../../protocol/raft/progress.js';
import { DEFAULT_MAX_INFLIGHT_BYTES } from '../../protocol/raft/raft.js';
import { MessageType, type Message } from '../../protocol/raft/types.js';
import { MemoryCluster } from '../../sim/memory-cluster.js';

const ids = ['n1', 'n2', 'n3'];
const entryBytes = (m: Message) => m.entries.reduce((n, e) => n + e.data.byteLength + ENTRY_OVERHEAD_BYTES, 0);

describe('Inflights with a byte bound', () => {
  it('is full at the byte bound, always lets one message go alone, and frees bytes with the messages', () => {
    const f = new Inflights(10, 1000);
    f.add(1, 400);
    f.add(2, 400);
    expect(f.full()).toBe(false);
    f.add(3, 400);
    expect(f.bytes).toBe(1200);
    expect(f.full()).toBe(true);
    expect(() => f.add(4, 1)).toThrow(/inflights full/);
    f.freeLE(2);
    expect(f.count).toBe(1);
    expect(f.bytes).toBe(400);
    expect(f.full()).toBe(false);
    f.freeFirstOne();
    expect(f.bytes).toBe(0);
    // one message larger than the bound goes when nothing else is in flight
    f.add(5, 5000);
    expect(f.full()).toBe(true);
    f.reset();
    expect([f.count, f.bytes, f.full()]).toEqual([0, 0, false]);
  });

  it('is still full at the message count', () => {
    const f = new Inflights(2, Infinity);
    f.add(1, 1);
    f.add(2, 1);
    expect(f.full()).toBe(true);
  });
});

describe('a leader bounds the entry bytes in flight to a follower', () => {
  /** Entries of `size` bytes proposed while `slow`'s answers are lost: the bytes of appends sent to it. */
  function sentToSilentFollower(maxInflightBytes: number | undefined, size: number, count: number): { bytes: number; messages: number; leader: string; slow: string } {
    const c = new MemoryCluster(ids, { seed: 51, maxSizePerMsgBytes: 2 * size, ...(maxInflightBytes !== undefined ? { maxInflightBytes } : {}) });
    const leader = c.electLeader();
    c.propose('warm-up'); // every follower in Replicate
    const slow = ids.find((x) => x !== leader.id)!;
    expect(leader.prs.get(slow)!.state).toBe(ProgressState.Replicate);
    let bytes = 0;
    let messages = 0;
    c.dropIf = (m) => {
      if (m.from === slow && m.type === MessageType.AppResp) return true; // its acks are lost
      if (m.to === slow && m.type === MessageType.App && m.entries.length > 0) {
        bytes += entryBytes(m);
        messages++;
      }
      return false;
    };
    for (let i = 0; i < count; i++) c.propose('x'.repeat(size)); // heartbeats are not ticked: no resend
    return { bytes, messages, leader: leader.id, slow };
  }

  it('stops sending appends once the bound is in flight (one message beyond it at most), whatever maxInflightMsgs allows', () => {
    const perEntry = 1000 + ENTRY_OVERHEAD_BYTES;
    const bounded = sentToSilentFollower(10 * perEntry, 1000, 100);
    expect(bounded.bytes).toBeGreaterThanOrEqual(10 * perEntry);
    expect(bounded.bytes).toBeLessThanOrEqual(10 * perEntry + 2 * perEntry);
    // without the byte bound (the message count, 256, is the only limit) all 100 entries go
    const unbounded = sentToSilentFollower(Number.MAX_SAFE_INTEGER, 1000, 100);
    expect(unbounded.bytes).toBe(100 * perEntry);
  });

  it('defaults to 8 MiB per follower', () => {
    expect(DEFAULT_MAX_INFLIGHT_BYTES).toBe(8 * 1024 * 1024);
    const perEntry = 64 * 1024 + ENTRY_OVERHEAD_BYTES;
    const d = sentToSilentFollower(undefined, 64 * 1024, 200); // 12.5 MiB proposed
    expect(d.bytes).toBeGreaterThanOrEqual(DEFAULT_MAX_INFLIGHT_BYTES);
    expect(d.bytes).toBeLessThanOrEqual(DEFAULT_MAX_INFLIGHT_BYTES + 2 * perEntry);
  });
});

describe('compactionPoint keeps the entries a follower needs, within keepBytes', () => {
  // entries 5001..20000 held, 100 bytes each; applied 20000; due by count (everyEntries 10000)
  const bytesAfter = (index: number) => Math.max(0, 20_000 - Math.max(index, 5_000)) * 100;
  const base = { applied: 20_000, snapshotIndex: 10_000, firstIndex: 5_001, everyEntries: 10_000, logBytes: bytesAfter(0), bytesAfter, tailEntries: 100 };

  it('keeps the entries after keepAfter when they fit in keepBytes', () => {
    expect(compactionPoint(base)).toBe(19_900);
    expect(compactionPoint({ ...base, keepAfter: 12_000, keepBytes: 800_000 })).toBe(12_000);
    expect(compactionPoint({ ...base, keepAfter: 12_000, keepBytes: 799_999 })).toBe(19_900); // 8000 entries held after it do not fit: that follower gets a snapshot
  });

  it('keeps nothing more without keepBytes (the default 0), and ignores a need the log cannot serve or the tail covers', () => {
    expect(compactionPoint({ ...base, keepAfter: 12_000 })).toBe(19_900);
    expect(compactionPoint({ ...base, keepAfter: 4_000, keepBytes: 10_000_000 })).toBe(19_900);
    expect(compactionPoint({ ...base, keepAfter: 19_950, keepBytes: 10_000_000 })).toBe(19_900);
  });

  it('over the byte bound: the tail shrinks, but not below what a follower needs while it fits', () => {
    const over = { ...base, applied: 19_000, tailEntries: 5_000, maxLogBytes: 400_000 };
    expect(compactionPoint(over)).toBe(18_000); // half the bound left
    expect(compactionPoint({ ...over, keepAfter: 17_000, keepBytes: 400_000 })).toBe(17_000);
    expect(compactionPoint({ ...over, keepAfter: 15_000, keepBytes: 400_000 })).toBe(18_000);
    // nothing left to drop once it keeps everything after the first index: not due
    expect(compactionPoint({ ...over, keepAfter: 5_000, keepBytes: 10_000_000 })).toBeUndefined();
  });

  it('refuses a negative budget', () => {
    expect(() => compactionPoint({ ...base, keepBytes: -1 })).toThrow(/keepBytes/);
  });
});

describe('Raft.compactionPoint keeps what a recently active follower still needs', () => {
  /** A follower that answers heartbeats but gets no appends while 40 entries commit. */
  function lagging(seed: number) {
    const c = new MemoryCluster(ids, { seed });
    const leader = c.electLeader();
    for (let i = 0; i < 10; i++) c.propose(`a${i}`);
    const slow = ids.find((x) => x !== leader.id)!;
    c.dropIf = (m) => m.to === slow && m.type === MessageType.App;
    for (let i = 0; i < 40; i++) c.propose(`b${i}`);
    c.tick(3); // heartbeats answered: recently active
    const pr = leader.prs.get(slow)!;
    expect(pr.recentActive).toBe(true);
    expect(pr.match).toBeLessThan(leader.log.applied - 30);
    return { c, leader, slow, pr };
  }

  it('keeps the entries after its match within keepBytes, not beyond', () => {
    const { leader, pr } = lagging(61);
    const policy = { everyEntries: 10, tailEntries: 0 };
    expect(leader.compactionPoint(policy)).toBe(leader.log.applied);
    expect(leader.compactionPoint({ ...policy, keepBytes: 1_000_000 })).toBe(pr.match);
    expect(leader.compactionPoint({ ...policy, keepBytes: 100 })).toBe(leader.log.applied);
  });

  it('the driver\'s keepAfter counts too; a follower waiting for a snapshot does not (its match is not what it needs)', () => {
    const { leader, pr } = lagging(62);
    const policy = { everyEntries: 10, tailEntries: 0, keepBytes: 1_000_000 };
    expect(leader.compactionPoint({ ...policy, keepAfter: pr.match - 2 })).toBe(pr.match - 2);
    pr.becomeSnapshot(leader.log.applied);
    expect(leader.compactionPoint(policy)).toBe(leader.log.applied);
    expect(leader.compactionPoint({ ...policy, keepAfter: pr.match + 3 })).toBe(pr.match + 3);
  });

  it('a follower not heard from for an election timeout keeps nothing', () => {
    const { c, leader, slow } = lagging(63);
    c.dropIf = (m) => m.to === slow || m.from === slow;
    c.tick(25); // two check-quorum rounds without an answer
    expect(leader.prs.get(slow)!.recentActive).toBe(false);
    expect(leader.compactionPoint({ everyEntries: 10, tailEntries: 0, keepBytes: 1_000_000 })).toBe(leader.log.applied);
  });
});
