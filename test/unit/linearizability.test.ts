import { describe, expect, it } from 'vitest';
import {
  checkLinearizable,
  InvalidHistoryError,
  type HistoryOp,
  type KvOp,
  type KvResult,
} from '../../sim/linearizability.js';
import { seededRng } from '../../protocol/rng.js';

// ---------------------------------------------------------------------------------------
// Helpers

let nextId = 1;
function op(
  clientId: number,
  kvop: KvOp,
  callTime: number,
  returnTime: number,
  result: KvResult | null,
): HistoryOp {
  return { id: nextId++, clientId, op: kvop, callTime, returnTime: result === null ? Infinity : returnTime, result };
}
const put = (c: number, key: string, value: string, t0: number, t1: number, acked = true): HistoryOp =>
  op(c, { kind: 'put', key, value }, t0, t1, acked ? { kind: 'put-ok' } : null);
const get = (c: number, key: string, value: string | null, t0: number, t1: number): HistoryOp =>
  op(c, { kind: 'get', key }, t0, t1, { kind: 'get-ok', value });
const getUnknown = (c: number, key: string, t0: number): HistoryOp => op(c, { kind: 'get', key }, t0, Infinity, null);
const cas = (
  c: number,
  key: string,
  expected: string | null,
  value: string,
  t0: number,
  t1: number,
  swapped: boolean | null,
): HistoryOp =>
  op(c, { kind: 'cas', key, expected, value }, t0, t1, swapped === null ? null : { kind: 'cas-ok', swapped });

/** Seeded PRNG (the project's mulberry32): every run replays exactly, never Math.random. */
const mulberry32 = (seed: number): (() => number) => seededRng(seed).next;

// ---------------------------------------------------------------------------------------
// Hand-written histories

