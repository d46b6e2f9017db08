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

  it('sizes match the UTF-8 bytes of the JSON text for random strings (escapes, surrogates, every width)', async () => {
    const { kvRecordSizeBytes } = await import('../../protocol/cluster/state.js');
    const { jsonStringBytes, utf8SizeBytes } = await import('../../protocol/cluster/commands.js');
    const enc = new TextEncoder();
    // code units of every kind: ASCII, quote, backslash, the short and the \u escapes, 2- and 3-byte
    // characters, high and low surrogates (paired by chance or lone), U+2028, DEL
    const units = [0x41, 0x7a, 0x20, 0x22, 0x5c, 0x00, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x1f, 0x0b, 0x7f, 0xe9, 0x7ff, 0x800, 0x2028, 0xfeff, 0xffff, 0xd800, 0xdbff, 0xdc00, 0xdfff, 0xd83d, 0xde00];
    let seed = 12345;
    const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) % n);
    for (let t = 0; t < 3000; t++) {
      const len = rnd(40);
      let s = '';
      for (let i = 0; i < len; i++) s += String.fromCharCode(units[rnd(units.length)]);
      expect(utf8SizeBytes(s), JSON.stringify(s)).toBe(enc.encode(s).length);
      expect(jsonStringBytes(s), JSON.stringify(s)).toBe(enc.encode(JSON.stringify(s)).length);
      const r = { key: 'k', value: s, version: rnd(1e9) + 1, createIndex: rnd(1000) + 1, modIndex: Number.MAX_SAFE_INTEGER - rnd(10) };
      const canonical = `{"createIndex":${r.createIndex},"key":"k","modIndex":${r.modIndex},"value":${JSON.stringify(s)},"version":${r.version}}`;
      expect(kvRecordSizeBytes(r)).toBe(enc.encode(canonical).length + 1);
    }
    // a large value (the fast path: nothing to escape) and one that must be walked
    const big = 'abc+/='.repeat(200_000);
    expect(jsonStringBytes(big)).toBe(big.length + 2);
    expect(jsonStringBytes(`${big}"\u0001\ud800`)).toBe(enc.encode(JSON.stringify(`${big}"\u0001\ud800`)).length);
  });
});
