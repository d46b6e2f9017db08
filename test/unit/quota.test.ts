// The state quota (protocol/cluster/quota.ts) and its replicated setting (cluster.init
// maxStateBytes): estimates never fall short of what the state machine counts, admin writes
// stop at the quota, the cluster's own writes have a reserve, and space-freeing commands pass.
import { describe, expect, it } from 'vitest';
import { ClusterState, DEFAULT_MAX_STATE_BYTES, MAX_STATE_BYTES, MAX_MAX_STATE_BYTES, MIN_MAX_STATE_BYTES, STATE_RESERVE_BYTES, type Command } from '../../protocol/cluster/state.js';
import { growthBytes, limitBytes, quotaBytes, quotaRefusal } from '../../protocol/cluster/quota.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { SCHEMA_QUOTA_SET } from '../../protocol/cluster/schema.js';

const enc = (c: Command) => new TextEncoder().encode(JSON.stringify(c));
const INIT: Command = { type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: 'n1', ephemeralRoot: false };

describe('growth estimates', () => {
  it('are never below what the state machine counts, for puts, txns, tokens and registrations', () => {
    const s = new ClusterState();
    let index = 1;
    const cmds: Command[] = [
      { type: 'kv.put', key: 'a', value: 'x'.repeat(100) },
      { type: 'kv.put', key: 'a', value: 'y'.repeat(300) },
      { type: 'kv.put', key: 'a', value: 'z' },
      { type: 'kv.txn', compares: [], ops: [{ op: 'put', key: 'b', value: 'bb' }, { op: 'delete', key: 'a' }] },
      { type: 'token.add', token: { id: 't1', hash: 'a'.repeat(64), role: 'admin', name: 'ops' } },
      { type: 'node.register', node: { id: 'n1', name: 'one', addrs: ['/ip4/127.0.0.1/tcp/1'], apiUrl: 'http://127.0.0.1:1', resources: { cpuCores: 4, memoryBytes: 1, diskBytes: 1, arch: 'x64', gpus: [] }, labels: { zone: 'a' } } },
      { type: 'node.status', id: 'n1', status: 'down', reason: 'no heartbeat for 9s' },
      { type: 'kv.delete', key: 'b' },
      { type: 'token.revoke', id: 't1' },
    ];
    for (const c of cmds) {
      const estimate = growthBytes(c, s);
      const before = s.sizeBytes;
      expect(s.apply(index++, enc(c)).ok, c.type).toBe(true);
      expect(estimate, c.type).toBeGreaterThanOrEqual(s.sizeBytes - before);
      // and close to it (within the width of two indexes)
      expect(estimate - (s.sizeBytes - before), c.type).toBeLessThan(64);
    }
  });

  it('is negative for deletes and revokes, zero for a delete of nothing', () => {
    const s = new ClusterState();
    s.apply(1, enc({ type: 'kv.put', key: 'k', value: 'v' }));
    expect(growthBytes({ type: 'kv.delete', key: 'k' }, s)).toBeLessThan(0);
    expect(growthBytes({ type: 'kv.delete', key: 'none' }, s)).toBe(0);
    expect(growthBytes({ type: 'token.revoke', id: 'none' }, s)).toBe(0);
  });
});

describe('admission', () => {
  const base = { stateBytes: 1000, pendingBytes: 0, quotaBytes: 2000 };

  it('admits an admin write up to the quota and refuses it past, counting proposals not applied yet', () => {
    expect(quotaRefusal({ ...base, principal: 'admin', growthBytes: 1000 })).toBeUndefined();
    const r = quotaRefusal({ ...base, principal: 'admin', growthBytes: 1001 });
    expect(r?.code).toBe('QUOTA_EXCEEDED');
    expect(r?.message).toMatch(/quota of 2000 bytes.*deletes are always accepted/);
    expect(quotaRefusal({ ...base, pendingBytes: 600, principal: 'admin', growthBytes: 500 })?.code).toBe('QUOTA_EXCEEDED');
  });

  it('gives members and the leader duties a reserve above the quota, never past the hard limit', () => {
    expect(quotaRefusal({ ...base, principal: 'member', growthBytes: 1001 + STATE_RESERVE_BYTES - 2 })).toBeUndefined();
    expect(quotaRefusal({ ...base, principal: 'leader', growthBytes: 1001 + STATE_RESERVE_BYTES })?.code).toBe('QUOTA_EXCEEDED');
    expect(limitBytes('leader', DEFAULT_MAX_STATE_BYTES)).toBe(DEFAULT_MAX_STATE_BYTES + STATE_RESERVE_BYTES);
    expect(limitBytes('leader', MAX_MAX_STATE_BYTES)).toBe(MAX_STATE_BYTES);
    expect(limitBytes('admin', DEFAULT_MAX_STATE_BYTES)).toBe(DEFAULT_MAX_STATE_BYTES);
  });

  it('always admits what does not grow the state, even far past the quota', () => {
    expect(quotaRefusal({ stateBytes: 10 * MAX_STATE_BYTES, pendingBytes: 0, quotaBytes: 2000, principal: 'admin', growthBytes: -50 })).toBeUndefined();
    expect(quotaRefusal({ stateBytes: 10 * MAX_STATE_BYTES, pendingBytes: 0, quotaBytes: 2000, principal: 'admin', growthBytes: 0 })).toBeUndefined();
  });
});

