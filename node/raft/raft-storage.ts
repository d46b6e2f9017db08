// Durable Raft storage on LevelDB (classic-level): hard state, log entries and the latest
// snapshot, plus node-local metadata. One Ready's durable parts go in one atomic batch,
// fsync'd when Raft says so, before any of that Ready's messages are sent.
//
// Damage is never silently skipped (node/raft/storage-integrity.ts): LevelDB's write-ahead logs are
// checked before LevelDB replays them, every value carries a checksum over its key and bytes,
// and a second copy of the hard state (node/raft/hard-state-witness.ts) proves that LevelDB did not
// lose a synced term or vote. Anything wrong is a StorageCorruptError (STORAGE_CORRUPT).
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { badCompactedTo, type RaftStore, type StateRowsPart, type StoredState, type StreamedState } from './raft-store.js';
import { StateStorage, type StateView } from './state-storage.js';
import type { SnapshotSink } from './snapshot-stream.js';
import { Level } from 'level';
import { mark } from '../timeline.js';
import { mkdir } from 'node:fs/promises';
import { decodeEntry, decodeHardState, decodeSnapshot, encodeEntry, encodeHardState, encodeSnapshot } from '../../protocol/codec.js';
import type { Entry, HardState, Snapshot } from '../../protocol/raft/types.js';
import type { PersistedState } from '../../protocol/raft/raft.js';
import { NONE } from '../../protocol/raft/types.js';
import { StorageCorruptError, checkLevelDbLogs, sealRecord } from './storage-integrity.js';
import { decodeOrCorrupt, levelError, read, unsealOrCorrupt, type Db } from './level-records.js';
import { WITNESS_FILE, readWitness, removeStaleWitnessTemps, staleHardState, writeWitness } from './hard-state-witness.js';

export { StorageCorruptError } from './storage-integrity.js';

const ENTRY_PREFIX = 'e/';
const HARD_STATE_KEY = 'hs';
const SNAPSHOT_KEY = 'snap';
const META_PREFIX = 'm/';

/** Written once when the dir is created: every value is sealed and the witness exists. */
const FORMAT_KEY = 'fmt';
const FORMAT = 'omni-raft/2';
/** Largest stored records we will decode (the transport caps messages lower). */
export const MAX_STORED_SNAPSHOT_BYTES = 64 * 1024 * 1024;
export const MAX_STORED_ENTRY_BYTES = 16 * 1024 * 1024;
/** Log entries and bytes read per trip to LevelDB at start. */
const LOAD_BATCH_ENTRIES = 4096;
const LOAD_BATCH_BYTES = 4 * 1024 * 1024;

const ZERO_HARD_STATE: HardState = { term: 0, vote: NONE, commit: 0 };


/** Fixed-width hex so LevelDB's byte order is index order. */
function entryKey(index: number): string {
  return ENTRY_PREFIX + index.toString(16).padStart(16, '0');
}

/**
 * LevelDB 1.20 (classic-level) maps every table file it holds open into memory (up to 1,000 of
 * them), and the pages read count in the process's RSS: reading a whole 1 GiB state for a
 * snapshot would leave about 1 GiB mapped. Its table cache holds max_open_files − 10 tables, and
 * a table leaving it is unmapped: at 74 (the smallest LevelDB takes), at most 64 tables of about
 * LEVELDB_MAX_FILE_BYTES are mapped at once, whatever the size of the database.
 */
export const LEVELDB_MAX_OPEN_FILES = 74;
/**
 * Tables of ~1 MiB instead of LevelDB's 2 MiB: what 64 mapped tables hold resident halves (the
 * leader streaming a 1 GiB snapshot in bench:state: 130 MiB of mapped tables at 2 MiB).
 */
export const LEVELDB_MAX_FILE_BYTES = 1024 * 1024;
const LEVEL_OPTIONS = { valueEncoding: 'view', maxOpenFiles: LEVELDB_MAX_OPEN_FILES, maxFileSize: LEVELDB_MAX_FILE_BYTES } as const;

export class RaftStorage implements RaftStore {
  private first = 0;
  private last = 0;
  /** The replicated state's rows, in the same database. */
  private readonly state: StateStorage;