describe('checkLinearizable: hand-written histories', () => {
  it('accepts the empty history', () => {
    expect(checkLinearizable([])).toMatchObject({ ok: true, statesExplored: 0 });
  });

  it('accepts a sequential history', () => {
    const h = [
      get(1, 'a', null, 0, 1),
      put(1, 'a', 'x', 2, 3),
      get(2, 'a', 'x', 4, 5),
      put(2, 'a', 'y', 6, 7),
      get(1, 'a', 'y', 8, 9),
    ];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(true);
    expect(r.timedOut).toBeUndefined();
  });

  it('accepts a get concurrent with a put, whichever value it saw', () => {
    const base = () => [put(1, 'a', 'x', 0, 1), put(1, 'a', 'y', 10, 20)];
    expect(checkLinearizable([...base(), get(2, 'a', 'x', 12, 18)]).ok).toBe(true);
    expect(checkLinearizable([...base(), get(2, 'a', 'y', 12, 18)]).ok).toBe(true);
    // Two concurrent reads may even disagree while the write is in flight, if ordered.
    expect(checkLinearizable([...base(), get(2, 'a', 'x', 11, 13), get(3, 'a', 'y', 14, 16)]).ok).toBe(true);
  });

  it('treats touching intervals as concurrent', () => {
    expect(checkLinearizable([put(1, 'a', 'x', 0, 5), get(2, 'a', null, 5, 6)]).ok).toBe(true);
  });

  it('rejects a stale read after a completed write', () => {
    const h = [put(1, 'a', 'x', 0, 1), put(1, 'a', 'y', 2, 3), get(2, 'a', 'x', 4, 5)];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    expect(r.key).toBe('a');
    expect(r.explanation).toContain('get() -> "x"');
    expect(r.explanation).toContain('"y"');
  });

  it('rejects a read of a value never written', () => {
    const h = [put(1, 'a', 'x', 0, 1), get(2, 'a', 'ghost', 2, 3)];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    expect(r.key).toBe('a');
    expect(r.explanation).toContain('no op ever writes "ghost"');
  });

  it('rejects a read of a value before anything was written', () => {
    const h = [get(2, 'a', 'x', 0, 1), put(1, 'a', 'x', 2, 3)];
    expect(checkLinearizable(h).ok).toBe(false);
  });

  it('rejects a lost acknowledged write', () => {
    const h = [
      put(1, 'a', 'old', 0, 1),
      put(1, 'a', 'new', 2, 4), // acked
      get(2, 'a', 'old', 5, 6), // later, not overlapping
    ];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    expect(r.key).toBe('a');
  });

  it('rejects reads that go backwards in time', () => {
    // Both reads overlap the write, but the second starts after the first returned.
    const h = [put(1, 'a', 'x', 0, 1), put(1, 'a', 'y', 2, 20), get(2, 'a', 'y', 3, 4), get(3, 'a', 'x', 5, 6)];
    expect(checkLinearizable(h).ok).toBe(false);
  });

  it('accepts an unknown-outcome put that is later observed', () => {
    const h = [put(1, 'a', 'x', 0, 1), put(2, 'a', 'y', 2, 0, false), get(3, 'a', 'y', 50, 51)];
    expect(checkLinearizable(h).ok).toBe(true);
  });

  it('accepts an unknown-outcome put that is never observed', () => {
    const h = [
      put(1, 'a', 'x', 0, 1),
      put(2, 'a', 'y', 2, 0, false),
      get(3, 'a', 'x', 50, 51),
      get(3, 'a', 'x', 52, 53),
    ];
    expect(checkLinearizable(h).ok).toBe(true);
  });

  it('accepts an unknown-outcome put observed and then overwritten', () => {
    const h = [
      put(2, 'a', 'y', 0, 0, false),
      get(3, 'a', 'y', 10, 11),
      put(1, 'a', 'z', 12, 13),
      get(3, 'a', 'z', 14, 15),
    ];
    expect(checkLinearizable(h).ok).toBe(true);
  });

  it('rejects an unknown-outcome put observed before it was sent', () => {
    const h = [get(3, 'a', 'y', 0, 1), put(2, 'a', 'y', 5, 0, false)];
    expect(checkLinearizable(h).ok).toBe(false);
  });

  it('rejects an unknown-outcome put observed, then the old value again', () => {
    // Once the write took effect it cannot be undone: y then x is impossible.
    const h = [
      put(1, 'a', 'x', 0, 1),
      put(2, 'a', 'y', 2, 0, false),
      get(3, 'a', 'y', 10, 11),
      get(3, 'a', 'x', 12, 13),
    ];
    expect(checkLinearizable(h).ok).toBe(false);
  });

  it('uses the right one of two identical unknown-outcome puts', () => {
    // Only the put called at 0 can explain the read at [5, 6]; its twin is called at 20.
    const h = [put(1, 'a', 'y', 0, 0, false), put(2, 'a', 'y', 20, 0, false), get(3, 'a', 'y', 5, 6)];
    expect(checkLinearizable(h).ok).toBe(true);
    const late = [put(2, 'a', 'y', 20, 0, false), put(1, 'a', 'y', 30, 0, false), get(3, 'a', 'y', 5, 6)];
    expect(checkLinearizable(late).ok).toBe(false);
  });

  it('drops gets with an unknown outcome', () => {
    const h = [put(1, 'a', 'x', 0, 1), getUnknown(2, 'a', 2), get(3, 'a', 'x', 3, 4)];
    expect(checkLinearizable(h).ok).toBe(true);
  });

  describe('cas', () => {
    it('accepts successful and failed cas that match the register', () => {
      const h = [
        cas(1, 'a', null, 'x', 0, 1, true), // absent -> x
        cas(1, 'a', null, 'y', 2, 3, false), // not absent any more
        cas(2, 'a', 'x', 'z', 4, 5, true),
        get(2, 'a', 'z', 6, 7),
        cas(1, 'a', 'x', 'w', 8, 9, false),
        get(1, 'a', 'z', 10, 11),
      ];
      expect(checkLinearizable(h).ok).toBe(true);
    });

    it('rejects a successful cas whose expected value was not current', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'q', 'z', 2, 3, true)];
      expect(checkLinearizable(h).ok).toBe(false);
    });

    it('rejects a failed cas whose expected value was current', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'z', 2, 3, false)];
      expect(checkLinearizable(h).ok).toBe(false);
    });

    it('rejects a read that ignores a successful cas', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'z', 2, 3, true), get(3, 'a', 'x', 4, 5)];
      expect(checkLinearizable(h).ok).toBe(false);
    });

    it('orders two concurrent cas so that only one can win', () => {
      const ok = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'p', 2, 10, true), cas(3, 'a', 'x', 'q', 2, 10, false)];
      expect(checkLinearizable(ok).ok).toBe(true);
      const bothWin = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'p', 2, 10, true), cas(3, 'a', 'x', 'q', 2, 10, true)];
      expect(checkLinearizable(bothWin).ok).toBe(false);
    });

    it('lets an unknown-outcome cas have swapped', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'y', 2, 0, null), get(3, 'a', 'y', 10, 11)];
      expect(checkLinearizable(h).ok).toBe(true);
    });

    it('lets an unknown-outcome cas have not swapped', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'x', 'y', 2, 0, null), get(3, 'a', 'x', 10, 11)];
      expect(checkLinearizable(h).ok).toBe(true);
    });

    it('does not let an unknown-outcome cas swap from the wrong value', () => {
      const h = [put(1, 'a', 'x', 0, 1), cas(2, 'a', 'other', 'y', 2, 0, null), get(3, 'a', 'y', 10, 11)];
      expect(checkLinearizable(h).ok).toBe(false);
    });

    it('lets an unknown-outcome put explain a failed cas', () => {
      // Only if the timed-out put of y took effect can the cas on x have failed.
      const h = [put(1, 'a', 'x', 0, 1), put(2, 'a', 'y', 2, 0, false), cas(3, 'a', 'x', 'z', 5, 6, false)];
      expect(checkLinearizable(h).ok).toBe(true);
      const noPut = [put(1, 'a', 'x', 0, 1), cas(3, 'a', 'x', 'z', 5, 6, false)];
      expect(checkLinearizable(noPut).ok).toBe(false);
    });

    it('chains unknown-outcome put and cas', () => {
      const h = [
        put(1, 'a', 'x', 0, 1),
        put(2, 'a', 'y', 2, 0, false),
        cas(3, 'a', 'y', 'z', 3, 0, null),
        get(4, 'a', 'z', 10, 11),
      ];
      expect(checkLinearizable(h).ok).toBe(true);
    });
  });

  it('checks keys independently and names the failing key', () => {
    const h = [
      put(1, 'a', 'x', 0, 1),
      put(2, 'b', 'x', 0, 1),
      put(1, 'a', 'y', 2, 3),
      put(2, 'b', 'y', 2, 3),
      get(3, 'a', 'y', 4, 5),
      get(3, 'b', 'x', 4, 5), // stale on b only
      get(4, 'c', null, 4, 5),
    ];
    const r = checkLinearizable(h);
    expect(r.ok).toBe(false);
    expect(r.key).toBe('b');
    expect(r.explanation).toContain('key "b"');
    // The same value on a different key does not make a read possible.
    expect(checkLinearizable([put(1, 'a', 'v', 0, 1), get(2, 'b', 'v', 2, 3)])).toMatchObject({ ok: false, key: 'b' });
  });

  it('refuses malformed histories', () => {
    const bad = put(1, 'a', 'x', 0, 1);
    expect(() => checkLinearizable([bad, { ...bad }])).toThrow(InvalidHistoryError);
    expect(() => checkLinearizable([{ ...put(1, 'a', 'x', 5, 1) }])).toThrow(/before callTime/);
    expect(() =>
      checkLinearizable([{ ...put(1, 'a', 'x', 0, 1), result: { kind: 'get-ok', value: 'x' } }]),
    ).toThrow(/cannot have a get-ok result/);
  });

  it('reports exceeding the search bound as a timeout, never a violation', () => {
    // Many concurrent writes and a final impossible read: proving the violation
    // needs far more than 5 states.
    const h: HistoryOp[] = [];
    for (let c = 0; c < 8; c++) h.push(put(c, 'a', `v${c}`, 0, 100));
    h.push(get(9, 'a', 'v0', 101, 102), get(9, 'a', 'v1', 103, 104), get(9, 'a', 'v0', 105, 106));
    const full = checkLinearizable(h);
    expect(full.ok).toBe(false);
    expect(full.statesExplored).toBeGreaterThan(5);
    const bounded = checkLinearizable(h, { maxStatesPerKey: 5 });
    expect(bounded).toMatchObject({ ok: true, timedOut: true, timedOutKeys: ['a'] });
    expect(bounded.key).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------
// Randomized histories from a simulated register

interface GenOptions {
  ops: number;
  keys: number;
  clients: number;
  unknownRate: number;
}

interface Generated {
  history: HistoryOp[];
}

/**
 * Runs a real register: every op takes effect atomically at a random point inside its
 * interval (or, for some timed-out ops, never), so the history is linearizable by
 * construction. Clients issue one op at a time; a timed-out op frees the client at its
 * timeout but its returnTime is Infinity.
 */
function generate(seed: number, o: GenOptions): Generated {
  const rnd = mulberry32(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const freeAt = new Array<number>(o.clients).fill(0);
  type Pending = { h: HistoryOp; point: number; applies: boolean };
  const pending: Pending[] = [];
  const recent: string[] = [];
  for (let n = 0; n < o.ops; n++) {
    const clientId = int(o.clients);
    const key = `k${int(o.keys)}`;
    const callTime = freeAt[clientId] + int(4);
    const duration = 1 + int(12);
    const end = callTime + duration;
    const point = callTime + rnd() * duration;
    const unknown = rnd() < o.unknownRate;
    const value = `s${seed}-v${n}`;
    const r = rnd();
    let kvop: KvOp;
    if (r < 0.4) kvop = { kind: 'put', key, value };
    else if (r < 0.8) kvop = { kind: 'get', key };
    else {
      const expected = recent.length === 0 || rnd() < 0.2 ? null : recent[int(recent.length)];
      kvop = { kind: 'cas', key, expected, value };
    }
    if (kvop.kind !== 'get') recent.push(value);
    if (recent.length > 8) recent.shift();
    const h: HistoryOp = {
      id: 1000 + n,
      clientId,
      op: kvop,
      callTime,
      returnTime: unknown ? Infinity : end,
      result: null,
    };
    // Timed-out ops: half took effect, half never did.
    pending.push({ h, point, applies: !unknown || rnd() < 0.5 });
    freeAt[clientId] = end + (unknown ? 5 : 0);
  }
  // Apply in linearization order and fill in the results the register would give.
  const register = new Map<string, string>();
  const effective = [...pending].sort((x, y) => x.point - y.point);
  for (const p of effective) {
    const { h, applies } = p;
    const cur = register.get(h.op.key) ?? null;
    let result: KvResult;
    if (h.op.kind === 'put') {
      if (applies) register.set(h.op.key, h.op.value);
      result = { kind: 'put-ok' };
    } else if (h.op.kind === 'get') {
      result = { kind: 'get-ok', value: cur };
    } else {
      const swapped = cur === h.op.expected;
      if (applies && swapped) register.set(h.op.key, h.op.value);
      result = { kind: 'cas-ok', swapped };
    }
    if (h.returnTime !== Infinity) h.result = result;
  }
  return { history: pending.map((p) => p.h) };
}

type Mutation = { target: HistoryOp; value: string; why: string };

/** Replace one get's result with a value that it provably cannot have read. */
function impossibleMutation(g: Generated, rnd: () => number, kind: number): Mutation | null {
  const gets = g.history.filter((h) => h.op.kind === 'get' && h.result !== null);
  if (gets.length === 0) return null;
  const target = gets[Math.floor(rnd() * gets.length)];
  if (kind === 0) return { target, value: 'never-written', why: 'never written' };
  // A value whose only writer was called after the get returned: a read from the future.
  const key = target.op.key;
  const future = g.history.filter((h) => h.op.kind !== 'get' && h.op.key === key && h.callTime > target.returnTime);
  if (future.length === 0) return null;
  const w = future[Math.floor(rnd() * future.length)];
  return w.op.kind === 'get' ? null : { target, value: w.op.value, why: `from the future (#${w.id})` };
}

function withResult(history: HistoryOp[], target: HistoryOp, value: string): HistoryOp[] {
  return history.map((h) => (h === target ? { ...h, result: { kind: 'get-ok', value } } : h));
}

describe('checkLinearizable: randomized register histories', () => {
  const small: GenOptions = { ops: 120, keys: 3, clients: 6, unknownRate: 0.05 };

  it('accepts 200 linearizable-by-construction histories', () => {
    let unknownSeen = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const g = generate(seed, small);
      unknownSeen += g.history.filter((h) => h.result === null).length;
      const r = checkLinearizable(g.history);
      expect(r, `seed ${seed}: ${r.explanation ?? ''}`).toMatchObject({ ok: true });
      expect(r.timedOut, `seed ${seed}`).toBeUndefined();
    }
    expect(unknownSeen).toBeGreaterThan(0);
  });

  it('detects every impossible read (never written, or written only later)', () => {
    let tried = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const g = generate(seed, small);
      const rnd = mulberry32(seed ^ 0x5eed);
      for (let kind = 0; kind < 2; kind++) {
        const m = impossibleMutation(g, rnd, kind);
        if (m === null) continue;
        tried++;
        const r = checkLinearizable(withResult(g.history, m.target, m.value));
        expect(r.ok, `seed ${seed}: read ${m.why} not detected`).toBe(false);
        expect(r.key).toBe(m.target.op.key);
        expect(r.timedOut).toBeUndefined();
      }
    }
    expect(tried).toBeGreaterThan(300);
  });

  it('detects stale reads of a value overwritten before the read started', () => {
    // Provably impossible: value v has a single writer W1; a known write W2 on the same
    // key starts after W1 returned and returns before the get starts.
    let tried = 0;
    for (let seed = 1; seed <= 200; seed++) {
      const g = generate(seed, small);
      const known = g.history.filter((h) => h.result !== null);
      const gets = known.filter((h) => h.op.kind === 'get');
      const effectiveWrites = known.filter(
        (h) => h.op.kind === 'put' || (h.result?.kind === 'cas-ok' && h.result.swapped),
      );
      outer: for (const target of gets) {
        for (const w2 of effectiveWrites) {
          if (w2.op.key !== target.op.key || w2.returnTime >= target.callTime) continue;
          for (const w1 of effectiveWrites) {
            if (w1.op.key !== target.op.key || w1.op.kind === 'get' || w1.returnTime >= w2.callTime) continue;
            const r = checkLinearizable(withResult(g.history, target, w1.op.value));
            expect(r.ok, `seed ${seed}: stale read of #${w1.id} after #${w2.id} by #${target.id}`).toBe(false);
            tried++;
            break outer;
          }
        }
      }
    }
    expect(tried).toBeGreaterThan(100);
  });

  it('checks a 2,000-op, 10-key, 10-client history fully', () => {
    const g = generate(424242, { ops: 2000, keys: 10, clients: 10, unknownRate: 0.02 });
    const r = checkLinearizable(g.history);
    expect(r.ok).toBe(true);
    expect(r.timedOut).toBeUndefined();
    const m = impossibleMutation(g, mulberry32(7), 1)!;
    const bad = checkLinearizable(withResult(g.history, m.target, m.value));
    expect(bad).toMatchObject({ ok: false, key: m.target.op.key });
    expect(bad.timedOut).toBeUndefined();
  });
});

// ---------------------------------------------------------------------------------------
// Cross-check against a brute-force search on tiny histories with arbitrary results

/** Tries every order that respects real time; unknown-outcome ops may be left out. */
function bruteForceLinearizable(history: HistoryOp[]): boolean {
  const keys = new Set(history.map((h) => h.op.key));
  for (const key of keys) {
    const ops = history.filter((h) => h.op.key === key && !(h.result === null && h.op.kind === 'get'));
    const placed = new Array<boolean>(ops.length).fill(false);
    const search = (state: string | null, left: number): boolean => {
      if (ops.every((h, j) => placed[j] || h.result === null)) return true;
      if (left === 0) return false;
      for (let j = 0; j < ops.length; j++) {
        if (placed[j]) continue;
        const h = ops[j];
        // h may go next only if no unplaced op returned strictly before h was called.
        if (ops.some((o, k) => !placed[k] && k !== j && o.result !== null && o.returnTime < h.callTime)) continue;
        let ns: string | null;
        if (h.op.kind === 'put') ns = h.op.value;
        else if (h.op.kind === 'get') {
          if (h.result?.kind !== 'get-ok' || h.result.value !== state) continue;
          ns = state;
        } else {
          const match = state === h.op.expected;
          if (h.result?.kind === 'cas-ok' && h.result.swapped !== match) continue;
          ns = match ? h.op.value : state;
        }
        placed[j] = true;
        const found = search(ns, left - 1);
        placed[j] = false;
        if (found) return true;
      }
      return false;
    };
    if (!search(null, ops.length)) return false;
  }
  return true;
}

function tinyRandomHistory(seed: number, values: string[], unknownRate: number): HistoryOp[] {
  const rnd = mulberry32(seed);
  const int = (n: number): number => Math.floor(rnd() * n);
  const val = (): string => values[int(values.length)];
  const valOrNull = (): string | null => (rnd() < 0.25 ? null : val());
  const history: HistoryOp[] = [];
  const n = 2 + int(7);
  for (let k = 0; k < n; k++) {
    const key = rnd() < 0.85 ? 'a' : 'b';
    const callTime = int(10);
    const returnTime = callTime + int(6);
    const unknown = rnd() < unknownRate;
    const r = rnd();
    let kvop: KvOp;
    let result: KvResult;
    if (r < 0.35) {
      kvop = { kind: 'put', key, value: val() };
      result = { kind: 'put-ok' };
    } else if (r < 0.7) {
      kvop = { kind: 'get', key };
      result = { kind: 'get-ok', value: valOrNull() };
    } else {
      kvop = { kind: 'cas', key, expected: valOrNull(), value: val() };
      result = { kind: 'cas-ok', swapped: rnd() < 0.5 };
    }
    history.push({
      id: k,
      clientId: k,
      op: kvop,
      callTime,
      returnTime: unknown ? Infinity : returnTime,
      result: unknown ? null : result,
    });
  }
  return history;
}

describe('checkLinearizable: agrees with brute force', () => {
  const cases = [
    { name: 'mixed', values: ['x', 'y', 'z'], unknownRate: 0.25 },
    // Few values and many timeouts: lots of interchangeable unknown-outcome ops.
    { name: 'timeout-heavy', values: ['x', 'y'], unknownRate: 0.5 },
  ];
  for (const c of cases) {
    it(`on 3,000 tiny random histories (${c.name})`, () => {
      let linearizable = 0;
      for (let seed = 1; seed <= 3000; seed++) {
        const h = tinyRandomHistory(seed, c.values, c.unknownRate);
        const want = bruteForceLinearizable(h);
        const got = checkLinearizable(h);
        expect(got.ok, `seed ${seed}: ${JSON.stringify(h)}`).toBe(want);
        expect(got.timedOut).toBeUndefined();
        if (want) linearizable++;
      }
      // Both verdicts are well represented.
      expect(linearizable).toBeGreaterThan(300);
      expect(linearizable).toBeLessThan(2700);
    });
  }
});
