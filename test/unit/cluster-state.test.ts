import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { describe, expect, it } from 'vitest';
import {
  ClusterState,
  CommandEncodeError,
  MAX_COMMAND_BYTES,
  MAX_KV_KEY_BYTES,
  MAX_KV_VALUE_BYTES,
  MAX_NODE_ADDRS,
  MAX_NODE_LABELS,
  MAX_TOKENS,
  StateRestoreError,
  decodeCommand,
  encodeCommand,
  type ApplyResult,
  type Command,
  type NodeRegistration,
} from '../../protocol/cluster/state.js';
import { seededRng, type Rng } from '../../protocol/rng.js';

const utf8 = new TextEncoder();
const ROOT = 'QmRoot1';
const HASH_A = 'a'.repeat(64);
const HASH_B = 'b'.repeat(64);

/** Raw bytes of any JSON value: commands the typed encoder would refuse. */
const rawJson = (v: unknown): Uint8Array => utf8.encode(JSON.stringify(v));

function registration(id: string, name: string, extra: Partial<NodeRegistration> = {}): NodeRegistration {
  return {
    id,
    name,
    addrs: [`/ip4/127.0.0.1/tcp/${4000 + name.length}/p2p/${id}`],
    apiUrl: 'http://127.0.0.1:7001',
    resources: { cpuCores: 4, memoryBytes: 8 * 2 ** 30, diskBytes: 100 * 2 ** 30, arch: 'amd64', gpus: [] },
    labels: { zone: 'a' },
    ...extra,
  };
}

/** A ClusterState plus the next Raft index: run() applies at index+1. */
class Replica {
  readonly state: ClusterState;
  index: number;
  constructor(state = new ClusterState()) {
    this.state = state;
    this.index = state.appliedIndex;
  }
  run(c: Command | Uint8Array): ApplyResult {
    this.index++;
    return this.state.apply(this.index, c instanceof Uint8Array ? c : encodeCommand(c));
  }
  conf(type: 'addVoter' | 'addLearner' | 'remove', node: string): ApplyResult {
    this.index++;
    return this.state.applyConfChange(this.index, { type, node });
  }
}

function ok(r: ApplyResult): unknown {
  if (!r.ok) throw new Error(`expected ok, got ${r.error.code}: ${r.error.message}`);
  return r.value;
}

function errorOf(r: ApplyResult): { code: string; message: string } {
  if (r.ok) throw new Error('expected an error result');
  return r.error;
}

/** The snapshot without appliedIndex: what "state unchanged" compares. */
function stateView(s: ClusterState): unknown {
  const doc = JSON.parse(new TextDecoder().decode(s.snapshot())) as Record<string, unknown>;
  delete doc.appliedIndex;
  return doc;
}

/** Applies raw bytes and checks an error leaves everything but appliedIndex as it was. */
function expectRefused(r: Replica, data: Uint8Array, code: string): string {
  const before = stateView(r.state);
  const res = r.run(data);
  const err = errorOf(res);
  expect(err.code).toBe(code);
  expect(stateView(r.state)).toEqual(before);
  expect(r.state.appliedIndex).toBe(r.index);
  return err.message;
}

/** Lower hard limits (StateOptions) for the tests that fill the state. */
const TEST_MAX_KEYS = 5000;
const TEST_MAX_BYTES = 16 * 1024 * 1024;

function initialized(state?: ClusterState): Replica {
  const r = new Replica(state);
  ok(r.run({ type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: ROOT, ephemeralRoot: false }));
  return r;
}

function randomBytes(rng: Rng, length: number): Uint8Array {
  const b = new Uint8Array(length);
  for (let i = 0; i < length; i++) b[i] = rng.int(256);
  return b;
}

function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[rng.int(items.length)];
}

/** A random command over small pools of ids, names and keys, so they collide often. */
function randomCommand(rng: Rng): Command {
  const id = pick(rng, ['QmA', 'QmB', 'QmC', ROOT]);
  const name = pick(rng, ['alpha', 'beta', 'gamma']);
  const key = pick(rng, ['a', 'a/b', 'a/c', 'b', 'ключ']);
  const version = rng.int(4);
  switch (rng.int(12)) {
    case 0: return { type: 'cluster.init', clusterId: `c${rng.int(3)}`, voterTarget: rng.int(11), rootNodeId: id, ephemeralRoot: rng.int(2) === 0 };
    case 1: return { type: 'config.set', voterTarget: rng.int(11), ...(rng.int(2) ? { maxStateBytes: pick(rng, [1000, 200_000, 3 * 2 ** 30]) } : {}) };
    case 2: return { type: 'root.retire' };
    case 3: return { type: 'node.register', node: registration(id, name, { labels: { n: String(rng.int(3)) } }) };
    case 4: return { type: 'node.status', id, status: pick(rng, ['up', 'down'] as const), reason: pick(rng, ['', 'heartbeat lost']) };
    case 5: return { type: 'node.remove', id };
    case 6: return { type: 'token.add', token: { id: `t${rng.int(3)}`, hash: pick(rng, [HASH_A, HASH_B]), role: 'join', name: 'x' } };
    case 7: return { type: 'token.revoke', id: `t${rng.int(3)}` };
    case 8: return { type: 'kv.put', key, value: `v${rng.int(100)}`, ...(rng.int(2) ? { expectedVersion: version } : {}) };
    case 9: return { type: 'kv.delete', key, ...(rng.int(2) ? { expectedVersion: version } : {}) };
    case 10: return { type: 'node.eligibility', id, eligibility: pick(rng, ['eligible', 'ineligible', 'draining'] as const), ...(rng.int(2) ? { expected: pick(rng, ['eligible', 'draining'] as const) } : {}) };
    default: return { type: 'kv.put', key, value: '' };
  }
}

