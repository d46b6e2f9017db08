// The in-memory view of one node's Raft log: the last snapshot plus the entries after it.
// It tracks three watermarks the driver cares about:
//   persisted  – last index the driver has durably written (acknowledged via advance()),
//   committed  – last index known committed,
//   applied    – last index handed to and applied by the state machine.
// Entries newer than `unstableFrom - 1` still have to be handed to the driver in a Ready.

import { invariant } from './errors.js';
import type { ConfState, Entry, Snapshot } from './types.js';
import { EMPTY_BYTES } from './types.js';

export function emptySnapshot(): Snapshot {
  return { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: EMPTY_BYTES };
}

export function entrySizeBytes(e: Entry): number {
  return e.data.byteLength + 24;
}

export class RaftLog {
  snapshot: Snapshot;
  private entries: Entry[] = [];
  committed: number;
  applied: number;
  persisted: number;
  /** First index not yet handed to the driver for persistence. */
  unstableFrom: number;
  /** A snapshot received from the leader that the driver must persist and apply. */
  pendingSnapshot: Snapshot | undefined;

  constructor(snapshot: Snapshot, entries: Entry[], commit: number) {
    this.snapshot = snapshot;
    const first = snapshot.meta.index + 1;
    for (let i = 0; i < entries.length; i++) {
      invariant(entries[i].index === first + i, `restored log is not contiguous at ${entries[i].index}`);
    }
    this.entries = entries.slice();
    this.persisted = this.lastIndex();
    this.unstableFrom = this.lastIndex() + 1;
    invariant(commit <= this.lastIndex(), `restored commit ${commit} beyond last index ${this.lastIndex()}`);
    this.committed = Math.max(commit, snapshot.meta.index);
    this.applied = snapshot.meta.index;
  }

  firstIndex(): number {
    return this.snapshot.meta.index + 1;
  }

  lastIndex(): number {
    return this.snapshot.meta.index + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** Term of the entry at `index`, or undefined when compacted away or not yet written. */
  term(index: number): number | undefined {
    const snapIndex = this.snapshot.meta.index;
    if (index === snapIndex) return this.snapshot.meta.term;
    if (index < snapIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - snapIndex - 1].term;
  }

  entryAt(index: number): Entry | undefined {
    const offset = index - this.snapshot.meta.index - 1;
    return offset >= 0 && offset < this.entries.length ? this.entries[offset] : undefined;
  }

  matchTerm(index: number, term: number): boolean {
    return this.term(index) === term;
  }

  /** §5.4.1: is a candidate's log (lastTerm, lastIndex) at least as up to date as ours? */
  isUpToDate(lastIndex: number, lastTerm: number): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  /** Entries in [lo, hi) limited to about maxBytes (at least one). Undefined if lo was compacted. */
  slice(lo: number, hi: number, maxBytes: number): Entry[] | undefined {
    if (lo < this.firstIndex()) return undefined;
    const out: Entry[] = [];
    let size = 0;
    for (let i = lo; i < hi && i <= this.lastIndex(); i++) {
      const e = this.entryAt(i)!;
      size += entrySizeBytes(e);
      if (out.length > 0 && size > maxBytes) break;
      out.push(e);
    }
    return out;
  }

  /** Appends entries whose indexes follow on (possibly truncating a conflicting suffix). */
  append(ents: Entry[]): number {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0].index - 1;
    invariant(after >= this.committed, `append would overwrite committed index ${after + 1} (committed ${this.committed})`);
    invariant(after <= this.lastIndex(), `append leaves a gap after ${this.lastIndex()}`);
    invariant(after >= this.snapshot.meta.index, `append before snapshot index`);
    this.entries.length = after - this.snapshot.meta.index;
    for (const e of ents) this.entries.push(e);
    this.unstableFrom = Math.min(this.unstableFrom, after + 1);
    this.persisted = Math.min(this.persisted, after);
    return this.lastIndex();
  }

  /** §5.3 AppendEntries receiver: returns the last new index, or undefined on mismatch. */
  maybeAppend(prevIndex: number, prevTerm: number, leaderCommit: number, ents: Entry[]): number | undefined {
    if (!this.matchTerm(prevIndex, prevTerm)) return undefined;
    const lastNew = prevIndex + ents.length;
    const conflict = this.findConflict(ents);
    if (conflict !== 0) {
      invariant(conflict > this.committed, `entry ${conflict} conflicts with committed entry (committed ${this.committed})`);
      this.append(ents.slice(conflict - ents[0].index));
    }
    this.commitTo(Math.min(leaderCommit, lastNew));
    return lastNew;
  }

  /** First index of `ents` that is new or conflicts with our log; 0 if all already present. */
  private findConflict(ents: Entry[]): number {
    for (const e of ents) {
      if (e.index < this.firstIndex()) continue; // already compacted, hence committed and equal
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /** Largest index <= `index` whose term is <= `term` (fast log backtracking). */
  findConflictByTerm(index: number, term: number): number {
    for (let i = Math.min(index, this.lastIndex()); i >= this.snapshot.meta.index; i--) {
      const t = this.term(i);
      if (t === undefined || t <= term) return i;
    }
    return this.snapshot.meta.index;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    invariant(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Entries that are ready to be persisted by the driver. */
  unstableEntries(): Entry[] {
    if (this.unstableFrom > this.lastIndex()) return [];
    return this.entries.slice(this.unstableFrom - this.snapshot.meta.index - 1);
  }

  hasUnstable(): boolean {
    return this.unstableFrom <= this.lastIndex();
  }

  hasApplicable(limit: number): boolean {
    return Math.min(limit, this.lastIndex()) > this.applied;
  }

  /** The driver took the unstable entries; remember that they are on their way to disk. */
  markHanded(): void {
    this.unstableFrom = this.lastIndex() + 1;
  }

  /** The driver durably wrote entries up to (index, term). Ignored if the log changed since. */
  stableTo(index: number, term: number): void {
    if (this.term(index) === term && index > this.persisted) this.persisted = index;
  }

  /** Entries that may be applied: committed and persisted here. */
  applicableEntries(limit: number): Entry[] {
    const hi = Math.min(limit, this.lastIndex());
    if (hi <= this.applied) return [];
    return this.entries.slice(this.applied - this.snapshot.meta.index, hi - this.snapshot.meta.index);
  }

  appliedTo(index: number): void {
    invariant(index >= this.applied, `applied index moved back from ${this.applied} to ${index}`);
    this.applied = index;
  }

  /** Installs a snapshot from the leader, replacing the whole log. */
  restore(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    this.entries = [];
    this.committed = snapshot.meta.index;
    this.unstableFrom = snapshot.meta.index + 1;
    this.persisted = snapshot.meta.index;
    this.pendingSnapshot = snapshot;
  }

  /** Replaces the log prefix up to `index` (<= applied) with a snapshot. */
  compact(index: number, data: Uint8Array, conf: ConfState): Snapshot {
    invariant(index <= this.applied, `compact ${index} beyond applied ${this.applied}`);
    invariant(index > this.snapshot.meta.index, `compact ${index} not after snapshot ${this.snapshot.meta.index}`);
    const term = this.term(index)!;
    this.entries = this.entries.slice(index - this.snapshot.meta.index);
    this.snapshot = { meta: { index, term, conf: { voters: [...conf.voters], learners: [...conf.learners] } }, data };
    return this.snapshot;
  }
}
