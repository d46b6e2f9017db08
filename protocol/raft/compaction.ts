// When and how far to compact the Raft log (pure). A compaction takes a snapshot of the state
// machine at the applied index and drops log entries only up to a lower index, keeping a tail
// of `tailEntries` applied entries (etcd's SnapshotCatchUpEntries, 5000 there too): a
// follower that lags by less than the tail catches up with appends, not a whole snapshot.
//
// It is due when `everyEntries` entries were applied since the last snapshot, or when the
// entries held in memory pass `maxLogBytes`; in the second case the tail is shortened until
// the entries left hold at most half the bound (so that the next few appends do not trigger
// another snapshot at once). Entries not applied yet are never dropped.
//
// Entries a follower still needs (`keepAfter`: a follower catching up from the log, or one that
// is being sent a snapshot and will need the entries after it) are kept as well, as long as the
// entries held after them fit in `keepBytes`: otherwise that follower is left to a snapshot,
// and memory stays bounded. (etcd pauses compaction while a snapshot is sent, without a bound.)

/** Entries kept after the compaction point by default (etcd's DefaultSnapshotCatchUpEntries). */
export const DEFAULT_TAIL_ENTRIES = 5000;

/** The driver's knobs. */
export interface CompactionPolicy {
  /** Applied entries since the last snapshot that make a new one due (> 0). */
  everyEntries: number;
  /** Applied entries kept in the log after the compaction point (>= 0; default DEFAULT_TAIL_ENTRIES). */
  tailEntries?: number;
  /** Bytes of log entries held in memory that make a compaction due even before everyEntries (> 0; default: no bound). */
  maxLogBytes?: number;
  /**
   * Bytes of entries a compaction may keep for the followers that need them (see keepAfter;
   * >= 0; default 0: none).
   */
  keepBytes?: number;
}

export interface CompactionInput extends CompactionPolicy {
  /** Last index applied to the state machine (the new snapshot's index). */
  applied: number;
  /** Index of the current snapshot. */
  snapshotIndex: number;
  /** First index still held in the log. */
  firstIndex: number;
  /** Bytes of the entries held in memory (RaftLog.logBytes). */
  logBytes: number;
  /**
   * Bytes of the entries held with an index above `index` (RaftLog.bytesAfter). Used only
   * when logBytes passes maxLogBytes; without it the whole applied log is dropped then.
   */
  bytesAfter?: (index: number) => number;
  /**
   * Entries after this index are still needed by a follower (undefined: by none): they are kept
   * while the entries held after it fit in keepBytes. An index below firstIndex - 1 is ignored
   * (those entries are gone: that follower needs a snapshot anyway).
   */
  keepAfter?: number;
}

/**
 * The index to compact the log to now (pass it to Raft.compact with the state machine's
 * data), or undefined when no compaction is due. A returned index may equal firstIndex - 1:
 * the snapshot is due but the tail keeps every entry held.
 */
export function compactionPoint(input: CompactionInput): number | undefined {
  const { applied, snapshotIndex, firstIndex, everyEntries, logBytes, maxLogBytes, bytesAfter } = input;
  const tailEntries = input.tailEntries ?? DEFAULT_TAIL_ENTRIES;
  checkInput(input, tailEntries);
  const floor = firstIndex - 1;
  const entriesDue = applied - snapshotIndex >= everyEntries;
  const bytesDue = maxLogBytes !== undefined && logBytes > maxLogBytes;
  if (!entriesDue && !bytesDue) return undefined;
  let point = Math.max(floor, applied - tailEntries);
  if (bytesDue) point = Math.max(point, shortestTailPoint(point, applied, maxLogBytes / 2, bytesAfter));
  const { keepAfter } = input;
  const keepBytes = input.keepBytes ?? 0;
  if (keepAfter !== undefined && keepBytes > 0 && keepAfter >= floor && keepAfter < point) {
    const held = bytesAfter ? bytesAfter(keepAfter) : logBytes;
    if (held <= keepBytes) point = keepAfter;
  }
  if (!entriesDue && point <= floor) return undefined; // over the byte bound, but nothing to drop
  return point;
}

/** Smallest index in [lo, applied] after which the held entries fit in `budgetBytes` (applied if none). */
function shortestTailPoint(lo: number, applied: number, budgetBytes: number, bytesAfter: ((index: number) => number) | undefined): number {
  if (!bytesAfter) return applied;
  if (bytesAfter(lo) <= budgetBytes) return lo;
  let bad = lo; // bytesAfter(bad) > budget
  let good = applied; // taken when even `applied` leaves too much (unapplied entries are kept)
  if (bytesAfter(good) > budgetBytes) return applied;
  while (good - bad > 1) {
    const mid = bad + Math.floor((good - bad) / 2);
    if (bytesAfter(mid) <= budgetBytes) good = mid;
    else bad = mid;
  }
  return good;
}

function checkInput(input: CompactionInput, tailEntries: number): void {
  const problems: string[] = [];
  if (!(Number.isSafeInteger(input.everyEntries) && input.everyEntries > 0)) problems.push(`everyEntries must be a positive integer, got ${input.everyEntries}`);
  if (!(Number.isSafeInteger(tailEntries) && tailEntries >= 0)) problems.push(`tailEntries must be a non-negative integer, got ${tailEntries}`);
  if (input.maxLogBytes !== undefined && !(input.maxLogBytes > 0)) problems.push(`maxLogBytes must be positive, got ${input.maxLogBytes}`);
  if (input.keepBytes !== undefined && !(input.keepBytes >= 0)) problems.push(`keepBytes must be >= 0, got ${input.keepBytes}`);
  if (input.keepAfter !== undefined && !Number.isSafeInteger(input.keepAfter)) problems.push(`keepAfter must be an index, got ${input.keepAfter}`);
  if (input.snapshotIndex > input.applied) problems.push(`snapshot index ${input.snapshotIndex} is after applied ${input.applied}`);
  if (input.firstIndex - 1 > input.applied) problems.push(`first index ${input.firstIndex} is after applied ${input.applied} + 1`);
  if (problems.length > 0) throw new RangeError(`compactionPoint: ${problems.join('; ')}`);
}