describe('ClusterState: fresh state and indices', () => {
  it('starts empty with the default config', () => {
    const s = new ClusterState();
    expect(s.appliedIndex).toBe(0);
    expect(s.config()).toEqual({ clusterId: '', voterTarget: 3, rootNodeId: '', rootRetired: false, ephemeralRoot: false });
    expect(s.nodes()).toEqual([]);
    expect(s.tokens()).toEqual([]);
    expect(s.kvList('', 10)).toEqual([]);
  });

  it('an empty entry (leader no-op) only advances appliedIndex', () => {
    const s = new ClusterState();
    const before = s.snapshot();
    expect(s.apply(5, new Uint8Array(0))).toEqual({ ok: true });
    expect(s.appliedIndex).toBe(5);
    expect(stateView(s)).toEqual(stateView(ClusterState.restore(before)));
  });

  it('refuses stale and invalid indices without changing anything', () => {
    const r = initialized();
    const snap = r.state.snapshot();
    const put = encodeCommand({ type: 'kv.put', key: 'k', value: 'v' });
    expect(errorOf(r.state.apply(1, put)).code).toBe('STALE_INDEX');
    expect(errorOf(r.state.apply(0, put)).code).toBe('INVALID_INDEX');
    expect(errorOf(r.state.apply(-3, put)).code).toBe('INVALID_INDEX');
    expect(errorOf(r.state.apply(2.5, put)).code).toBe('INVALID_INDEX');
    expect(errorOf(r.state.apply(Number.NaN, put)).code).toBe('INVALID_INDEX');
    expect(errorOf(r.state.applyConfChange(1, { type: 'addVoter', node: 'QmA' })).code).toBe('STALE_INDEX');
    expect(r.state.snapshot()).toEqual(snap);
    expect(r.state.kvGet('k')).toBeUndefined();
  });

  it('allows gaps between indices', () => {
    const r = initialized();
    expect(ok(r.state.apply(10, encodeCommand({ type: 'kv.put', key: 'k', value: 'v' })))).toEqual({ key: 'k', version: 1, modIndex: 10 });
    expect(r.state.appliedIndex).toBe(10);
  });
});

describe('ClusterState: cluster commands', () => {
  it('cluster.init sets the config once', () => {
    const r = initialized();
    expect(r.state.config()).toEqual({ clusterId: 'c1', voterTarget: 3, rootNodeId: ROOT, rootRetired: false, ephemeralRoot: false });
    const again = encodeCommand({ type: 'cluster.init', clusterId: 'c2', voterTarget: 5, rootNodeId: 'QmX', ephemeralRoot: true });
    expect(expectRefused(r, again, 'ALREADY_INITIALIZED')).toContain('"c1"');
    expect(r.state.config().clusterId).toBe('c1');
  });

  it('cluster.init refuses a bad voterTarget and can then still run', () => {
    const r = new Replica();
    for (const voterTarget of [0, 2, 4, 11, -1, 2.5]) {
      const bad = encodeCommand({ type: 'cluster.init', clusterId: 'c1', voterTarget, rootNodeId: ROOT, ephemeralRoot: true });
      expect(expectRefused(r, bad, 'INVALID_ARGUMENT')).toMatch(/^voterTarget: /);
    }
    ok(r.run({ type: 'cluster.init', clusterId: 'c1', voterTarget: 1, rootNodeId: ROOT, ephemeralRoot: true }));
    expect(r.state.config()).toMatchObject({ voterTarget: 1, ephemeralRoot: true });
  });

  it('cluster.init marks an already registered root node', () => {
    const r = new Replica();
    ok(r.run({ type: 'node.register', node: registration(ROOT, 'root') }));
    expect(r.state.node(ROOT)?.root).toBe(false);
    ok(r.run({ type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: ROOT, ephemeralRoot: false }));
    expect(r.state.node(ROOT)).toMatchObject({ root: true, updatedIndex: 2, joinedIndex: 1 });
  });

  it('config.set accepts odd 1..9 and refuses the rest', () => {
    const r = initialized();
    for (const v of [1, 3, 5, 7, 9]) {
      ok(r.run({ type: 'config.set', voterTarget: v }));
      expect(r.state.config().voterTarget).toBe(v);
    }
    for (const v of [0, 2, 8, 10, 11, 1.5, -3]) {
      expectRefused(r, encodeCommand({ type: 'config.set', voterTarget: v }), 'INVALID_ARGUMENT');
    }
    expect(r.state.config().voterTarget).toBe(9);
    expect(expectRefused(r, rawJson({ type: 'config.set', voterTarget: '3' }), 'INVALID_COMMAND')).toBe('voterTarget: must be a number');
  });

  it('root.retire clears the root flag once and is idempotent', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration(ROOT, 'root') }));
    expect(r.state.node(ROOT)?.root).toBe(true);
    ok(r.run({ type: 'root.retire' }));
    expect(r.state.config().rootRetired).toBe(true);
    expect(r.state.node(ROOT)).toMatchObject({ root: false, updatedIndex: 3 });
    const snap = stateView(r.state);
    ok(r.run({ type: 'root.retire' }));
    expect(stateView(r.state)).toEqual(snap);
    // A retired root that registers again is no longer root.
    ok(r.run({ type: 'node.register', node: registration(ROOT, 'root', { apiUrl: 'https://root:7001' }) }));
    expect(r.state.node(ROOT)?.root).toBe(false);
  });
});

