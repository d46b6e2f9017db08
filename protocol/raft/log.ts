// The in-memory view of one node's Raft log: the last snapshot plus the entries it holds.
// It tracks three watermarks the driver cares about:
//   persisted  – last index the driver has durably written (acknowledged via advance()),
//   committed  – last index known committed,
//   applied    – last index handed to and applied by the state machine.
// Entries newer than `unstableFrom - 1` still have to be handed to the driver in a Ready.
//
// The log may hold a tail of entries the snapshot already covers (etcd keeps
// SnapshotCatchUpEntries the same way): a local compaction takes its snapshot at the applied
// index but drops entries only up to a lower index, so a follower that lags a little catches
// up from the log instead of receiving a whole snapshot. The entries held start right after
// a marker (index, term): the snapshot's own when there is no tail, else the last entry dropped.

import { invariant, restoreInvariant } from './errors.js';
import type { ConfState, Entry, Snapshot } from './types.js';
import { EMPTY_BYTES } from './types.js';

export function emptySnapshot(): Snapshot {
  return { meta: { index: 0, term: 0, conf: { voters: [], learners: [] } }, data: EMPTY_BYTES };
}

/** Bytes counted for an entry held in memory or sent: its data plus a fixed overhead. */
export const ENTRY_OVERHEAD_BYTES = 24;

export function entrySizeBytes(e: Entry): number {
  return e.data.byteLength + ENTRY_OVERHEAD_BYTES;
}

export class RaftLog {
  snapshot: Snapshot;
  /** Index and term of the entry just before entries[0] (a snapshot's, or the last one compacted away). */
  private prevIndex: number;
  private prevTerm: number;
  private entries: Entry[] = [];
  /** Sum of entrySizeBytes over `entries`. */
  private bytes = 0;
  committed: number;
  applied: number;
  persisted: number;
  /** First index not yet handed to the driver for persistence. */
  unstableFrom: number;
  /** A snapshot received from the leader that the driver must persist and apply. */
  pendingSnapshot: Snapshot | undefined;

  /**
   * Restores a log: `entries` must be contiguous and start at most one after the snapshot
   * (entries at or before its index are a kept tail, and must agree with its term); `applied`
   * (default: the snapshot index) is what the state machine already holds, within
   * [snapshot index, commit].
   */
  constructor(snapshot: Snapshot, entries: Entry[], commit: number, applied: number = snapshot.meta.index) {
    this.snapshot = snapshot;
    const snapIndex = snapshot.meta.index;
    for (let i = 1; i < entries.length; i++) {
      restoreInvariant(entries[i].index === entries[0].index + i, `restored log is not contiguous at ${entries[i].index}`);
    }
    let ents = entries;
    if (ents.length > 0) {
      const first = ents[0].index;
      const last = ents[ents.length - 1].index;
      restoreInvariant(first >= 1 && first <= snapIndex + 1, `restored log starts at ${first}, after snapshot index ${snapIndex} + 1`);
      if (last < snapIndex) ents = []; // all covered by the snapshot
      else if (first <= snapIndex) {
        if (snapIndex > 0) {
          const atSnap = ents[snapIndex - first];
          restoreInvariant(atSnap.term === snapshot.meta.term, `restored entry ${snapIndex} has term ${atSnap.term}, the snapshot at that index term ${snapshot.meta.term}`);
        }
      }
    }
    if (ents.length > 0 && ents[0].index <= snapIndex) {
      // The first entry of a kept tail only serves as the marker: its predecessor's term is unknown.
      this.prevIndex = ents[0].index;
      this.prevTerm = ents[0].term;
      this.entries = ents.slice(1);
    } else {
      this.prevIndex = snapIndex;
      this.prevTerm = snapshot.meta.term;
      this.entries = ents.slice();
    }
    for (const e of this.entries) this.bytes += entrySizeBytes(e);
    this.persisted = this.lastIndex();
    this.unstableFrom = this.lastIndex() + 1;
    restoreInvariant(commit <= this.lastIndex(), `restored commit ${commit} beyond last index ${this.lastIndex()}`);
    this.committed = Math.max(commit, snapIndex);
    invariant(
      Number.isSafeInteger(applied) && applied >= snapIndex && applied <= this.committed,
      `applied index ${applied} is out of range: it must be within [snapshot index ${snapIndex}, commit ${this.committed}]`,
    );
    this.applied = applied;
  }

  /** First index held in the log (entries before it are only in the snapshot). */
  firstIndex(): number {
    return this.prevIndex + 1;
  }

  lastIndex(): number {
    return this.prevIndex + this.entries.length;
  }

  lastTerm(): number {
    return this.term(this.lastIndex()) ?? 0;
  }

