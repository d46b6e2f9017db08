// The leader's quota gate (node/cluster/writes.ts) judges a write against a state that holds
// everything earlier leaders admitted. Found by the simulator (seed 182): a new leader whose
// state had not applied an earlier term's large write yet (committed, in its log) admitted
// another, and the state passed its quota (94 KB of 64 KB).

import { describe, expect, it } from 'vitest';
import { ClusterWrites, type WritesRaft } from '../../node/cluster/writes.js';
import { adminCaller } from '../../node/cluster/caller.js';
import { OmniError } from '../../node/errors.js';
import { ClusterState, MIN_MAX_STATE_BYTES, decodeCommand, encodeCommand, type ApplyResult, type Command } from '../../protocol/cluster/state.js';
import type { Clock } from '../../node/timers.js';
import { createHash } from 'node:crypto';
import { recordJson } from '../../protocol/apps/record-codec.js';

const QUOTA = MIN_MAX_STATE_BYTES;
const large = (key: string): Command => ({ type: 'kv.put', key, value: `${key}-`.padEnd(QUOTA * 0.6, 'x') });

/** A leader at `term` whose log holds `terms[i]` at index i+1, and a state applied up to `applied`. */
function leader(opts: { term: number; terms: number[]; recordsInCommands?: () => boolean }) {
  const state = new ClusterState();
  let index = 0;
  const applyNext = (c: Command) => {
    index++;
    const r = state.apply(index, encodeCommand(c));
    expect(r.ok).toBe(true);
  };
  applyNext({ type: 'cluster.init', clusterId: 'c', voterTarget: 3, rootNodeId: '', ephemeralRoot: false, maxStateBytes: QUOTA });
  const log = { term: (i: number) => (i >= 1 && i <= opts.terms.length ? opts.terms[i - 1] : undefined), lastIndex: () => opts.terms.length };
  const proposals: Command[] = [];
  const proposedData: Uint8Array[] = [];
  let answer: (data: Uint8Array) => Promise<ApplyResult> = () => Promise.resolve({ ok: true, value: undefined });
  const raft = {
    raft: {
      get term() {
        return opts.term;
      },
      log,
    },
    state,
    isLeader: true,
    leader: 'n1',
    propose: (data: Uint8Array) => {
      const d = decodeCommand(data);
      if (!d.ok) throw new Error(d.error.message);
      proposals.push(d.command);
      proposedData.push(data);
      opts.terms.push(opts.term); // appended to the leader's log
      return answer(data);
    },
    proposeConfChange: () => Promise.reject(new Error('unused')),
    readBarrier: () => Promise.resolve(),
  } as unknown as WritesRaft;
  // Retries (LEADER_CATCHING_UP) wait on this clock: retry() runs the pauses due.
  let now = 0;
  let timers: (() => void)[] = [];
  const retry = async () => {
    now += 100;
    const due = timers;
    timers = [];
    for (const fn of due) fn();
    await new Promise((r) => setTimeout(r, 0));
  };
  const clock: Clock = {
    setTimeout: (fn) => timers.push(fn),
    clearTimeout: () => undefined,
    setInterval: () => undefined,
    clearInterval: () => undefined,
    now: () => now,
    monotonicMs: () => now,
  };
  const writes = new ClusterWrites({ id: 'n1', raft, link: { forwardCommand: () => Promise.reject(new Error('unused')), forwardConf: () => Promise.reject(new Error('unused')) }, isStopping: () => false, clock, ...(opts.recordsInCommands ? { recordsInCommands: opts.recordsInCommands } : {}) });
  return { state, writes, proposals, proposedData, applyNext, retry, opts, setAnswer: (f: typeof answer) => (answer = f) };
}

const admin = adminCaller('t', 'admin-1');