describe('ClusterState: nodes', () => {
  it('node.register creates a record and returns it', () => {
    const r = initialized();
    const value = ok(r.run({ type: 'node.register', node: registration(ROOT, 'root') }));
    const expected = {
      ...registration(ROOT, 'root'),
      role: 'none', status: 'up', statusReason: '', root: true, joinedIndex: 2, updatedIndex: 2,
    };
    expect(value).toEqual(expected);
    expect(r.state.node(ROOT)).toEqual(expected);
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    expect(r.state.node('QmA')).toMatchObject({ root: false, role: 'none', joinedIndex: 3 });
  });

  it('node.register on a known node keeps role and joinedIndex, and sets it up again', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.conf('addVoter', 'QmA'));
    ok(r.run({ type: 'node.status', id: 'QmA', status: 'down', reason: 'heartbeat lost' }));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha2', { labels: { zone: 'b' } }) }));
    expect(r.state.node('QmA')).toMatchObject({
      name: 'alpha2', labels: { zone: 'b' }, role: 'voter', status: 'up', statusReason: '', joinedIndex: 2, updatedIndex: 5,
    });
    expect(r.state.nodeByName('alpha')).toBeUndefined();
  });

  it('node.register with nothing new does not bump updatedIndex', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    expect(r.state.node('QmA')?.updatedIndex).toBe(2);
  });

  it('node names are unique among nodes that have not left', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    const msg = expectRefused(r, encodeCommand({ type: 'node.register', node: registration('QmB', 'alpha') }), 'NAME_TAKEN');
    expect(msg).toContain('QmA');
    ok(r.run({ type: 'node.remove', id: 'QmA' }));
    ok(r.run({ type: 'node.register', node: registration('QmB', 'alpha') }));
    expect(r.state.nodeByName('alpha')?.id).toBe('QmB');
    // The left node cannot come back under the name now taken.
    expectRefused(r, encodeCommand({ type: 'node.register', node: registration('QmA', 'alpha') }), 'NAME_TAKEN');
  });

  it('nodeByName falls back to the node that left last', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'node.remove', id: 'QmA' }));
    ok(r.run({ type: 'node.register', node: registration('QmB', 'alpha') }));
    ok(r.run({ type: 'node.remove', id: 'QmB' }));
    expect(r.state.nodeByName('alpha')?.id).toBe('QmB');
    expect(r.state.nodeByName('nobody')).toBeUndefined();
  });

  it('node.status changes status and reason; unchanged is a no-op; unknown is NOT_FOUND', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'node.status', id: 'QmA', status: 'down', reason: 'heartbeat lost' }));
    expect(r.state.node('QmA')).toMatchObject({ status: 'down', statusReason: 'heartbeat lost', updatedIndex: 3 });
    ok(r.run({ type: 'node.status', id: 'QmA', status: 'down', reason: 'heartbeat lost' }));
    expect(r.state.node('QmA')?.updatedIndex).toBe(3);
    ok(r.run({ type: 'node.status', id: 'QmA', status: 'up' }));
    expect(r.state.node('QmA')).toMatchObject({ status: 'up', statusReason: '', updatedIndex: 5 });
    expectRefused(r, encodeCommand({ type: 'node.status', id: 'QmZ', status: 'down' }), 'NOT_FOUND');
    expectRefused(r, rawJson({ type: 'node.status', id: 'QmA', status: 'left' }), 'INVALID_COMMAND');
  });

  it('node.status on a node that left is a CONFLICT', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'node.remove', id: 'QmA' }));
    expectRefused(r, encodeCommand({ type: 'node.status', id: 'QmA', status: 'up' }), 'CONFLICT');
  });

  it('node.remove marks the node left with no role', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.conf('addLearner', 'QmA'));
    expect(r.state.node('QmA')?.role).toBe('learner');
    ok(r.run({ type: 'node.remove', id: 'QmA' }));
    expect(r.state.node('QmA')).toMatchObject({ status: 'left', role: 'none', updatedIndex: 4 });
    expectRefused(r, encodeCommand({ type: 'node.remove', id: 'QmZ' }), 'NOT_FOUND');
  });

  it('node.eligibility: draining / ineligible survive a re-register and a snapshot; eligible removes the field', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    const plain = r.state.snapshot();
    expect(r.state.node('QmA')?.eligibility).toBeUndefined();
    ok(r.run({ type: 'node.eligibility', id: 'QmA', eligibility: 'draining' }));
    expect(r.state.node('QmA')?.eligibility).toBe('draining');
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha', { labels: { zone: 'b' } }) }));
    expect(r.state.node('QmA')).toMatchObject({ eligibility: 'draining', labels: { zone: 'b' } });
    expect(ClusterState.restore(r.state.snapshot()).node('QmA')?.eligibility).toBe('draining');
    // compare-and-set: the leader turns a drained node ineligible only if it is still draining
    expectRefused(r, encodeCommand({ type: 'node.eligibility', id: 'QmA', eligibility: 'ineligible', expected: 'eligible' }), 'CONFLICT');
    ok(r.run({ type: 'node.eligibility', id: 'QmA', eligibility: 'ineligible', expected: 'draining' }));
    expect(r.state.node('QmA')?.eligibility).toBe('ineligible');
    ok(r.run({ type: 'node.eligibility', id: 'QmA', eligibility: 'eligible' }));
    expect('eligibility' in r.state.node('QmA')!).toBe(false);
    expect(Object.keys(JSON.parse(new TextDecoder().decode(plain)).nodes[0])).not.toContain('eligibility');
    expectRefused(r, encodeCommand({ type: 'node.eligibility', id: 'QmZ', eligibility: 'draining' }), 'NOT_FOUND');
    expectRefused(r, rawJson({ type: 'node.eligibility', id: 'QmA', eligibility: 'maybe' }), 'INVALID_COMMAND');
    ok(r.run({ type: 'node.remove', id: 'QmA' }));
    expectRefused(r, encodeCommand({ type: 'node.eligibility', id: 'QmA', eligibility: 'draining' }), 'CONFLICT');
  });

  it('nodes() sorts by name then id, and hands out copies', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmC', 'beta') }));
    ok(r.run({ type: 'node.register', node: registration('QmB', 'alpha') }));
    ok(r.run({ type: 'node.remove', id: 'QmB' }));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    expect(r.state.nodes().map((n) => n.id)).toEqual(['QmA', 'QmB', 'QmC']);
    const n = r.state.node('QmA')!;
    n.addrs.push('/ip4/6.6.6.6');
    n.labels.zone = 'evil';
    n.resources.gpus.push({ model: 'x', memoryBytes: 1 });
    expect(r.state.node('QmA')).toMatchObject({ addrs: registration('QmA', 'alpha').addrs, labels: { zone: 'a' } });
    expect(r.state.node('QmA')?.resources.gpus).toEqual([]);
  });
});

describe('ClusterState: conf changes', () => {
  it('sets the role of a registered node and bumps updatedIndex', () => {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.conf('addLearner', 'QmA'));
    expect(r.state.node('QmA')).toMatchObject({ role: 'learner', updatedIndex: 3 });
    ok(r.conf('addVoter', 'QmA'));
    expect(r.state.node('QmA')).toMatchObject({ role: 'voter', updatedIndex: 4 });
    ok(r.conf('remove', 'QmA'));
    expect(r.state.node('QmA')).toMatchObject({ role: 'none', status: 'up', updatedIndex: 5 });
    expect(r.state.appliedIndex).toBe(5);
  });

  it('remembers roles of nodes not registered yet', () => {
    const r = initialized();
    ok(r.conf('addVoter', ROOT));
    ok(r.conf('addLearner', 'QmB'));
    ok(r.conf('addLearner', 'QmC'));
    ok(r.conf('remove', 'QmC'));
    ok(r.run({ type: 'node.register', node: registration(ROOT, 'root') }));
    ok(r.run({ type: 'node.register', node: registration('QmB', 'beta') }));
    ok(r.run({ type: 'node.register', node: registration('QmC', 'gamma') }));
    expect(r.state.nodes().map((n) => [n.id, n.role])).toEqual([['QmB', 'learner'], ['QmC', 'none'], [ROOT, 'voter']]);
    // Survives a snapshot taken before registration.
    const r2 = initialized();
    ok(r2.conf('addVoter', 'QmB'));
    const restored = new Replica(ClusterState.restore(r2.state.snapshot()));
    ok(restored.run({ type: 'node.register', node: registration('QmB', 'beta') }));
    expect(restored.state.node('QmB')?.role).toBe('voter');
  });

  it('refuses a malformed conf change, changing nothing but appliedIndex', () => {
    const r = initialized();
    const before = stateView(r.state);
    expect(errorOf(r.state.applyConfChange(2, { type: 'promote' as 'addVoter', node: 'QmA' })).code).toBe('INVALID_ARGUMENT');
    expect(errorOf(r.state.applyConfChange(3, { type: 'addVoter', node: 'not a peer id!' })).code).toBe('INVALID_ARGUMENT');
    expect(errorOf(r.state.applyConfChange(4, null as never)).code).toBe('INVALID_ARGUMENT');
    expect(stateView(r.state)).toEqual(before);
    expect(r.state.appliedIndex).toBe(4);
  });
});