  private constructor(
    private db: Db,
    readonly dir: string,
    /** Term and vote as last written to the witness file. */
    private witnessed: HardState,
  ) {
    this.state = new StateStorage(() => this.db, dir);
  }

  /** Opens (or creates) the store; throws StorageCorruptError if it cannot be trusted. */
  static async open(dir: string): Promise<RaftStorage> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    // Before LevelDB opens: opening replays its logs, drops damaged records and deletes them.
    await checkLevelDbLogs(dir);
    const db = new Level<string, Uint8Array>(dir, LEVEL_OPTIONS);
    try {
      await db.open();
    } catch (err) {
      throw levelError(err, dir, 'opening LevelDB');
    }
    try {
      const storage = new RaftStorage(db, dir, await verifyOrCreate(db, dir));
      await storage.state.init();
      return storage;
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  /**
   * Closes and opens LevelDB again, with the same checks as open(). After a failed write
   * (a full disk) LevelDB refuses every later write until it is reopened.
   */
  async reopen(): Promise<void> {
    if (this.db.status === 'open') await this.db.close().catch(() => undefined);
    await checkLevelDbLogs(this.dir);
    const db = new Level<string, Uint8Array>(this.dir, LEVEL_OPTIONS);
    try {
      await db.open();
    } catch (err) {
      throw levelError(err, this.dir, 'reopening LevelDB');
    }
    try {
      this.witnessed = await verifyOrCreate(db, this.dir);
      this.db = db;
      await this.state.init();
    } catch (err) {
      await db.close();
      throw err;
    }
    this.db = db;
  }

  firstIndex(): number {
    return this.first;
  }

  lastIndex(): number {
    return this.last;
  }

  async load(): Promise<PersistedState> {
    const hardState = (await readHardState(this.db, this.dir)) ?? ZERO_HARD_STATE;
    const snapBytes = await read(this.db, this.dir, SNAPSHOT_KEY);
    const snapshot = snapBytes ? decodeOrCorrupt(SNAPSHOT_KEY, this.dir, () => decodeSnapshot(snapBytes, MAX_STORED_SNAPSHOT_BYTES)) : undefined;
    const after = snapshot?.meta.index ?? 0;
    const entries: Entry[] = [];
    try {
      // From the first stored entry: a local compaction keeps a tail of entries at or before the
      // snapshot's index (saveSnapshot), handed to the core with it. In big batches (one trip to
      // LevelDB's thread per LOAD_BATCH_BYTES), the next read while this one is decoded.
      const it = this.db.iterator({ gt: entryKey(0), lt: ENTRY_PREFIX + '~', highWaterMarkBytes: LOAD_BATCH_BYTES });
      try {
        let next = it.nextv(LOAD_BATCH_ENTRIES);
        for (;;) {
          const batch = await next;
          if (batch.length === 0) break;
          next = it.nextv(LOAD_BATCH_ENTRIES);
          next.catch(() => undefined);
          for (const [key, sealed] of batch) {
            const value = unsealOrCorrupt(key, sealed, this.dir);
            const e = decodeOrCorrupt(key, this.dir, () => decodeEntry(value, MAX_STORED_ENTRY_BYTES));
            // The first entry starts the log anywhere up to the one after the snapshot; then no gaps.
            const expected = entries.length > 0 ? entries[entries.length - 1].index + 1 : Math.min(Math.max(e.index, 1), after + 1);
            if (e.index !== expected || key !== entryKey(e.index)) throw new StorageCorruptError(`log gap or misplaced entry at record ${key}: expected index ${expected}, found ${e.index}`, this.dir, { key });
            entries.push(e);
          }
        }
      } finally {
        await it.close();
      }
    } catch (err) {
      throw levelError(err, this.dir, 'reading the log');
    }
    this.first = entries.length > 0 ? entries[0].index : after + 1;
    this.last = entries.length > 0 ? entries[entries.length - 1].index : after;
    return { hardState, snapshot, entries };
  }

  async save(part: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot; state?: StateRowsPart }, sync: boolean): Promise<void> {
    const batch = this.db.batch();
    let first = this.first;
    let last = this.last;
    if (part.snapshot) {
      batch.put(SNAPSHOT_KEY, sealRecord(SNAPSHOT_KEY, encodeSnapshot(part.snapshot)));
      await this.deleteRange(batch, 0, Math.max(part.snapshot.meta.index, last));
      first = part.snapshot.meta.index + 1;
      last = Math.max(last, part.snapshot.meta.index);
      if (last === part.snapshot.meta.index) last = part.snapshot.meta.index;
    }
    if (part.entries.length > 0) {
      const from = part.entries[0].index;
      if (from <= last) await this.deleteRange(batch, from, last);
      for (const e of part.entries) batch.put(entryKey(e.index), sealRecord(entryKey(e.index), encodeEntry(e)));
      last = part.entries[part.entries.length - 1].index;
      if (first === 0 || from < first) first = from;
    }
    const hs = part.hardState;
    if (hs) batch.put(HARD_STATE_KEY, sealRecord(HARD_STATE_KEY, encodeHardState(hs)));
    if (part.state) this.state.putRows(batch, part.state.rows, part.state.appliedIndex);
    // A new term or vote is always synced, then witnessed: the witness never runs ahead of a
    // durable LevelDB record, so "LevelDB older than the witness" can only mean a lost record.
    const newTermOrVote = hs !== undefined && (hs.term !== this.witnessed.term || hs.vote !== this.witnessed.vote);
    if (batch.length === 0) return batch.close();
    mark('batch-built');
    await batch.write({ sync: sync || newTermOrVote });
    this.first = first;
    this.last = last;
    if (newTermOrVote) {
      await writeWitness(this.dir, hs);
      this.witnessed = { ...hs };
    }
  }

