// A simulated disk for one node. Writes land in a volatile page cache and become durable on
// fsync (sync=true), on a later fsync (which flushes everything before it), or by background
// writeback after `writebackMs`. A crash loses whatever is not durable; with `tornWrites` the
// first cached write may survive partially (a prefix of its entries).
//
// Beside the log, a small witness file holds the last synced term and vote (as RaftStorage's
// hard-state witness does). A disk that lies about fsync can lose a synced write at a crash
// (`crash(rng, loseSyncedWrite)`): the log then rolls back to before its last term/vote change,
// while the witness (another file) keeps it — which the store detects at the next start.

import type { RowValue } from '../protocol/cluster/kv-space.js';
import type { Entry, HardState, Snapshot } from '../protocol/raft/types.js';
import type { PersistedState } from '../protocol/raft/raft.js';
import type { Rng } from '../protocol/rng.js';

export interface DiskWrite {
  /**
   * Replaces the whole log (a snapshot from the leader), or is a local compaction: the snapshot
   * is stored and the entries up to `compactedTo` are dropped (the tail after it stays).
   */
  snapshot?: { snapshot: Snapshot; replaceLog: boolean; compactedTo?: number };
  entries: Entry[];
  hardState?: HardState;
  /** State machine rows (null: delete) and their applied index; `replace` drops every other row. */
  state?: { rows: ReadonlyMap<string, RowValue | null>; appliedIndex: number; replace: boolean };
  /** A streamed snapshot being staged, or installed (StateStorage's second generation). */
  stage?: StageOp;
}

export type StageOp =
  | { op: 'start'; from: string; id: string }
  | { op: 'rows'; from: string; id: string; rows: [string, RowValue][] }
  | { op: 'complete'; from: string; id: string }
  | { op: 'drop' }
  | { op: 'install'; from: string; id: string };

export interface Staged {
  from: string;
  id: string;
  rows: Map<string, RowValue>;
  lastKey?: string;
  complete: boolean;
}

/** The row a view and a staged snapshot start with: the index their rows are applied up to. */
export const SIM_APPLIED_ROW = '!applied';

interface Durable {
  hardState: HardState;
  snapshot?: Snapshot;
  entries: Map<number, Entry>;
  lastIndex: number;
  /** The state machine's rows (undefined: never written). */
  state?: { appliedIndex: number; rows: Map<string, RowValue> };
  staged?: Staged;
}

export class SimDisk {
  private durable: Durable = { hardState: { term: 0, vote: '', commit: 0 }, entries: new Map(), lastIndex: 0 };
  private cache: { write: DiskWrite; writtenAtMs: number }[] = [];
  /** The durable log as it was before its last synced term/vote change (what a lost write leaves). */
  private beforeLastTermChange: Durable | undefined;
  /** The last synced term and vote, in a file of its own (survives a lost log write). */
  witness: HardState | undefined;
  fsyncs = 0;

  constructor(
    private readonly writebackMs: number,
    private readonly tornWrites: boolean,
  ) {}

  write(w: DiskWrite, sync: boolean, nowMs: number): void {
    this.cache.push({ write: w, writtenAtMs: nowMs });
    if (sync) this.sync();
  }

  /** fsync: everything written so far becomes durable; a new term or vote is then witnessed. */
  sync(): void {
    if (this.cache.length === 0) return;
    const before = this.durable.hardState;
    const changes = this.cache.some(({ write: w }) => w.hardState && (w.hardState.term !== before.term || w.hardState.vote !== before.vote));
    if (changes) this.beforeLastTermChange = cloneDurable(this.durable);
    this.flush(this.cache.length);
    if (changes) this.witness = { ...this.durable.hardState };
  }

  /** Background writeback of cached writes older than writebackMs. */
  writeback(nowMs: number): void {
    let n = 0;
    while (n < this.cache.length && nowMs - this.cache[n].writtenAtMs >= this.writebackMs) n++;
    if (n > 0) this.flush(n);
  }

  hasCached(): boolean {
    return this.cache.length > 0;
  }

  private flush(count: number): void {
    for (const { write } of this.cache.slice(0, count)) applyWrite(this.durable, write);
    this.cache = this.cache.slice(count);
    this.fsyncs++;
  }

  /**
   * Power loss: the page cache is gone (a torn first write may leave a prefix). With
   * loseSyncedWrite (a disk that lied about fsync) the log also loses everything since its last
   * synced term/vote change; returns whether it did.
   */
  crash(rng: Rng, loseSyncedWrite = false): boolean {
    if (loseSyncedWrite && this.beforeLastTermChange) {
      this.durable = this.beforeLastTermChange;
      this.beforeLastTermChange = undefined;
      this.cache = [];
      return true;
    }
    if (this.tornWrites && this.cache.length > 0) {
      const first = this.cache[0].write;
      const keep = rng.int(first.entries.length + 1);
      if (keep > 0 && !first.snapshot) applyWrite(this.durable, { entries: first.entries.slice(0, keep) });
    }
    this.cache = [];
    return false;
  }