describe('ClusterState: tokens', () => {
  it('token.add and token.revoke', () => {
    const r = initialized();
    ok(r.run({ type: 'token.add', token: { id: 'admin-1', hash: HASH_A, role: 'admin', name: 'admin (omnid init)' } }));
    ok(r.run({ type: 'token.add', token: { id: 'join_1', hash: HASH_B, role: 'join', name: '' } }));
    expect(r.state.tokens()).toEqual([
      { id: 'admin-1', hash: HASH_A, role: 'admin', name: 'admin (omnid init)', createdIndex: 2 },
      { id: 'join_1', hash: HASH_B, role: 'join', name: '', createdIndex: 3 },
    ]);
    expect(r.state.tokenByHash(HASH_B)?.id).toBe('join_1');
    ok(r.run({ type: 'token.revoke', id: 'admin-1' }));
    expect(r.state.tokenById('admin-1')).toBeUndefined();
    expect(r.state.tokenByHash(HASH_A)).toBeUndefined();
    expect(r.state.tokens().map((t) => t.id)).toEqual(['join_1']);
  });

  it('refuses duplicate ids and hashes, unknown revokes and malformed tokens', () => {
    const r = initialized();
    ok(r.run({ type: 'token.add', token: { id: 't1', hash: HASH_A, role: 'admin', name: 'a' } }));
    expectRefused(r, encodeCommand({ type: 'token.add', token: { id: 't1', hash: HASH_B, role: 'admin', name: 'b' } }), 'CONFLICT');
    expectRefused(r, encodeCommand({ type: 'token.add', token: { id: 't2', hash: HASH_A, role: 'join', name: 'b' } }), 'CONFLICT');
    expectRefused(r, encodeCommand({ type: 'token.revoke', id: 't9' }), 'NOT_FOUND');
    const upper = expectRefused(r, rawJson({ type: 'token.add', token: { id: 't3', hash: 'A'.repeat(64), role: 'join', name: '' } }), 'INVALID_COMMAND');
    expect(upper).toMatch(/^token\.hash: /);
    expectRefused(r, rawJson({ type: 'token.add', token: { id: 't3', hash: HASH_B, role: 'root', name: '' } }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'token.add', token: { id: 't 3', hash: HASH_B, role: 'join', name: '' } }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'token.add', token: { id: 'x'.repeat(65), hash: HASH_B, role: 'join', name: '' } }), 'INVALID_COMMAND');
  });

  it(`holds at most ${MAX_TOKENS} tokens`, () => {
    const r = initialized();
    for (let i = 0; i < MAX_TOKENS; i++) {
      ok(r.run({ type: 'token.add', token: { id: `t${i}`, hash: i.toString(16).padStart(64, '0'), role: 'join', name: '' } }));
    }
    const more = encodeCommand({ type: 'token.add', token: { id: 'one-more', hash: 'f'.repeat(64), role: 'join', name: '' } });
    expectRefused(r, more, 'RESOURCE_EXHAUSTED');
    ok(r.run({ type: 'token.revoke', id: 't0' }));
    ok(r.run(more));
  });
});