describe('quota gate on a new leader', () => {
  it('waits until the entries of earlier terms are applied, then refuses a write that no longer fits', async () => {
    // Index 1: cluster.init (term 1, applied). Index 2: an earlier leader's large write (term 2,
    // committed, not applied here yet). Index 3: this leader's no-op (term 3).
    const l = leader({ term: 3, terms: [1, 2, 3] });
    const pending = l.writes.propose(large('b'), admin);
    pending.catch(() => undefined); // checked below
    await l.retry();
    await l.retry();
    expect(l.proposals).toEqual([]); // not judged against a state that lacks index 2
    l.applyNext(large('a')); // index 2
    l.applyNext({ type: 'kv.put', key: 'n', value: '1' }); // index 3 (where the no-op is)
    await l.retry();
    await expect(pending).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
    expect(l.proposals).toEqual([]);
  });

  it('admits a small write once caught up, and a write that never grows the state at once', async () => {
    const l = leader({ term: 3, terms: [1, 2, 3] });
    await expect(l.writes.propose({ type: 'kv.delete', key: 'x' }, admin)).resolves.toMatchObject({ ok: true });
    const small = l.writes.propose({ type: 'kv.put', key: 's', value: 'v' }, admin);
    await l.retry();
    l.applyNext(large('a'));
    l.applyNext({ type: 'kv.put', key: 'n', value: '1' });
    await l.retry();
    await expect(small).resolves.toMatchObject({ ok: true });
    expect(l.proposals.map((c) => c.type)).toEqual(['kv.delete', 'kv.put']);
  });

  it('a proposal that timed out still counts against the quota until the state applied past it', async () => {
    const l = leader({ term: 1, terms: [1] });
    l.setAnswer(() => Promise.reject(new OmniError('TIMEOUT', 'not applied in time; it may still commit')));
    await expect(l.writes.propose(large('a'), admin)).rejects.toMatchObject({ code: 'TIMEOUT' });
    l.setAnswer(() => Promise.resolve({ ok: true, value: undefined }));
    await expect(l.writes.propose(large('b'), admin)).rejects.toMatchObject({ code: 'QUOTA_EXCEEDED' });
  });

  it('a timed-out proposal of an earlier term stops counting once this node leads a later term and applied an entry of it', async () => {
    // Term 1: index 2 applied (small), the large write proposed at index 3 times out.
    const l = leader({ term: 1, terms: [1, 1] });
    l.applyNext({ type: 'kv.put', key: 'n', value: '1' });
    l.setAnswer(() => {
      l.opts.terms.push(1, 1); // more proposals behind it (the log ends at index 5 when it times out)
      return Promise.reject(new OmniError('TIMEOUT', 'not applied in time; it may still commit'));
    });
    await expect(l.writes.propose(large('a'), admin)).rejects.toMatchObject({ code: 'TIMEOUT' });
    // It was lost: a leader of term 2 replaced index 3 with its no-op; this node leads term 3
    // and has applied its own no-op at index 3 (the log holds 1, 1, 3). Index 3 is applied: the
    // timed-out write is gone, whatever index it had.
    l.opts.terms.length = 2;
    l.opts.terms.push(3);
    l.opts.term = 3;
    l.applyNext({ type: 'kv.put', key: 'n', value: '2' });
    l.setAnswer(() => Promise.resolve({ ok: true, value: undefined }));
    await expect(l.writes.propose(large('b'), admin)).resolves.toMatchObject({ ok: true });
  });
});

describe('records in commands through the leader', () => {
  const status = { id: 't1', state: 'running', health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 2 } as const;
  const put = (): Command => ({ type: 'kv.put', key: 'taskstatus/t1', value: recordJson('status', status) });
  const withAdmin = (recordsInCommands: () => boolean) => {
    const l = leader({ term: 1, terms: [1, 1], recordsInCommands });
    l.applyNext({ type: 'token.add', token: { id: 'admin-1', hash: createHash('sha256').update('s3cret').digest('hex'), role: 'admin', name: 'a' } });
    return l;
  };

  it('a forwarded record in protobuf is proposed as text while this leader does not know every member reads it', async () => {
    const l = withAdmin(() => false);
    await l.writes.proposeForwarded('n2', encodeCommand(put(), { records: true }), { kind: 'admin', token: 's3cret' });
    expect(l.proposals).toEqual([put()]);
    expect(decodeCommand(l.proposedData[0])).toEqual({ ok: true, command: put() });
    expect(l.proposedData[0]).toEqual(encodeCommand(put()));
  });

  it("is proposed as it came once every member reads it, and the leader's own writes use it too", async () => {
    const l = withAdmin(() => true);
    const data = encodeCommand(put(), { records: true });
    await l.writes.proposeForwarded('n2', data, { kind: 'admin', token: 's3cret' });
    expect(l.proposedData[0]).toBe(data);
    await l.writes.propose(put(), admin);
    expect(l.proposedData[1]).toEqual(data);
    expect(decodeCommand(l.proposedData[1])).toMatchObject({ ok: true, usesRecords: true });
    // A user key never asks for the cluster's schema.
    const off = withAdmin(() => {
      throw new Error('asked');
    });
    await off.writes.propose({ type: 'kv.put', key: 'user', value: 'x' }, admin);
    expect(off.proposals).toHaveLength(1);
  });
});