  /** Bytes of the entries held in memory (data plus ENTRY_OVERHEAD_BYTES each). */
  logBytes(): number {
    return this.bytes;
  }

  /** Bytes of the entries held with an index above `index`. */
  bytesAfter(index: number): number {
    if (index < this.prevIndex) return this.bytes;
    let sum = 0;
    for (let i = this.entries.length - 1; i >= 0 && this.entries[i].index > index; i--) sum += entrySizeBytes(this.entries[i]);
    return sum;
  }

  /** Term of the entry at `index`, or undefined when compacted away or not yet written. */
  term(index: number): number | undefined {
    if (index === this.prevIndex) return this.prevTerm;
    if (index < this.prevIndex || index > this.lastIndex()) return undefined;
    return this.entries[index - this.prevIndex - 1].term;
  }

  entryAt(index: number): Entry | undefined {
    const offset = index - this.prevIndex - 1;
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
    invariant(after >= this.prevIndex, `append before the first index ${this.firstIndex()}`);
    const keep = after - this.prevIndex;
    for (let i = keep; i < this.entries.length; i++) this.bytes -= entrySizeBytes(this.entries[i]);
    this.entries.length = keep;
    for (const e of ents) {
      this.entries.push(e);
      this.bytes += entrySizeBytes(e);
    }
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
    for (let i = Math.min(index, this.lastIndex()); i >= this.prevIndex; i--) {
      const t = this.term(i);
      if (t === undefined || t <= term) return i;
    }
    return this.prevIndex;
  }

  commitTo(index: number): void {
    if (index <= this.committed) return;
    invariant(index <= this.lastIndex(), `commit ${index} beyond last index ${this.lastIndex()}`);
    this.committed = index;
  }

  /** Entries that are ready to be persisted by the driver. */
  unstableEntries(): Entry[] {
    if (this.unstableFrom > this.lastIndex()) return [];
    return this.entries.slice(this.unstableFrom - this.prevIndex - 1);
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

  /**
   * Entries that may be applied: after `applied`, up to `limit` (committed and persisted
   * here), at most about `maxBytes` of them (always at least one).
   */
  applicableEntries(limit: number, maxBytes = Infinity): Entry[] {
    const hi = Math.min(limit, this.lastIndex());
    if (hi <= this.applied) return [];
    const lo = this.applied + 1;
    if (lo < this.firstIndex()) {
      // Only a leader's snapshot, not applied yet, replaces entries that were not applied.
      invariant(this.pendingSnapshot !== undefined, `entry ${lo} to apply was compacted (first index ${this.firstIndex()})`);
      return [];
    }
    if (maxBytes === Infinity) return this.entries.slice(lo - this.prevIndex - 1, hi - this.prevIndex);
    return this.slice(lo, hi + 1, maxBytes)!;
  }

  appliedTo(index: number): void {
    invariant(index >= this.applied, `applied index moved back from ${this.applied} to ${index}`);
    this.applied = index;
  }

  /** Installs a snapshot from the leader, replacing the whole log. */
  restore(snapshot: Snapshot): void {
    this.snapshot = snapshot;
    this.prevIndex = snapshot.meta.index;
    this.prevTerm = snapshot.meta.term;
    this.entries = [];
    this.bytes = 0;
    this.committed = snapshot.meta.index;
    this.unstableFrom = snapshot.meta.index + 1;
    this.persisted = snapshot.meta.index;
    this.pendingSnapshot = snapshot;
  }

  /**
   * A local compaction: `data` is the state machine at the applied index, which becomes the
   * snapshot; entries up to `index` (<= applied) are dropped, the ones after it stay.
   * `index` below the first index drops nothing (the snapshot is still replaced).
   */
  compact(index: number, data: Uint8Array, conf: ConfState): Snapshot {
    invariant(Number.isSafeInteger(index) && index >= 0, `compact index ${index} is not a valid index`);
    invariant(index <= this.applied, `compact ${index} beyond applied ${this.applied}`);
    invariant(this.pendingSnapshot === undefined, 'compact while a snapshot from the leader is not applied yet');
    const at = this.applied;
    if (at >= this.snapshot.meta.index) {
      const term = this.term(at);
      invariant(term !== undefined, `no term for applied index ${at}`);
      this.snapshot = { meta: { index: at, term, conf: { voters: [...conf.voters], learners: [...conf.learners] } }, data };
    }
    if (index > this.prevIndex) {
      const drop = index - this.prevIndex;
      for (let i = 0; i < drop; i++) this.bytes -= entrySizeBytes(this.entries[i]);
      this.prevTerm = this.term(index)!;
      this.entries = this.entries.slice(drop);
      this.prevIndex = index;
    }
    return this.snapshot;
  }
}
