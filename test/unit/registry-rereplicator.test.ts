// The leader's re-replication loop (node/registry/rereplicator.ts) with fake holders and copies:
// only the leader acts, not before its holdings view is complete, one copy per missing replica,
// a failed target is avoided for that blob, and the figures it reports.
import { describe, expect, it } from 'vitest';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { blobKey } from '../../protocol/registry/records.js';
import { Rereplicator, type RereplicatorDeps } from '../../node/registry/rereplicator.js';
import { silentLogger } from '../../node/logger.js';

const d = (c: string) => 'sha256:' + c.repeat(64);
const [A, B] = [d('a'), d('b')];

function stateWith(...digests: string[]): ClusterState {
  const state = new ClusterState();
  const apply = (cmd: Command) => state.apply(state.appliedIndex + 1, encodeCommand(cmd));
  for (const digest of digests) apply({ type: 'kv.put', key: blobKey(digest), value: JSON.stringify({ digest, sizeBytes: 0, pieceSizeBytes: 4 * 1024 * 1024, pieces: [], createdAtMs: 0 }) });
  return state;
}

function harness(over: Partial<RereplicatorDeps> = {}) {
  const copies: string[] = [];
  const holders = new Map<string, string[]>([[A, ['n1', 'dead']], [B, ['n2', 'n3']]]);
  let leader = true;
  const fail = new Set<string>();
  const deps: RereplicatorDeps = {
    state: () => stateWith(A, B),
    isLeader: () => leader,
    live: () => ['n1', 'n2', 'n3'],
    targets: () => ['n1', 'n2', 'n3'],
    holders: (digest) => holders.get(digest) ?? [],
    load: () => 0,
    copy: async (target, digest) => {
      copies.push(`${digest.slice(7, 8)}→${target}`);
      if (fail.has(target)) throw new Error('disk full');
      holders.set(digest, [...(holders.get(digest) ?? []), target]);
    },
    replicas: 2,
    log: silentLogger,
    warmupMs: 15_000,
    ...over,
  };
  const r = new Rereplicator(deps);
  return { r, copies, fail, setLeader: (v: boolean) => (leader = v) };
}

const settle = () => new Promise((res) => setTimeout(res, 10));

describe('re-replicator (leader loop)', () => {
  it('waits for its holdings view, then has a live node copy a blob whose other holder is dead; nothing more once restored', async () => {
    const { r, copies } = harness();
    const t0 = Date.now();
    r.round(t0 + 1000); // warm-up: the gossip has not told it every holder yet
    await settle();
    expect(copies).toEqual([]);
    r.round(t0 + 20_000);
    await settle();
    expect(copies).toEqual(['a→n2']); // A: n1 alive, "dead" not live → one copy, least loaded by id
    expect(r.current()).toMatchObject({ replicas: 2, under: 1, lost: 0, copied: 1, failed: 0 });
    r.round(t0 + 25_000);
    await settle();
    expect(copies).toEqual(['a→n2']);
    expect(r.current()).toMatchObject({ under: 0, copying: 0 });
  });

  it('does nothing off the leader, and reports nothing there', async () => {
    const { r, copies, setLeader } = harness();
    setLeader(false);
    r.round(Date.now() + 60_000);
    await settle();
    expect(copies).toEqual([]);
    expect(r.current()).toBeUndefined();
  });

  it('a target whose copy failed is not asked again for that blob; another one is', async () => {
    const { r, copies, fail } = harness();
    fail.add('n2');
    const t0 = Date.now();
    r.round(t0 + 20_000);
    await settle();
    r.round(t0 + 25_000);
    await settle();
    expect(copies).toEqual(['a→n2', 'a→n3']);
    expect(r.current()).toMatchObject({ copied: 1, failed: 1 });
  });
});