describe('ClusterState: kv', () => {
  it('put creates at version 1 and bumps the version on every put', () => {
    const r = initialized();
    expect(ok(r.run({ type: 'kv.put', key: 'app/x', value: '1' }))).toEqual({ key: 'app/x', version: 1, modIndex: 2 });
    expect(ok(r.run({ type: 'kv.put', key: 'app/x', value: '1' }))).toEqual({ key: 'app/x', version: 2, modIndex: 3 });
    expect(r.state.kvGet('app/x')).toEqual({ key: 'app/x', value: '1', version: 2, createIndex: 2, modIndex: 3 });
  });

  it('compare-and-set on expectedVersion', () => {
    const r = initialized();
    ok(r.run({ type: 'kv.put', key: 'k', value: 'a', expectedVersion: 0 }));
    const taken = expectRefused(r, encodeCommand({ type: 'kv.put', key: 'k', value: 'b', expectedVersion: 0 }), 'CONFLICT');
    expect(taken).toContain('current version 1');
    const stale = expectRefused(r, encodeCommand({ type: 'kv.put', key: 'k', value: 'b', expectedVersion: 7 }), 'CONFLICT');
    expect(stale).toBe('kv key "k": expected version 7, current version 1');
    expect(ok(r.run({ type: 'kv.put', key: 'k', value: 'b', expectedVersion: 1 }))).toMatchObject({ version: 2 });
    expect(r.state.kvGet('k')?.value).toBe('b');
    expectRefused(r, encodeCommand({ type: 'kv.put', key: 'missing', value: 'x', expectedVersion: 1 }), 'CONFLICT');
    expect(r.state.kvGet('missing')).toBeUndefined();
    expectRefused(r, rawJson({ type: 'kv.put', key: 'k', value: 'x', expectedVersion: -1 }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'kv.put', key: 'k', value: 'x', expectedVersion: '2' }), 'INVALID_COMMAND');
  });

  it('delete: NOT_FOUND, CONFLICT, then gone; a new put starts at version 1', () => {
    const r = initialized();
    expectRefused(r, encodeCommand({ type: 'kv.delete', key: 'k' }), 'NOT_FOUND');
    ok(r.run({ type: 'kv.put', key: 'k', value: 'a' }));
    ok(r.run({ type: 'kv.put', key: 'k', value: 'b' }));
    expect(expectRefused(r, encodeCommand({ type: 'kv.delete', key: 'k', expectedVersion: 1 }), 'CONFLICT')).toContain('current version 2');
    expect(ok(r.run({ type: 'kv.delete', key: 'k', expectedVersion: 2 }))).toEqual({ key: 'k', version: 2 });
    expect(r.state.kvGet('k')).toBeUndefined();
    expect(ok(r.run({ type: 'kv.put', key: 'k', value: 'c' }))).toMatchObject({ version: 1 });
    expect(r.state.kvGet('k')).toMatchObject({ createIndex: 7, modIndex: 7 });
  });

  it('kvList returns a sorted prefix range up to limit', () => {
    const r = initialized();
    for (const key of ['b/2', 'a', 'b/1', 'b', 'b/10', 'c', 'b0']) ok(r.run({ type: 'kv.put', key, value: key }));
    expect(r.state.kvList('b/', 100).map((k) => k.key)).toEqual(['b/1', 'b/10', 'b/2']);
    expect(r.state.kvList('b', 100).map((k) => k.key)).toEqual(['b', 'b/1', 'b/10', 'b/2', 'b0']);
    expect(r.state.kvList('', 3).map((k) => k.key)).toEqual(['a', 'b', 'b/1']);
    expect(r.state.kvList('', 0)).toEqual([]);
    expect(r.state.kvList('zzz', 10)).toEqual([]);
    ok(r.run({ type: 'kv.delete', key: 'b/10' }));
    expect(r.state.kvList('b/', 100).map((k) => k.key)).toEqual(['b/1', 'b/2']);
    const got = r.state.kvList('a', 1)[0];
    got.value = 'changed';
    expect(r.state.kvGet('a')?.value).toBe('a');
  });

  it('enforces key and value limits', () => {
    const r = initialized();
    const longKey = 'é'.repeat(MAX_KV_KEY_BYTES / 2); // 512 bytes of UTF-8, 256 characters
    ok(r.run({ type: 'kv.put', key: longKey, value: '' }));
    expect(expectRefused(r, rawJson({ type: 'kv.put', key: `${longKey}x`, value: '' }), 'INVALID_COMMAND')).toMatch(/^key: /);
    expectRefused(r, rawJson({ type: 'kv.put', key: '', value: '' }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'kv.put', key: 'a\nb', value: '' }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'kv.put', key: 'a\u0085b', value: '' }), 'INVALID_COMMAND');
    expectRefused(r, rawJson({ type: 'kv.put', key: '\ud800', value: '' }), 'INVALID_COMMAND');
    ok(r.run({ type: 'kv.put', key: 'big', value: 'v'.repeat(MAX_KV_VALUE_BYTES) }));
    const tooBig = expectRefused(r, rawJson({ type: 'kv.put', key: 'big', value: 'v'.repeat(MAX_KV_VALUE_BYTES + 1) }), 'INVALID_COMMAND');
    expect(tooBig).toMatch(/^value: /);
    expect(() => encodeCommand({ type: 'kv.put', key: 'big', value: '€'.repeat(MAX_KV_VALUE_BYTES / 3 + 1) })).toThrow(CommandEncodeError);
  });

  it(`holds at most ${TEST_MAX_KEYS} keys`, () => {
    const r = initialized(new ClusterState({ maxKvKeys: TEST_MAX_KEYS, maxStateBytes: TEST_MAX_BYTES }));
    for (let i = 0; i < TEST_MAX_KEYS; i++) ok(r.run({ type: 'kv.put', key: `k${String(i).padStart(6, '0')}`, value: '' }));
    expect(r.state.kvCount()).toBe(TEST_MAX_KEYS);
    expectRefused(r, encodeCommand({ type: 'kv.put', key: 'one-more', value: '' }), 'RESOURCE_EXHAUSTED');
    ok(r.run({ type: 'kv.put', key: 'k000000', value: 'updating an existing key is fine' }));
    ok(r.run({ type: 'kv.delete', key: 'k000001' }));
    ok(r.run({ type: 'kv.put', key: 'one-more', value: '' }));
    expect(r.state.kvList('k00000', 3).map((k) => k.key)).toEqual(['k000000', 'k000002', 'k000003']);
  });

  it(`keeps the encoded state under ${TEST_MAX_BYTES} bytes`, () => {
    const r = initialized(new ClusterState({ maxKvKeys: TEST_MAX_KEYS, maxStateBytes: TEST_MAX_BYTES }));
    const value = 'x'.repeat(MAX_KV_VALUE_BYTES);
    let i = 0;
    let refused: ApplyResult = { ok: true };
    for (; i < 2 * (TEST_MAX_BYTES / MAX_KV_VALUE_BYTES) && refused.ok; i++) {
      refused = r.run({ type: 'kv.put', key: `blob/${i}`, value });
    }
    expect(errorOf(refused).code).toBe('RESOURCE_EXHAUSTED');
    i--;
    // Each record is its value plus ~80 bytes of key and fields: one fewer than the raw quotient fits.
    expect(i).toBe(TEST_MAX_BYTES / MAX_KV_VALUE_BYTES - 1);
    expect(r.state.sizeBytes).toBeLessThanOrEqual(TEST_MAX_BYTES);
    expect(r.state.snapshot().byteLength).toBeLessThan(TEST_MAX_BYTES + 1000);
    // Same-size rewrites and shrinking still work when full; deletes free room.
    ok(r.run({ type: 'kv.put', key: 'blob/2', value }));
    ok(r.run({ type: 'kv.put', key: 'blob/0', value: 'small' }));
    ok(r.run({ type: 'kv.put', key: `blob/${i}`, value }));
    ok(r.run({ type: 'kv.delete', key: 'blob/1' }));
  });
});