describe('the replicated quota setting', () => {
  it('cluster.init sets it; absent means the default; it survives a snapshot', () => {
    const plain = new ClusterState();
    plain.apply(1, enc(INIT));
    expect(quotaBytes(plain.config())).toBe(DEFAULT_MAX_STATE_BYTES);
    expect(plain.config()).not.toHaveProperty('maxStateBytes');
    const s = new ClusterState();
    expect(s.apply(1, enc({ ...INIT, maxStateBytes: 200_000 } as Command)).ok).toBe(true);
    expect(quotaBytes(s.config())).toBe(200_000);
    expect(quotaBytes(ClusterState.restore(s.snapshot()).config())).toBe(200_000);
  });

  it('config.set changes it on every replica (JSON and protobuf entries), keeps it when absent, and refuses one out of range', () => {
    for (const encode of [enc, encodeCommand]) {
      const s = new ClusterState();
      expect(s.apply(1, enc({ ...INIT, maxStateBytes: 200_000 } as Command)).ok).toBe(true);
      expect(s.apply(2, encode({ type: 'config.set', voterTarget: 3, maxStateBytes: 300_000 })).ok).toBe(true);
      expect(quotaBytes(s.config())).toBe(300_000);
      // Without the field only the voter target changes.
      expect(s.apply(3, encode({ type: 'config.set', voterTarget: 5 })).ok).toBe(true);
      expect(s.config()).toMatchObject({ voterTarget: 5, maxStateBytes: 300_000, minSchema: SCHEMA_QUOTA_SET });
      for (const bad of [MIN_MAX_STATE_BYTES - 1, MAX_MAX_STATE_BYTES + 1]) {
        const r = s.apply(s.appliedIndex + 1, enc({ type: 'config.set', voterTarget: 3, maxStateBytes: bad } as Command));
        expect(r.ok).toBe(false);
        expect(r.ok ? '' : r.error.code).toBe('INVALID_ARGUMENT');
      }
      expect(s.config()).toMatchObject({ voterTarget: 5, maxStateBytes: 300_000 });
      expect(quotaBytes(ClusterState.restore(s.snapshot()).config())).toBe(300_000);
      expect(quotaBytes(ClusterState.fromRows(s.appliedIndex, [...s.rows()]).config())).toBe(300_000);
      expect(ClusterState.fromRows(s.appliedIndex, [...s.rows()]).config().minSchema).toBe(SCHEMA_QUOTA_SET);
      expect(ClusterState.restore(s.snapshot()).config().minSchema).toBe(SCHEMA_QUOTA_SET);
    }
    // A voter target alone raises no floor; a malformed field refuses the entry (no replica silently drops it).
    const s = new ClusterState();
    s.apply(1, enc(INIT));
    expect(s.apply(2, enc({ type: 'config.set', voterTarget: 3 })).ok).toBe(true);
    expect(s.config()).not.toHaveProperty('minSchema');
    const r = s.apply(3, new TextEncoder().encode(JSON.stringify({ type: 'config.set', voterTarget: 3, maxStateBytes: '4GiB' })));
    expect(r.ok ? '' : r.error.code).toBe('INVALID_COMMAND');
    expect(quotaBytes(s.config())).toBe(DEFAULT_MAX_STATE_BYTES);
  });

  it('refuses a quota out of range', () => {
    for (const bad of [MIN_MAX_STATE_BYTES - 1, MAX_MAX_STATE_BYTES + 1]) {
      const s = new ClusterState();
      const r = s.apply(1, enc({ ...INIT, maxStateBytes: bad } as Command));
      expect(r.ok).toBe(false);
      expect(s.config().clusterId).toBe('');
    }
  });
});
