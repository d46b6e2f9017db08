// Linearizability checker for a key-value register history (Wing & Gong search with
// Lowe's memoisation, as popularised by Porcupine). Pure: no I/O, no clock, no randomness.
//
// 1. P-compositionality: a history is linearizable iff each key's sub-history is, so
//    every key is checked on its own.
// 2. Per key, the call and return events form a doubly linked list ordered by time.
//    A depth-first search repeatedly picks a pending call, applies it to the register
//    model, and "lifts" the call/return pair out of the list; reaching a return whose
//    call has not been linearized means backtracking ("unlifting" the last choice).
// 3. A visited set of (bitset of linearized ops, register state) pairs cuts every
//    branch already explored. Its size is bounded by `maxStatesPerKey`; past the bound
//    the key is reported as timed out, never as a violation.
//
// Reductions, each of which keeps at least one linearization whenever one exists:
// - a get or failed cas that fits the current state is linearized at once, without
//   branching (it changes nothing, so it can lead any completion);
// - an op with unknown outcome (return at +infinity) is placed only right before a
//   known op that the state could not otherwise explain, and interchangeable ones are
//   used in call order; those that can never matter are dropped up front;
// - values that no op can observe share one state id.

export type KvOp =
  | { kind: 'put'; key: string; value: string }
  | { kind: 'get'; key: string }
  | { kind: 'cas'; key: string; expected: string | null; value: string };

export type KvResult =
  | { kind: 'put-ok' }
  | { kind: 'get-ok'; value: string | null } // null = key absent
  | { kind: 'cas-ok'; swapped: boolean };

export interface HistoryOp {
  /** Unique across the history. */
  id: number;
  clientId: number;
  op: KvOp;
  /** Virtual time the client sent the request. */
  callTime: number;
  /** Virtual time the client got the answer; Infinity if it never got one. */
  returnTime: number;
  /** null = outcome unknown (timeout): the op may or may not have taken effect. */
  result: KvResult | null;
}

export interface CheckResult {
  ok: boolean;
  /** When !ok: the first key (in sorted order) whose sub-history is not linearizable. */
  key?: string;
  /** When !ok: a short human-readable account of where the search got stuck. */
  explanation?: string;
  /** When ok: at least one key exceeded the search bound and was not fully checked. */
  timedOut?: boolean;
  /** When timedOut: the keys that exceeded the search bound, sorted. */
  timedOutKeys?: string[];
  /** Visited (linearized set, state) pairs, summed over the keys checked. */
  statesExplored: number;
}

export interface CheckOptions {
  /** Bound on visited (linearized set, state) pairs per key. */
  maxStatesPerKey?: number;
}

export const DEFAULT_MAX_STATES_PER_KEY = 2_000_000;
/** How many ops an explanation lists at most in each of its lists. */
const EXPLANATION_MAX_OPS = 6;

export class InvalidHistoryError extends Error {
  readonly code = 'INVALID_HISTORY';
  constructor(message: string) {
    super(message);
    this.name = 'InvalidHistoryError';
  }
}

export function checkLinearizable(history: HistoryOp[], opts: CheckOptions = {}): CheckResult {
  const maxStates = opts.maxStatesPerKey ?? DEFAULT_MAX_STATES_PER_KEY;
  if (!(maxStates >= 1)) throw new InvalidHistoryError(`maxStatesPerKey must be >= 1, got ${maxStates}`);
  validateHistory(history);

  const byKey = new Map<string, HistoryOp[]>();
  for (const h of history) {
    let list = byKey.get(h.op.key);
    if (list === undefined) byKey.set(h.op.key, (list = []));
    list.push(h);
  }

  let statesExplored = 0;
  const timedOutKeys: string[] = [];
  for (const key of [...byKey.keys()].sort()) {
    const r = checkKey(key, byKey.get(key)!, maxStates);
    statesExplored += r.statesExplored;
    if (r.outcome === 'violation') return { ok: false, key, explanation: r.explanation, statesExplored };
    if (r.outcome === 'timeout') timedOutKeys.push(key);
  }
  if (timedOutKeys.length > 0) return { ok: true, timedOut: true, timedOutKeys, statesExplored };
  return { ok: true, statesExplored };
}