describe('ClusterState: malformed commands', () => {
  it('names the offending field', () => {
    const r = initialized();
    const node = registration('QmA', 'alpha', { addrs: ['/a', '/b', 'x'.repeat(257)] });
    expect(expectRefused(r, rawJson({ type: 'node.register', node }), 'INVALID_COMMAND')).toBe(
      'node.addrs[2]: must be a string of at most 256 characters',
    );
    const cases: Array<[unknown, RegExp]> = [
      [{ type: 'node.register', node: registration('QmA', 'bad name') }, /^node\.name: /],
      [{ type: 'node.register', node: registration('QmA', 'x'.repeat(64)) }, /^node\.name: /],
      [{ type: 'node.register', node: registration('Qm-A', 'alpha') }, /^node\.id: /],
      [{ type: 'node.register', node: registration('Q'.repeat(129), 'alpha') }, /^node\.id: /],
      [{ type: 'node.register', node: registration('QmA', 'alpha', { apiUrl: 'ftp://x' }) }, /^node\.apiUrl: /],
      [{ type: 'node.register', node: registration('QmA', 'alpha', { addrs: Array(MAX_NODE_ADDRS + 1).fill('/a') }) }, /^node\.addrs: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), extra: 1 } }, /^node\.extra: unknown field$/],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), labels: { 'bad key!': 'v' } } }, /^node\.labels\["bad key!"\] key: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), labels: { k: 5 } } }, /^node\.labels\["k"\]: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), labels: ['a'] } }, /^node\.labels: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), resources: { cpuCores: -1, memoryBytes: 0, diskBytes: 0, arch: 'amd64', gpus: [] } } }, /^node\.resources\.cpuCores: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), resources: { cpuCores: 1, memoryBytes: 1.5, diskBytes: 0, arch: 'amd64', gpus: [] } } }, /^node\.resources\.memoryBytes: /],
      [{ type: 'node.register', node: { ...registration('QmA', 'alpha'), resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 0, arch: 'amd64', gpus: [{ model: 'A100' }] } } }, /^node\.resources\.gpus\[0\]\.memoryBytes: missing$/],
      [{ type: 'node.register' }, /^node: missing$/],
      [{ type: 'kv.put', key: 'k' }, /^value: missing$/],
      [{ type: 'kv.put', key: 'k', value: 'v', expectedVersion: null }, /^expectedVersion: /],
      [{ type: 'kv.put', key: 7, value: 'v' }, /^key: /],
      [{ type: 'node.status', id: 'QmA', status: 'down', reason: 'x'.repeat(257) }, /^reason: /],
      [{ type: 'root.retire', now: true }, /^now: unknown field$/],
      [{ type: 'cluster.init', clusterId: '', voterTarget: 3, rootNodeId: '', ephemeralRoot: false }, /^clusterId: /],
      [{ type: 'cluster.init', clusterId: 'c', voterTarget: 3, rootNodeId: '', ephemeralRoot: 'no' }, /^ephemeralRoot: /],
      [{ type: 3 }, /^type: must be a string$/],
      [{}, /^type: must be a string$/],
      [[], /^command: must be a JSON object$/],
      [null, /^command: must be a JSON object$/],
      ['kv.put', /^command: must be a JSON object$/],
    ];
    for (const [raw, pattern] of cases) expect(expectRefused(r, rawJson(raw), 'INVALID_COMMAND')).toMatch(pattern);
  });

  it('accepts the label limit and refuses one more', () => {
    const r = initialized();
    const labels = Object.fromEntries(Array.from({ length: MAX_NODE_LABELS }, (_, i) => [`l${i}`, 'v']));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha', { labels }) }));
    expectRefused(r, rawJson({ type: 'node.register', node: registration('QmA', 'alpha', { labels: { ...labels, extra: 'v' } }) }), 'INVALID_COMMAND');
  });

  it('refuses bytes that are not UTF-8 JSON, or too large', () => {
    const r = initialized();
    expect(expectRefused(r, utf8.encode('{"type":'), 'INVALID_COMMAND')).toBe('command: not valid UTF-8 JSON');
    expectRefused(r, new Uint8Array([0x7b, 0xff, 0x7d]), 'INVALID_COMMAND');
    expectRefused(r, utf8.encode('\ufeff{"type":"root.retire"}'), 'INVALID_COMMAND');
    const huge = rawJson({ type: 'kv.put', key: 'k', value: 'x'.repeat(MAX_COMMAND_BYTES) });
    expect(expectRefused(r, huge, 'INVALID_COMMAND')).toContain(`limit of ${MAX_COMMAND_BYTES} bytes`);
  });

  it('refuses an unknown command by name, with the state unchanged', () => {
    const r = initialized();
    ok(r.run({ type: 'kv.put', key: 'k', value: 'v' }));
    expect(expectRefused(r, rawJson({ type: 'job.run', image: 'x' }), 'UNKNOWN_COMMAND')).toBe('unknown command type "job.run"');
    expectRefused(r, rawJson({ type: 'toString' }), 'UNKNOWN_COMMAND');
    expectRefused(r, rawJson({ type: '__proto__' }), 'UNKNOWN_COMMAND');
    expect(expectRefused(r, rawJson({ type: 'y'.repeat(10_000) }), 'UNKNOWN_COMMAND').length).toBeLessThan(100);
  });

  it('a "__proto__" label stays a plain label', () => {
    const r = initialized();
    const data = utf8.encode(JSON.stringify({ type: 'node.register', node: { ...registration('QmA', 'alpha'), labels: {} } }).replace('"labels":{}', '"labels":{"__proto__":"x","1":"one"}'));
    ok(r.run(data));
    const n = r.state.node('QmA')!;
    expect(Object.keys(n.labels).sort()).toEqual(['1', '__proto__']);
    expect(Object.getPrototypeOf(n.labels)).toBe(Object.prototype);
    expect(ClusterState.restore(r.state.snapshot()).node('QmA')?.labels).toEqual(n.labels);
  });

  it('never throws on random bytes or mutated commands, and errors change nothing', () => {
    const rng = seededRng(0x5eed);
    const r = initialized();
    for (let i = 0; i < 50; i++) r.run(randomCommand(rng));
    const valid = Array.from({ length: 40 }, () => encodeCommand(randomCommand(rng)));
    for (let i = 0; i < 3000; i++) {
      let data: Uint8Array;
      if (i % 3 === 0) {
        data = randomBytes(rng, rng.int(64));
      } else {
        data = pick(rng, valid).slice();
        for (let k = 1 + rng.int(3); k > 0; k--) data[rng.int(data.length)] = i % 3 === 1 ? rng.int(256) : pick(rng, [0x22, 0x7b, 0x7d, 0x5b, 0x30, 0x2c, 0x3a]);
      }
      const before = stateView(r.state);
      let res: ApplyResult | undefined;
      expect(() => { res = r.run(data); }).not.toThrow();
      expect(typeof res?.ok).toBe('boolean');
      if (res && !res.ok) {
        expect(typeof res.error.code).toBe('string');
        expect(stateView(r.state)).toEqual(before);
      }
      expect(r.state.appliedIndex).toBe(r.index);
    }
  });
});

