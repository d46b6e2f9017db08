// What the Raft driver (raft-node.ts) needs from durable storage. RaftStorage (LevelDB) is the
// production store; the simulator's store keeps the same contract over a simulated disk.
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import type { PersistedState } from '../../protocol/raft/raft.js';
import type { Entry, HardState, Snapshot } from '../../protocol/raft/types.js';
import type { StateView, StoredState, StreamedState } from './state-storage.js';

export type { StoredState, StreamedState };

/** State rows changed by applied entries (null: deleted) and the applied index they reflect. */
export interface StateRowsPart {
  rows: ReadonlyMap<string, RowValue | null>;
  appliedIndex: number;
}

export interface RaftStore {
  /** Where the data lives (for messages). */
  readonly dir: string;
  /** The durable state at start: hard state, latest snapshot and the stored entries (the tail a compaction kept, then those after the snapshot). */
  load(): Promise<PersistedState>;
  /**
   * Writes one Ready's part: a snapshot replaces the whole log; entries overwrite the log from
   * their first index on; `state`: rows of the state machine with the applied index they reflect
   * (as saveState), in the same atomic batch. Resolves once written (and fsync'ed when `sync`);
   * rejects on failure.
   */
  save(part: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot; state?: StateRowsPart }, sync: boolean): Promise<void>;
  /**
   * A local compaction (synced): `s` becomes the stored snapshot, and the entries up to
   * `compactedTo` (at most its index) are dropped. The entries after it — the tail the
   * compaction keeps, etcd's SnapshotCatchUpEntries — stay, and load() returns them, so a
   * restarted leader still serves a follower a little behind from its log.
   */
  saveSnapshot(s: Snapshot, compactedTo: number): Promise<void>;
  /**
   * The state machine's rows and applied index as last written (saveState / replaceState);
   * undefined in a data dir that never had them (written before the state lived in rows).
   * Spilled kv values (rows `v/…`) only `withValues`: a start never reads them.
   */
  loadState(withValues?: boolean): Promise<StoredState | undefined>;
  /** As loadState, the rows handed out in batches as they are read (a start never holds them all). */
  streamState(withValues?: boolean): Promise<StreamedState | undefined>;
  /** The stored rows (undefined: none), read as they are now (unsynced writes included). */
  readStateRows(rows: readonly string[]): Promise<(string | undefined)[]>;
  /**
   * Writes the rows one or more Readys changed (null: deleted) with the applied index they
   * reflect, in one atomic batch (fsync'ed when `sync`). Unsynced rows become durable with the
   * next synced write (LevelDB's log is sequential). `hardState`: a hard state that differs from
   * the stored one in its commit index only, written in the same batch.
   */
  saveState(rows: ReadonlyMap<string, RowValue | null>, appliedIndex: number, sync: boolean, hardState?: HardState): Promise<void>;
  /** Replaces every row (a snapshot from the leader), atomically and fsync'ed. */
  replaceState(rows: Iterable<[string, RowValue]>, appliedIndex: number): Promise<void>;
  /** A consistent view of the rows as last saved, to stream to a follower (close it after). */
  openStateView(id: string): Promise<StateView>;
  /** Makes a streamed snapshot staged in the store (from, id) the rows; returns its applied index. */
  installStagedState(from: string, id: string): Promise<number>;
  /** Opens the store again after a failed write (LevelDB refuses writes after one failed). */
  reopen(): Promise<void>;
}

/** Why `compactedTo` cannot go with snapshot `s` in saveSnapshot (it must be within [0, its index]); undefined: it can. */
export function badCompactedTo(s: Snapshot, compactedTo: number): RangeError | undefined {
  if (Number.isSafeInteger(compactedTo) && compactedTo >= 0 && compactedTo <= s.meta.index) return undefined;
  return new RangeError(`saveSnapshot: compactedTo ${compactedTo} must be within [0, ${s.meta.index}]`);
}