  /** After a local compaction: keep the snapshot, drop the entries up to `compactedTo`, keep the tail after it. */
  async saveSnapshot(s: Snapshot, compactedTo: number): Promise<void> {
    const bad = badCompactedTo(s, compactedTo);
    if (bad) throw bad;
    const batch = this.db.batch();
    batch.put(SNAPSHOT_KEY, sealRecord(SNAPSHOT_KEY, encodeSnapshot(s)));
    await this.deleteRange(batch, 0, compactedTo);
    await batch.write({ sync: true });
    this.first = Math.max(this.first, compactedTo + 1);
    if (this.last < s.meta.index) this.last = s.meta.index;
  }

  loadState(withValues = false): Promise<StoredState | undefined> {
    return this.state.load(withValues);
  }

  streamState(withValues = false): Promise<StreamedState | undefined> {
    return this.state.stream(withValues);
  }

  readStateRows(rows: readonly string[]): Promise<(string | undefined)[]> {
    return this.state.read(rows);
  }

  saveState(rows: ReadonlyMap<string, RowValue | null>, appliedIndex: number, sync: boolean, hardState?: HardState): Promise<void> {
    if (!hardState) return this.state.save(rows, appliedIndex, sync);
    // Only a commit index rides along: a new term or vote is synced and witnessed by save().
    if (hardState.term !== this.witnessed.term || hardState.vote !== this.witnessed.vote) return Promise.reject(new Error(`a hard state with a new term or vote (${hardState.term}, ${hardState.vote.slice(-8)}) must be written by save()`));
    return this.state.save(rows, appliedIndex, sync, (batch) => batch.put(HARD_STATE_KEY, sealRecord(HARD_STATE_KEY, encodeHardState(hardState))));
  }

  replaceState(rows: Iterable<[string, RowValue]>, appliedIndex: number): Promise<void> {
    return this.state.replace(rows, appliedIndex);
  }

  openStateView(id: string): Promise<StateView> {
    return this.state.openView(id);
  }

  installStagedState(from: string, id: string): Promise<number> {
    return this.state.installStaged(from, id);
  }

  /** Where a streamed snapshot's rows are staged (node/raft/snapshot-stream.ts). */
  snapshotSink(): SnapshotSink {
    return this.state.sink();
  }

  async getMeta<T>(key: string): Promise<T | undefined> {
    const v = await read(this.db, this.dir, META_PREFIX + key);
    if (v === undefined) return undefined;
    return decodeOrCorrupt(META_PREFIX + key, this.dir, () => JSON.parse(new TextDecoder().decode(v)) as T);
  }