describe('encodeCommand / decodeCommand', () => {
  it('round-trips every command type', () => {
    const rng = seededRng(7);
    for (let i = 0; i < 200; i++) {
      const c = randomCommand(rng);
      const d = decodeCommand(encodeCommand(c));
      expect(d).toEqual({ ok: true, command: c });
    }
  });

  it('throws a typed error on what would not decode', () => {
    const bad = { type: 'node.remove', id: 'not valid' } as Command;
    expect(() => encodeCommand(bad)).toThrow(CommandEncodeError);
    try {
      encodeCommand({ type: 'nope' } as unknown as Command);
    } catch (err) {
      expect(err).toBeInstanceOf(CommandEncodeError);
      expect((err as CommandEncodeError).code).toBe('UNKNOWN_COMMAND');
    }
    expect(decodeCommand(new Uint8Array(0)).ok).toBe(false);
  });
});

describe('ClusterState: snapshots and determinism', () => {
  function richState(): Replica {
    const r = initialized();
    ok(r.conf('addVoter', ROOT));
    ok(r.conf('addLearner', 'QmPending'));
    ok(r.run({
      type: 'node.register',
      node: registration(ROOT, 'root', {
        labels: { zone: 'eu-1', '9': 'nine', 'a/b': 'ünïcödé 🚀', empty: '' },
        resources: { cpuCores: 2.5, memoryBytes: 2 ** 40, diskBytes: 0, arch: 'arm64', gpus: [{ model: 'NVIDIA A100', memoryBytes: 40 * 2 ** 30 }] },
      }),
    }));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'node.status', id: 'QmA', status: 'down', reason: 'heartbeat lost' }));
    ok(r.run({ type: 'node.register', node: registration('QmB', 'beta') }));
    ok(r.run({ type: 'node.remove', id: 'QmB' }));
    ok(r.run({ type: 'token.add', token: { id: 'adm', hash: HASH_A, role: 'admin', name: 'admin' } }));
    ok(r.run({ type: 'kv.put', key: 'z', value: 'last' }));
    ok(r.run({ type: 'kv.put', key: 'ключ/😀', value: 'line1\nline2\u0000"' }));
    ok(r.run({ type: 'kv.put', key: 'a', value: '' }));
    ok(r.run({ type: 'kv.put', key: 'a', value: 'again' }));
    ok(r.run({ type: 'config.set', voterTarget: 5 }));
    return r;
  }

  it('snapshot → restore gives an equal state and identical bytes', () => {
    const r = richState();
    const bytes = r.state.snapshot();
    const s = ClusterState.restore(bytes);
    expect(s.snapshot()).toEqual(bytes);
    expect(s.appliedIndex).toBe(r.state.appliedIndex);
    expect(s.config()).toEqual(r.state.config());
    expect(s.nodes()).toEqual(r.state.nodes());
    expect(s.tokens()).toEqual(r.state.tokens());
    expect(s.kvList('', 100)).toEqual(r.state.kvList('', 100));
    expect(s.sizeBytes).toBe(r.state.sizeBytes);
    // The restored copy goes on exactly like the original.
    const a = r;
    const b = new Replica(s);
    const rng = seededRng(99);
    for (let i = 0; i < 200; i++) {
      const c = encodeCommand(randomCommand(rng));
      expect(b.run(c)).toEqual(a.run(c));
    }
    expect(b.state.snapshot()).toEqual(a.state.snapshot());
  });

  it('snapshot bytes do not depend on the order things were inserted', () => {
    const a = initialized();
    const b = initialized();
    ok(a.run({ type: 'kv.put', key: 'x', value: '1' }));
    ok(a.run({ type: 'kv.put', key: 'y', value: '2' }));
    ok(b.run({ type: 'kv.put', key: 'y', value: '2' }));
    ok(b.run({ type: 'kv.put', key: 'x', value: '1' }));
    // Different histories (indices differ), so compare a state rebuilt from each snapshot.
    expect(ClusterState.restore(a.state.snapshot()).snapshot()).toEqual(a.state.snapshot());
    expect(a.state.kvList('', 10).map((k) => k.key)).toEqual(b.state.kvList('', 10).map((k) => k.key));
    const la = initialized();
    const lb = initialized();
    ok(la.run({ type: 'node.register', node: registration('QmA', 'alpha', { labels: { b: '1', a: '2', '10': 'x', '2': 'y' } }) }));
    ok(lb.run({ type: 'node.register', node: registration('QmA', 'alpha', { labels: { '2': 'y', a: '2', '10': 'x', b: '1' } }) }));
    expect(la.state.snapshot()).toEqual(lb.state.snapshot());
  });

  it('two replicas applying the same sequence agree on every result and byte', () => {
    for (const seed of [1, 2, 3]) {
      const rng = seededRng(seed);
      const entries: Array<{ data?: Uint8Array; conf?: ['addVoter' | 'addLearner' | 'remove', string] }> = [];
      for (let i = 0; i < 400; i++) {
        const roll = rng.int(20);
        if (roll === 0) entries.push({ conf: [pick(rng, ['addVoter', 'addLearner', 'remove'] as const), pick(rng, ['QmA', 'QmB', 'QmC', ROOT])] });
        else if (roll === 1) entries.push({ data: new Uint8Array(0) });
        else if (roll === 2) entries.push({ data: randomBytes(rng, rng.int(20)) });
        else entries.push({ data: encodeCommand(randomCommand(rng)) });
      }
      const [a, b] = [new ClusterState(), new ClusterState()];
      const results: ApplyResult[][] = [[], []];
      for (const [k, s] of [a, b].entries()) {
        entries.forEach((e, i) => {
          results[k].push(e.conf ? s.applyConfChange(i + 1, { type: e.conf[0], node: e.conf[1] }) : s.apply(i + 1, e.data!));
        });
      }
      expect(results[0]).toEqual(results[1]);
      expect(a.snapshot()).toEqual(b.snapshot());
      expect(results[0].filter((x) => x.ok).length).toBeGreaterThan(50);
      expect(results[0].filter((x) => !x.ok).length).toBeGreaterThan(50);
      // A replica restored from a midway snapshot ends identical too.
      const c = new ClusterState();
      entries.slice(0, 200).forEach((e, i) => (e.conf ? c.applyConfChange(i + 1, { type: e.conf[0], node: e.conf[1] }) : c.apply(i + 1, e.data!)));
      const d = ClusterState.restore(c.snapshot());
      entries.slice(200).forEach((e, j) => {
        const i = j + 200;
        const res = e.conf ? d.applyConfChange(i + 1, { type: e.conf[0], node: e.conf[1] }) : d.apply(i + 1, e.data!);
        expect(res).toEqual(results[0][i]);
      });
      expect(d.snapshot()).toEqual(a.snapshot());
    }
  });
});