// ---------------------------------------------------------------------------------------
// Validation

function validateHistory(history: HistoryOp[]): void {
  const ids = new Set<number>();
  for (const h of history) {
    if (ids.has(h.id)) throw new InvalidHistoryError(`duplicate op id ${h.id}`);
    ids.add(h.id);
    if (!Number.isFinite(h.callTime)) throw new InvalidHistoryError(`op ${h.id}: callTime must be finite`);
    if (Number.isNaN(h.returnTime) || h.returnTime < h.callTime) {
      throw new InvalidHistoryError(`op ${h.id}: returnTime ${h.returnTime} is before callTime ${h.callTime}`);
    }
    if (h.result === null) continue;
    const want = h.op.kind === 'put' ? 'put-ok' : h.op.kind === 'get' ? 'get-ok' : 'cas-ok';
    if (h.result.kind !== want) {
      throw new InvalidHistoryError(`op ${h.id}: a ${h.op.kind} cannot have a ${h.result.kind} result`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Register model, compiled to integers (value ids: see `vid` in checkKey).

/** Value id shared by every value that no op can observe. */
const BLANK = 1;

const OP_PUT = 0; // always succeeds, state := a
const OP_GET = 1; // requires state == a
const OP_CAS_SWAPPED = 2; // requires state == a, state := b
const OP_CAS_FAILED = 3; // requires state != a
const OP_CAS_UNKNOWN = 4; // state == a ? b : state

/** New state after applying op `i` to `state`, or -1 if the op's result is impossible. */
function step(code: Uint8Array, a: Int32Array, b: Int32Array, i: number, state: number): number {
  switch (code[i]) {
    case OP_PUT:
      return a[i];
    case OP_GET:
      return state === a[i] ? state : -1;
    case OP_CAS_SWAPPED:
      return state === a[i] ? b[i] : -1;
    case OP_CAS_FAILED:
      return state !== a[i] ? state : -1;
    default:
      return state === a[i] ? b[i] : state;
  }
}

interface KeyOutcome {
  outcome: 'ok' | 'violation' | 'timeout';
  explanation?: string;
  statesExplored: number;
}

/**
 * Ops with an unknown outcome that can never matter: an unknown write of `v` when no
 * known get reads `v`, no cas expects `v` and no known cas failed. Any linearization that
 * uses such a write stays valid with the write (and unknown cas that were no-ops) moved
 * to "never took effect", so dropping them loses no linearization.
 */
function droppableUnknown(ops: HistoryOp[]): Set<HistoryOp> {
  const read = new Set<string | null>();
  const expected = new Set<string | null>();
  let knownFailedCas = false;
  for (const h of ops) {
    if (h.op.kind === 'cas') expected.add(h.op.expected);
    if (h.result?.kind === 'get-ok') read.add(h.result.value);
    if (h.result?.kind === 'cas-ok' && !h.result.swapped) knownFailedCas = true;
  }
  const drop = new Set<HistoryOp>();
  for (const h of ops) {
    if (h.result !== null) continue;
    if (h.op.kind === 'get') drop.add(h);
    else if (!knownFailedCas && !read.has(h.op.value) && !expected.has(h.op.value)) drop.add(h);
  }
  return drop;
}

function checkKey(key: string, all: HistoryOp[], maxStates: number): KeyOutcome {
  const dropped = droppableUnknown(all);
  // Known-outcome ops get the low indices so that the linearized bitset is a dense
  // prefix plus a short frontier, which the cache stores compactly.
  const ops = all
    .filter((h) => !dropped.has(h))
    .sort((x, y) => Number(x.result === null) - Number(y.result === null) || x.callTime - y.callTime || x.id - y.id);
  const n = ops.length;
  let known = 0;
  while (known < n && ops[known].result !== null) known++;
  if (known === 0) return { outcome: 'ok', statesExplored: 0 };

  // Compile ops. Value ids: 0 = absent, 1 = BLANK (any value that no get reads and no cas
  // expects: the model cannot tell such values apart), 2.. = observable values.
  const observable = new Set<string>();
  for (const h of ops) {
    if (h.op.kind === 'cas' && h.op.expected !== null) observable.add(h.op.expected);
    if (h.result?.kind === 'get-ok' && h.result.value !== null) observable.add(h.result.value);
  }
  const valueIds = new Map<string, number>();
  const vid = (v: string | null): number => {
    if (v === null) return 0;
    if (!observable.has(v)) return BLANK;
    let id = valueIds.get(v);
    if (id === undefined) valueIds.set(v, (id = valueIds.size + 2));
    return id;
  };
  const code = new Uint8Array(n);
  const a = new Int32Array(n);
  const b = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const { op, result } = ops[i];
    if (op.kind === 'put') {
      code[i] = OP_PUT;
      a[i] = vid(op.value);
    } else if (op.kind === 'get') {
      code[i] = OP_GET;
      a[i] = vid(result !== null && result.kind === 'get-ok' ? result.value : null);
    } else {
      const swapped = result !== null && result.kind === 'cas-ok' ? result.swapped : null;
      code[i] = swapped === null ? OP_CAS_UNKNOWN : swapped ? OP_CAS_SWAPPED : OP_CAS_FAILED;
      a[i] = vid(op.expected);
      b[i] = vid(op.value);
    }
  }
  // Unknown-outcome ops with the same compiled effect are interchangeable (their returns
  // are all at infinity), so they are used in call order: prevTwin[i] must go first.
  const prevTwin = new Int32Array(n).fill(-1);
  const lastTwin = new Map<string, number>();
  for (let i = known; i < n; i++) {
    const sig = `${code[i]},${a[i]},${b[i]}`;
    const p = lastTwin.get(sig);
    if (p !== undefined) prevTwin[i] = p;
    lastTwin.set(sig, i);
  }

  // Events: node 0 is the head sentinel, node 2n+1 the tail sentinel.
  const evTime = (i: number, isCall: boolean): number =>
    isCall ? ops[i].callTime : ops[i].result === null ? Infinity : ops[i].returnTime;
  const order: number[] = [];
  for (let i = 0; i < n; i++) order.push(2 * i, 2 * i + 1); // even = call, odd = return
  order.sort((x, y) => {
    const tx = evTime(x >> 1, (x & 1) === 0);
    const ty = evTime(y >> 1, (y & 1) === 0);
    if (tx !== ty) return tx < ty ? -1 : 1;
    // Same instant: calls first, so touching intervals count as concurrent (lenient).
    return (x & 1) - (y & 1) || (x >> 1) - (y >> 1);
  });
  const HEAD = 0;
  const TAIL = 2 * n + 1;
  const next = new Int32Array(2 * n + 2);
  const prev = new Int32Array(2 * n + 2);
  const evOp = new Int32Array(2 * n + 2);
  const evIsCall = new Uint8Array(2 * n + 2);
  const match = new Int32Array(2 * n + 2); // call node -> its return node
  const nodeOf = new Int32Array(2 * n); // event code -> node
  for (let k = 0; k < order.length; k++) {
    const node = k + 1;
    nodeOf[order[k]] = node;
    evOp[node] = order[k] >> 1;
    evIsCall[node] = (order[k] & 1) === 0 ? 1 : 0;
    next[node] = node + 1;
    prev[node] = node - 1;
  }
  next[HEAD] = 1;
  prev[TAIL] = 2 * n;
  for (let i = 0; i < n; i++) match[nodeOf[2 * i]] = nodeOf[2 * i + 1];

  const lift = (call: number): void => {
    const ret = match[call];
    next[prev[call]] = next[call];
    prev[next[call]] = prev[call];
    next[prev[ret]] = next[ret];
    prev[next[ret]] = prev[ret];
  };
  const unlift = (call: number): void => {
    const ret = match[call];
    prev[next[ret]] = ret;
    next[prev[ret]] = ret;
    prev[next[call]] = call;
    next[prev[call]] = call;
  };

  // Search state. `burstStart` is the register state before the current run of
  // unknown-outcome ops, or -1 when the last op linearized had a known outcome.
  const words = (n + 31) >>> 5;
  const bits = new Uint32Array(words);
  const zobrist = new Int32Array(n);
  for (let i = 0; i < n; i++) zobrist[i] = fmix32(Math.imul(i + 1, 0x9e3779b1));
  const cache = new StateCache(words);
  const stackCall = new Int32Array(n);
  const stackState = new Int32Array(n);
  const stackBurst = new Int32Array(n);
  const stackForced = new Uint8Array(n);
  let depth = 0;
  let state = 0;
  let burstStart = -1;
  let setHash = 0;
  let linearizedKnown = 0;
  let visited = 0;

  const best: DeadEnd = { depth: -1, prefix: [], blocking: -1, candidates: [] };
  const recordDeadEnd = (retNode: number): void => {
    if (depth <= best.depth || retNode === TAIL) return;
    best.depth = depth;
    best.prefix = Array.from(stackCall.subarray(0, depth), (node) => evOp[node]);
    best.blocking = evOp[retNode];
    best.candidates = [];
    for (let e = next[HEAD]; e !== retNode && e !== TAIL; e = next[e]) if (evIsCall[e]) best.candidates.push(evOp[e]);
  };

  /**
   * New state if op `i` may be linearized now, else -1. Unknown-outcome ops are only
   * placed where they are needed (any linearization can be rearranged into this form):
   * an unknown op must change the state; a run of unknown ops ("burst") must be followed
   * by a known op that the state before the burst cannot explain; inside a burst an
   * unknown put is pointless (it would erase the burst); of interchangeable unknown
   * ops, the earliest called goes first.
   */
  const tryStep = (i: number): number => {
    const ns = step(code, a, b, i, state);
    if (ns < 0) return -1;
    if (i >= known) {
      if (ns === state) return -1;
      const twin = prevTwin[i];
      if (twin >= 0 && (bits[twin >>> 5] & (1 << (twin & 31))) === 0) return -1;
      if (burstStart >= 0 && code[i] === OP_PUT) return -1;
      return ns;
    }
    if (burstStart >= 0 && step(code, a, b, i, burstStart) >= 0) return -1;
    return ns;
  };

  /** Linearizes the op of call node `node`; returns false if that state was visited already. */
  const push = (node: number, ns: number, nb: number, forced: boolean): boolean => {
    const i = evOp[node];
    bits[i >>> 5] |= 1 << (i & 31);
    const h = setHash ^ zobrist[i];
    if (!cache.addIfAbsent(bits, stateKeyHash(h, ns, nb), ns, nb)) {
      bits[i >>> 5] &= ~(1 << (i & 31));
      return false;
    }
    visited++;
    stackCall[depth] = node;
    stackState[depth] = state;
    stackBurst[depth] = burstStart;
    stackForced[depth] = forced ? 1 : 0;
    depth++;
    state = ns;
    burstStart = nb;
    setHash = h;
    if (i < known) linearizedKnown++;
    lift(node);
    return true;
  };
  /** Undoes the last choice that had alternatives; returns the node to scan next, or -1. */
  const backtrack = (): number => {
    while (depth > 0) {
      depth--;
      const call = stackCall[depth];
      const i = evOp[call];
      state = stackState[depth];
      burstStart = stackBurst[depth];
      bits[i >>> 5] &= ~(1 << (i & 31));
      setHash ^= zobrist[i];
      if (i < known) linearizedKnown--;
      unlift(call);
      if (stackForced[depth] === 0) return next[call];
    }
    return -1;
  };
  /**
   * A known read-only op (get, failed cas) that may go now and fits the current state
   * can be linearized first in any completion, so it is taken without branching.
   */
  const forcedRead = (): number => {
    if (burstStart >= 0) return -1;
    for (let x = next[HEAD]; evIsCall[x] === 1; x = next[x]) {
      const i = evOp[x];
      if (i < known && (code[i] === OP_GET || code[i] === OP_CAS_FAILED) && step(code, a, b, i, state) >= 0) return x;
    }
    return -1;
  };
  const violation = (): KeyOutcome => ({
    outcome: 'violation',
    explanation: explain(key, all, ops, best),
    statesExplored: visited,
  });

  let e = -1; // -1: a new configuration was just reached
  for (;;) {
    if (visited > maxStates) return { outcome: 'timeout', statesExplored: visited };
    if (linearizedKnown === known) return { outcome: 'ok', statesExplored: visited };
    if (e < 0) {
      const f = forcedRead();
      if (f < 0) e = next[HEAD];
      else {
        if (!push(f, state, -1, true)) {
          e = backtrack(); // this configuration leads only to an explored one
          if (e < 0) return violation();
        }
        continue;
      }
    }
    if (evIsCall[e] === 1) {
      const i = evOp[e];
      const ns = tryStep(i);
      if (ns >= 0 && push(e, ns, i < known ? -1 : burstStart >= 0 ? burstStart : state, false)) e = -1;
      else e = next[e];
    } else {
      // A return whose call is not linearized yet (or the end): this branch is dead.
      recordDeadEnd(e);
      e = backtrack();
      if (e < 0) return violation();
    }
  }
}

// ---------------------------------------------------------------------------------------
// Visited set of (linearized bitset, state, burst start). Open addressing over entry
// indices; each bitset is stored compactly as the words between its leading all-ones run and its
// trailing all-zeros run, in one shared arena.

class StateCache {
  private table = new Int32Array(1 << 12); // entry index + 1, 0 = empty
  private count = 0;
  private hash = new Int32Array(1 << 11);
  private state = new Int32Array(1 << 11);
  private aux = new Int32Array(1 << 11);
  private first = new Int32Array(1 << 11); // index of first word that is not all ones
  private end = new Int32Array(1 << 11); // one past the last non-zero word (>= first)
  private offset = new Int32Array(1 << 11); // where words [first, end) start in the arena
  private arena = new Uint32Array(1 << 12);
  private arenaUsed = 0;

  private readonly words: number;

  constructor(words: number) {
    this.words = words;
  }

  /** Adds the (bitset, state, aux) entry; returns false if it was already present. */
  addIfAbsent(bits: Uint32Array, h: number, st: number, aux: number): boolean {
    let first = 0;
    while (first < this.words && bits[first] === 0xffffffff) first++;
    let end = this.words;
    while (end > first && bits[end - 1] === 0) end--;
    const mask = this.table.length - 1;
    let slot = h & mask;
    for (;;) {
      const idx = this.table[slot] - 1;
      if (idx < 0) break;
      const same =
        this.hash[idx] === h &&
        this.state[idx] === st &&
        this.aux[idx] === aux &&
        this.first[idx] === first &&
        this.end[idx] === end &&
        this.sameWords(idx, bits, first, end);
      if (same) return false;
      slot = (slot + 1) & mask;
    }
    this.insert(slot, bits, h, st, aux, first, end);
    return true;
  }

  private sameWords(idx: number, bits: Uint32Array, first: number, end: number): boolean {
    const off = this.offset[idx] - first;
    for (let w = first; w < end; w++) if (this.arena[off + w] !== bits[w]) return false;
    return true;
  }

  private insert(
    slot: number,
    bits: Uint32Array,
    h: number,
    st: number,
    aux: number,
    first: number,
    end: number,
  ): void {
    const idx = this.count++;
    if (idx === this.hash.length) {
      this.hash = grow(this.hash);
      this.state = grow(this.state);
      this.aux = grow(this.aux);
      this.first = grow(this.first);
      this.end = grow(this.end);
      this.offset = grow(this.offset);
    }
    while (this.arenaUsed + (end - first) > this.arena.length) this.arena = grow(this.arena);
    this.hash[idx] = h;
    this.state[idx] = st;
    this.aux[idx] = aux;
    this.first[idx] = first;
    this.end[idx] = end;
    this.offset[idx] = this.arenaUsed;
    this.arena.set(bits.subarray(first, end), this.arenaUsed);
    this.arenaUsed += end - first;
    this.table[slot] = idx + 1;
    if (this.count * 2 > this.table.length) this.rehash();
  }

  private rehash(): void {
    const table = new Int32Array(this.table.length * 2);
    const mask = table.length - 1;
    for (let idx = 0; idx < this.count; idx++) {
      let slot = this.hash[idx] & mask;
      while (table[slot] !== 0) slot = (slot + 1) & mask;
      table[slot] = idx + 1;
    }
    this.table = table;
  }
}

function grow<T extends Int32Array | Uint32Array>(arr: T): T {
  const bigger = new (arr.constructor as new (n: number) => T)(arr.length * 2);
  bigger.set(arr);
  return bigger;
}

/** murmur3 finaliser: a cheap, well-mixed 32-bit hash. */
function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  return x ^ (x >>> 16);
}

function stateKeyHash(setHash: number, state: number, aux: number): number {
  return fmix32(setHash ^ Math.imul(state + 1, 0x27d4eb2f) ^ Math.imul(aux + 2, 0x165667b1));
}

// ---------------------------------------------------------------------------------------
// Explanation of a violation: the deepest dead end the search reached.

interface DeadEnd {
  depth: number;
  prefix: number[]; // op indices, in linearization order
  blocking: number; // op whose return was reached unlinearized
  candidates: number[]; // ops that could have been placed next
}

function explain(key: string, all: HistoryOp[], ops: HistoryOp[], best: DeadEnd): string {
  // Replay the prefix on real values (the search state merges unobservable ones).
  let current: string | null = null;
  for (const i of best.prefix) {
    const { op } = ops[i];
    if (op.kind === 'put' || (op.kind === 'cas' && current === op.expected)) current = op.value;
  }
  const stateText = current === null ? 'absent' : JSON.stringify(current);
  const unknown = all.filter((h) => h.result === null).length;
  const lines: string[] = [];
  lines.push(`key ${JSON.stringify(key)}: not linearizable (${all.length} ops, ${unknown} with unknown outcome).`);
  if (best.blocking < 0) return lines[0];
  if (best.prefix.length === 0) {
    lines.push(`No op can be linearized first; the key starts absent.`);
  } else {
    const tail = best.prefix.slice(-EXPLANATION_MAX_OPS).map((i) => describeOp(ops[i]));
    const skipped = best.prefix.length - tail.length;
    const count = `${best.prefix.length} op${best.prefix.length === 1 ? '' : 's'}`;
    lines.push(
      `Longest linearizable prefix: ${count}${skipped > 0 ? ', ending with' : ':'} ${tail.join('; ')}; ` +
        `leaves the key ${stateText}.`,
    );
  }
  const blocking = ops[best.blocking];
  let why =
    `${describeOp(blocking)} must take effect by t=${blocking.returnTime}, ` +
    'but neither it nor any op that could precede it fits';
  const read = blocking.result?.kind === 'get-ok' ? blocking.result.value : undefined;
  if (read !== undefined && read !== null && !all.some((h) => h.op.kind !== 'get' && h.op.value === read)) {
    why += ` (no op ever writes ${JSON.stringify(read)})`;
  }
  lines.push(`Then ${why}.`);
  const cands = best.candidates.filter((i) => i !== best.blocking);
  if (cands.length > 0) {
    const shown = cands.slice(0, EXPLANATION_MAX_OPS).map((i) => describeOp(ops[i]));
    const more = cands.length - shown.length;
    lines.push(`Concurrent candidates: ${shown.join('; ')}${more > 0 ? `; and ${more} more` : ''}.`);
  }
  return lines.join('\n');
}

function describeOp(h: HistoryOp): string {
  const v = (x: string | null): string => (x === null ? 'absent' : JSON.stringify(x));
  const { op, result } = h;
  let text: string;
  if (op.kind === 'put') text = `put(${v(op.value)})`;
  else if (op.kind === 'get') text = `get() -> ${result?.kind === 'get-ok' ? v(result.value) : '?'}`;
  else {
    const outcome = result?.kind === 'cas-ok' ? (result.swapped ? 'swapped' : 'not swapped') : '?';
    text = `cas(${v(op.expected)} -> ${v(op.value)}) -> ${outcome}`;
  }
  const ret = result === null || h.returnTime === Infinity ? 'never' : String(h.returnTime);
  return `#${h.id} client ${h.clientId} ${text} [call ${h.callTime}, return ${ret}]`;
}
