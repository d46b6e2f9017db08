// What the Raft driver (raft-node.ts) needs from durable storage. RaftStorage (LevelDB) is the
// production store; the simulator's store keeps the same contract over a simulated disk.
import type { PersistedState } from '../../protocol/raft/raft.js';
import type { Entry, HardState, Snapshot } from '../../protocol/raft/types.js';

export interface RaftStore {
  /** Where the data lives (for messages). */
  readonly dir: string;
  /** The durable state at start: hard state, latest snapshot and the entries after it. */
  load(): Promise<PersistedState>;
  /**
   * Writes one Ready's part: a snapshot replaces the whole log; entries overwrite the log from
   * their first index on. Resolves once written (and fsync'ed when `sync`); rejects on failure.
   */
  save(part: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot }, sync: boolean): Promise<void>;
  /** A local compaction: the snapshot replaces the log up to its index (synced). */
  saveSnapshot(s: Snapshot): Promise<void>;
  /** Opens the store again after a failed write (LevelDB refuses writes after one failed). */
  reopen(): Promise<void>;
}