describe('ClusterState rows (the state on disk, issue 12)', () => {
  it('rows written as they change describe the same state as a snapshot, at every point', () => {
    for (const seed of [1, 2, 3, 4, 5]) {
      const rng = seededRng(seed);
      const s = new ClusterState();
      const disk = new Map<string, RowValue>();
      let checked = 0;
      for (let i = 1; i <= 400; i++) {
        const roll = rng.int(20);
        if (roll === 0) s.applyConfChange(i, { type: pick(rng, ['addVoter', 'addLearner', 'remove'] as const), node: pick(rng, ['QmA', 'QmB', 'QmC', 'QmD', ROOT]) });
        else if (roll === 1) s.apply(i, randomBytes(rng, rng.int(20)));
        else s.apply(i, encodeCommand(randomCommand(rng)));
        if (rng.int(5) !== 0) continue;
        for (const [row, v] of s.takeChangedRows()) v === null ? disk.delete(row) : disk.set(row, v);
        const loaded = ClusterState.fromRows(s.appliedIndex, disk);
        expect(loaded.snapshot()).toEqual(s.snapshot());
        expect([...loaded.rows()]).toEqual([...s.rows()]);
        checked++;
      }
      expect(checked).toBeGreaterThan(40);
      expect(s.kvCount() + s.nodes().length + s.tokens().length).toBeGreaterThan(3);
    }
  });
});

describe('ClusterState.restore', () => {
  function expectBadSnapshot(bytes: Uint8Array, pattern?: RegExp): void {
    let caught: unknown;
    try {
      ClusterState.restore(bytes);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(StateRestoreError);
    expect((caught as StateRestoreError).code).toBe('BAD_SNAPSHOT');
    if (pattern) expect((caught as StateRestoreError).message).toMatch(pattern);
  }

  function goodDoc(): Record<string, unknown> {
    const r = initialized();
    ok(r.run({ type: 'node.register', node: registration(ROOT, 'root') }));
    ok(r.run({ type: 'node.register', node: registration('QmA', 'alpha') }));
    ok(r.run({ type: 'token.add', token: { id: 't', hash: HASH_A, role: 'admin', name: '' } }));
    ok(r.run({ type: 'kv.put', key: 'k', value: 'v' }));
    return JSON.parse(new TextDecoder().decode(r.state.snapshot())) as Record<string, unknown>;
  }

  it('restores a fresh state', () => {
    const s = ClusterState.restore(new ClusterState().snapshot());
    expect(s.appliedIndex).toBe(0);
    expect(s.config().voterTarget).toBe(3);
  });

  it('rejects garbage bytes', () => {
    expectBadSnapshot(new Uint8Array(0));
    expectBadSnapshot(utf8.encode('null'));
    expectBadSnapshot(utf8.encode('[]'));
    expectBadSnapshot(new Uint8Array([0xff, 0xfe]));
    const good = new ClusterState().snapshot();
    expectBadSnapshot(good.slice(0, good.length - 1));
    const rng = seededRng(42);
    for (let i = 0; i < 500; i++) expectBadSnapshot(randomBytes(rng, rng.int(200)));
  });

  it('rejects a well-formed document that breaks the rules', () => {
    const mutations: Array<[(d: Record<string, any>) => void, RegExp]> = [
      [(d) => { d.format = 'other'; }, /format/],
      [(d) => { d.version = 2; }, /version/],
      [(d) => { d.extra = 1; }, /extra: unknown field/],
      [(d) => { d.appliedIndex = -1; }, /appliedIndex/],
      [(d) => { d.config.voterTarget = 4; }, /config\.voterTarget/],
      [(d) => { d.nodes.push({ ...d.nodes[0] }); }, /nodes\[2\]\.id: duplicate/],
      [(d) => { d.nodes[1].name = d.nodes[0].name; }, /duplicate name/],
      [(d) => { d.nodes[0].updatedIndex = d.appliedIndex + 1; }, /nodes\[0\]\.updatedIndex/],
      [(d) => { d.nodes[0].joinedIndex = 0; }, /nodes\[0\]\.joinedIndex/],
      [(d) => { d.nodes[0].role = 'leader'; }, /nodes\[0\]\.role/],
      [(d) => { d.nodes[0].addrs = [1]; }, /nodes\[0\]\.addrs\[0\]/],
      [(d) => { d.nodes.find((n: { id: string }) => n.id === 'QmA').root = true; }, /root/],
      [(d) => { d.pendingRoles.push({ id: 'QmA', role: 'voter' }); }, /pendingRoles\[0\]\.id: duplicate/],
      [(d) => { d.tokens.push({ ...d.tokens[0], id: 'u' }); }, /tokens\[1\]\.hash: duplicate/],
      [(d) => { d.tokens[0].hash = 'xyz'; }, /tokens\[0\]\.hash/],
      [(d) => { d.kv.push({ ...d.kv[0] }); }, /kv\[1\]\.key: duplicate/],
      [(d) => { d.kv[0].version = 0; }, /kv\[0\]\.version/],
      [(d) => { d.kv[0].modIndex = d.kv[0].createIndex - 1; }, /kv\[0\]\.modIndex/],
      [(d) => { delete d.kv; }, /kv: missing/],
    ];
    for (const [mutate, pattern] of mutations) {
      const d = goodDoc();
      mutate(d);
      expectBadSnapshot(rawJson(d), pattern);
    }
    // The untouched document restores, in any record order.
    const d = goodDoc();
    (d.nodes as unknown[]).reverse();
    const s = ClusterState.restore(rawJson(d));
    expect(s.nodes().map((n) => n.id)).toEqual(['QmA', ROOT]);
  });

  it('either restores or throws StateRestoreError on mutated snapshots', () => {
    const rng = seededRng(1234);
    const good = ClusterState.restore(rawJson(goodDoc())).snapshot();
    let restored = 0;
    for (let i = 0; i < 1000; i++) {
      const bytes = good.slice();
      for (let k = 1 + rng.int(2); k > 0; k--) bytes[rng.int(bytes.length)] = pick(rng, [0x30, 0x31, 0x39, 0x22, 0x61, 0x2c, rng.int(256)]);
      try {
        const s = ClusterState.restore(bytes);
        expect(ClusterState.restore(s.snapshot()).snapshot()).toEqual(s.snapshot());
        restored++;
      } catch (err) {
        expect(err).toBeInstanceOf(StateRestoreError);
      }
    }
    expect(restored).toBeGreaterThan(0);
  });
});