  async putMeta(key: string, value: unknown): Promise<void> {
    await this.db.put(META_PREFIX + key, sealRecord(META_PREFIX + key, new TextEncoder().encode(JSON.stringify(value))), { sync: true });
  }

  async close(): Promise<void> {
    if (this.db.status === 'open') await this.db.close();
  }

  /** Deletes stored entries with from <= index <= to, by key range (never by guessing indexes). */
  private async deleteRange(batch: ReturnType<Db['batch']>, from: number, to: number): Promise<void> {
    for await (const key of this.db.keys({ gte: entryKey(from), lte: entryKey(to) })) batch.del(key);
  }
}

/**
 * Checks the format marker and the hard state against its witness (creating both in a new
 * dir, and sealing a dir written before records carried checksums). Returns the witness.
 */
async function verifyOrCreate(db: Db, dir: string): Promise<HardState> {
  await removeStaleWitnessTemps(dir);
  const witness = await readWitness(dir);
  if (witness === 'damaged') throw new StorageCorruptError(`the hard-state witness ${WITNESS_FILE} fails its checksum`, dir, { key: WITNESS_FILE });
  const format = await read(db, dir, FORMAT_KEY, false);
  if (format === undefined) {
    if (witness !== undefined) throw new StorageCorruptError(`record ${FORMAT_KEY} is missing although ${WITNESS_FILE} exists: LevelDB lost records`, dir, { key: FORMAT_KEY });
    return (await isEmpty(db)) ? createFormat(db, dir) : sealLegacy(db, dir);
  }
  if (new TextDecoder().decode(unsealOrCorrupt(FORMAT_KEY, format, dir)) !== FORMAT) throw new StorageCorruptError(`record ${FORMAT_KEY} names an unknown format`, dir, { key: FORMAT_KEY });
  if (witness === undefined) throw new StorageCorruptError(`the hard-state witness ${WITNESS_FILE} is missing`, dir, { key: WITNESS_FILE });
  const stored = (await readHardState(db, dir)) ?? ZERO_HARD_STATE;
  const stale = staleHardState(stored, witness);
  if (stale) throw new StorageCorruptError(`record ${HARD_STATE_KEY} is older than its witness (${stale}): a synced write was lost`, dir, { key: HARD_STATE_KEY });
  // A crash between the LevelDB write and the witness write leaves the witness behind: catch up.
  if (stored.term !== witness.term || stored.vote !== witness.vote) {
    await writeWitness(dir, stored);
    return { ...stored };
  }
  return witness;
}

/** A new dir: the witness first, then the marker (a crash in between just starts over). */
async function createFormat(db: Db, dir: string): Promise<HardState> {
  await writeWitness(dir, ZERO_HARD_STATE);
  await db.put(FORMAT_KEY, sealRecord(FORMAT_KEY, new TextEncoder().encode(FORMAT)), { sync: true });
  return { ...ZERO_HARD_STATE };
}

/** A dir from before checksums: seal every value in one synced batch (trusting it as before). */
async function sealLegacy(db: Db, dir: string): Promise<HardState> {
  const batch = db.batch();
  let hs = ZERO_HARD_STATE;
  for await (const [key, value] of db.iterator()) {
    if (key === HARD_STATE_KEY) hs = decodeOrCorrupt(key, dir, () => decodeHardState(value));
    batch.put(key, sealRecord(key, value));
  }
  await writeWitness(dir, hs);
  batch.put(FORMAT_KEY, sealRecord(FORMAT_KEY, new TextEncoder().encode(FORMAT)));
  await batch.write({ sync: true });
  return { ...hs };
}

async function isEmpty(db: Db): Promise<boolean> {
  for await (const _ of db.keys({ limit: 1 })) return false;
  return true;
}

async function readHardState(db: Db, dir: string): Promise<HardState | undefined> {
  const v = await read(db, dir, HARD_STATE_KEY);
  return v ? decodeOrCorrupt(HARD_STATE_KEY, dir, () => decodeHardState(v)) : undefined;
}

