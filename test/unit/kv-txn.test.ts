import { describe, expect, it } from 'vitest';
import { ClusterState, encodeCommand } from '../../protocol/cluster/state.js';

function apply(s: ClusterState, cmd: object) {
  return s.apply(s.appliedIndex + 1, new TextEncoder().encode(JSON.stringify(cmd)));
}

describe('kv.txn (optimistic concurrency for plans)', () => {
  it('applies every op when all compares hold', () => {
    const s = new ClusterState();
    apply(s, { type: 'kv.put', key: 'a', value: '1' });
    const r = s.apply(s.appliedIndex + 1, encodeCommand({ type: 'kv.txn', compares: [{ key: 'a', version: 1 }, { key: 'b', version: 0 }], ops: [{ op: 'put', key: 'b', value: '2' }, { op: 'delete', key: 'a' }] }));
    expect(r.ok).toBe(true);
    expect(s.kvGet('a')).toBeUndefined();
    expect(s.kvGet('b')?.value).toBe('2');
  });

  it('applies nothing when one compare fails (a plan built on stale state)', () => {
    const s = new ClusterState();
    apply(s, { type: 'kv.put', key: 'a', value: '1' });
    apply(s, { type: 'kv.put', key: 'a', value: '2' });
    const before = s.snapshot();
    const r = apply(s, { type: 'kv.txn', compares: [{ key: 'a', version: 1 }], ops: [{ op: 'put', key: 'c', value: 'x' }] });
    expect(r).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    expect(s.kvGet('c')).toBeUndefined();
    const after = s.snapshot();
    // Only appliedIndex moved.
    expect(JSON.parse(new TextDecoder().decode(after)).kv).toEqual(JSON.parse(new TextDecoder().decode(before)).kv);
  });

  it('refuses malformed transactions naming the field', () => {
    const s = new ClusterState();
    expect(apply(s, { type: 'kv.txn', compares: [], ops: [{ op: 'rename', key: 'a' }] })).toMatchObject({ ok: false, error: { code: 'INVALID_COMMAND', message: expect.stringContaining('ops[0].op') } });
    expect(apply(s, { type: 'kv.txn', compares: [], ops: [{ op: 'put', key: 'a', value: '1' }, { op: 'delete', key: 'a' }] })).toMatchObject({ ok: false, error: { message: expect.stringContaining('twice') } });
  });

  it('compares on value (etcd style): the key must exist with exactly that value', () => {
    const s = new ClusterState();
    expect(apply(s, { type: 'kv.txn', compares: [{ key: 'a', value: 'x' }], ops: [{ op: 'put', key: 'a', value: 'y' }] })).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    apply(s, { type: 'kv.put', key: 'a', value: 'x' });
    expect(apply(s, { type: 'kv.txn', compares: [{ key: 'a', value: 'z' }], ops: [{ op: 'put', key: 'a', value: 'y' }] })).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    expect(s.kvGet('a')?.value).toBe('x');
    expect(apply(s, { type: 'kv.txn', compares: [{ key: 'a', value: 'x' }], ops: [{ op: 'put', key: 'a', value: 'y' }] }).ok).toBe(true);
    expect(s.kvGet('a')).toMatchObject({ value: 'y', version: 2 });
    expect(apply(s, { type: 'kv.txn', compares: [{ key: 'a', value: 'y', version: 2 }], ops: [] })).toMatchObject({ ok: false, error: { message: expect.stringContaining('exactly one of version and value') } });
    expect(apply(s, { type: 'kv.txn', compares: [{ key: 'a' }], ops: [] })).toMatchObject({ ok: false, error: { code: 'INVALID_COMMAND' } });
  });
});

describe('kv record sizes', () => {
  it('the fast size of a kv record equals the size of its canonical JSON', async () => {
    const { kvRecordSizeBytes, recordSizeBytes } = await import('../../protocol/cluster/state.js');
    const values = ['', 'plain', 'quote " and \\ backslash', 'ünïcödé ✓ 😀', '\u0000\u001f control', '\ud800 lone surrogate', 'x'.repeat(5000), JSON.stringify({ a: [1, 2, { b: 'c' }] })];
    for (const v of values) {
      const r = { key: `k/${v.slice(0, 10)}`, value: v, version: 12, createIndex: 3, modIndex: 99_999 };
      expect(kvRecordSizeBytes(r), JSON.stringify(v.slice(0, 20))).toBe(recordSizeBytes(r));
    }
  });
});
