// A simulated disk for one node. Writes land in a volatile page cache and become durable on
// fsync (sync=true), on a later fsync (which flushes everything before it), or by background
// writeback after `writebackMs`. A crash loses whatever is not durable; with `tornWrites` the
// first cached write may survive partially (a prefix of its entries).

import type { Entry, HardState, Snapshot } from '../protocol/raft/types.js';
import type { PersistedState } from '../protocol/raft/raft.js';
import type { Rng } from '../protocol/rng.js';

export interface DiskWrite {
  /** Replaces the whole log (a snapshot from the leader) or compacts up to it (local). */
  snapshot?: { snapshot: Snapshot; replaceLog: boolean };
  entries: Entry[];
  hardState?: HardState;
}

interface Durable {
  hardState: HardState;
  snapshot?: Snapshot;
  entries: Map<number, Entry>;
  lastIndex: number;
}

export class SimDisk {
  private durable: Durable = { hardState: { term: 0, vote: '', commit: 0 }, entries: new Map(), lastIndex: 0 };
  private cache: { write: DiskWrite; writtenAtMs: number }[] = [];
  fsyncs = 0;

  constructor(
    private readonly writebackMs: number,
    private readonly tornWrites: boolean,
  ) {}

  write(w: DiskWrite, sync: boolean, nowMs: number): void {
    this.cache.push({ write: w, writtenAtMs: nowMs });
    if (sync) this.flush(this.cache.length);
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

  /** Power loss: the page cache is gone (a torn first write may leave a prefix). */
  crash(rng: Rng): void {
    if (this.tornWrites && this.cache.length > 0) {
      const first = this.cache[0].write;
      const keep = rng.int(first.entries.length + 1);
      if (keep > 0 && !first.snapshot) applyWrite(this.durable, { entries: first.entries.slice(0, keep) });
    }
    this.cache = [];
  }

  load(): PersistedState {
    const d = this.durable;
    const entries: Entry[] = [];
    let next = (d.snapshot?.meta.index ?? 0) + 1;
    while (d.entries.has(next)) entries.push(d.entries.get(next++)!);
    const state: PersistedState = { hardState: { ...d.hardState }, entries };
    if (d.snapshot) state.snapshot = d.snapshot;
    return state;
  }

  durableEntryCount(): number {
    return this.durable.entries.size;
  }
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
        for (let i = oldIndex; i <= snapshot.meta.index; i++) d.entries.delete(i);
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
}