  load(): PersistedState {
    const d = this.durable;
    const entries: Entry[] = [];
    // From the first stored entry (a compaction keeps a tail at or before the snapshot's index),
    // as RaftStorage: it must start at most one after the snapshot, with no gap after it — a
    // store that breaks that is a bug of the driver or of this disk, never a fault to survive.
    const snapIndex = d.snapshot?.meta.index ?? 0;
    const keys = [...d.entries.keys()].sort((a, b) => a - b);
    if (keys.length > 0 && keys[0] > snapIndex + 1) throw new Error(`sim disk: the stored log starts at ${keys[0]}, after the snapshot at ${snapIndex} + 1`);
    for (let i = 0; i < keys.length; i++) {
      if (i > 0 && keys[i] !== keys[i - 1] + 1) throw new Error(`sim disk: a gap in the stored log between ${keys[i - 1]} and ${keys[i]}`);
      entries.push(d.entries.get(keys[i])!);
    }
    const state: PersistedState = { hardState: { ...d.hardState }, entries };
    if (d.snapshot) state.snapshot = d.snapshot;
    return state;
  }

  /** The state rows as the store would read them at a start (durable only; `v/` value rows only withValues). */
  loadState(withValues = false): { appliedIndex: number; rows: [string, RowValue][] } | undefined {
    const st = this.durable.state;
    if (!st) return undefined;
    const rows = [...st.rows].filter(([r]) => withValues || !r.startsWith('v/'));
    return { appliedIndex: st.appliedIndex, rows: rows.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)) };
  }

  /** A state row as a read sees it now: the newest cached write that sets it, else the durable one. */
  readStateRow(row: string): string | undefined {
    for (let i = this.cache.length - 1; i >= 0; i--) {
      const st = this.cache[i].write.state;
      if (!st) continue;
      const v = st.rows.get(row);
      if (v !== undefined) return (v as string | null) ?? undefined;
      if (st.replace) return undefined;
    }
    return this.durable.state?.rows.get(row) as string | undefined;
  }

  /** What a read sees now: the durable state with every cached write on top (the page cache). */
  current(): { state?: { appliedIndex: number; rows: Map<string, RowValue> }; staged?: Staged } {
    const d = cloneDurable(this.durable);
    for (const { write } of this.cache) applyWrite(d, write);
    return { ...(d.state ? { state: d.state } : {}), ...(d.staged ? { staged: d.staged } : {}) };
  }

  durableEntryCount(): number {
    return this.durable.entries.size;
  }
}

function cloneDurable(d: Durable): Durable {
  return {
    hardState: { ...d.hardState },
    ...(d.snapshot ? { snapshot: d.snapshot } : {}),
    entries: new Map(d.entries),
    lastIndex: d.lastIndex,
    ...(d.state ? { state: { appliedIndex: d.state.appliedIndex, rows: new Map(d.state.rows) } } : {}),
    ...(d.staged ? { staged: { ...d.staged, rows: new Map(d.staged.rows) } } : {}),
  };
}

function applyWrite(d: Durable, w: DiskWrite): void {
  if (w.snapshot) {
    const { snapshot, replaceLog } = w.snapshot;
    const oldIndex = d.snapshot?.meta.index ?? 0;
    if (snapshot.meta.index > oldIndex) {
      d.snapshot = snapshot;
      if (replaceLog) {
        d.entries.clear();
        d.lastIndex = snapshot.meta.index;
      } else {
        const to = w.snapshot.compactedTo ?? snapshot.meta.index;
        for (const i of [...d.entries.keys()]) if (i <= to) d.entries.delete(i);
        d.lastIndex = Math.max(d.lastIndex, snapshot.meta.index);
      }
    }
  }
  if (w.entries.length > 0) {
    const first = w.entries[0].index;
    for (let i = first; i <= d.lastIndex; i++) d.entries.delete(i);
    for (const e of w.entries) d.entries.set(e.index, e);
    d.lastIndex = w.entries[w.entries.length - 1].index;
  }
  if (w.hardState) d.hardState = { ...w.hardState };
  if (w.stage) applyStage(d, w.stage);
  if (w.state) {
    const rows = w.state.replace || !d.state ? new Map<string, RowValue>() : d.state.rows;
    for (const [row, value] of w.state.rows) {
      if (value === null) rows.delete(row);
      else rows.set(row, value);
    }
    d.state = { appliedIndex: w.state.appliedIndex, rows };
  }
}

function applyStage(d: Durable, op: StageOp): void {
  const st = d.staged;
  const same = (o: { from: string; id: string }) => st !== undefined && st.from === o.from && st.id === o.id;
  switch (op.op) {
    case 'start':
      d.staged = { from: op.from, id: op.id, rows: new Map(), complete: false };
      return;
    case 'drop':
      d.staged = undefined;
      return;
    case 'rows':
      if (!same(op) || st!.complete || op.rows.length === 0) return;
      for (const [k, v] of op.rows) st!.rows.set(k, v);
      st!.lastKey = op.rows[op.rows.length - 1][0];
      return;
    case 'complete':
      if (same(op)) st!.complete = true;
      return;
    case 'install': {
      if (!same(op) || !st!.complete) return;
      const rows = new Map(st!.rows);
      const applied = Number(rows.get(SIM_APPLIED_ROW));
      rows.delete(SIM_APPLIED_ROW);
      d.state = { appliedIndex: applied, rows };
      d.staged = undefined;
    }
  }
}
