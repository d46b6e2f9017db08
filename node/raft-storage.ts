// Durable Raft storage on LevelDB (classic-level): hard state, log entries and the latest
// snapshot, plus node-local metadata. One Ready's durable parts go in one atomic batch,
// fsync'd when Raft says so, before any of that Ready's messages are sent.
import { Level } from 'level';
import { mkdir } from 'node:fs/promises';
import { decodeEntry, decodeHardState, decodeSnapshot, encodeEntry, encodeHardState, encodeSnapshot } from '../protocol/codec.js';
import type { Entry, HardState, Snapshot } from '../protocol/raft/types.js';
import type { PersistedState } from '../protocol/raft/raft.js';
import { NONE } from '../protocol/raft/types.js';

const ENTRY_PREFIX = 'e/';
const HARD_STATE_KEY = 'hs';
const SNAPSHOT_KEY = 'snap';
const META_PREFIX = 'm/';
/** Largest stored records we will decode (the transport caps messages lower). */
export const MAX_STORED_SNAPSHOT_BYTES = 64 * 1024 * 1024;
export const MAX_STORED_ENTRY_BYTES = 16 * 1024 * 1024;

export class StorageCorruptError extends Error {
  readonly code = 'STORAGE_CORRUPT';
  constructor(message: string) {
    super(message);
    this.name = 'StorageCorruptError';
  }
}

/** Fixed-width hex so LevelDB's byte order is index order. */
function entryKey(index: number): string {
  return ENTRY_PREFIX + index.toString(16).padStart(16, '0');
}

export class RaftStorage {
  private first = 0;
  private last = 0;

  private constructor(private readonly db: Level<string, Uint8Array>) {}

  static async open(dir: string): Promise<RaftStorage> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
    await db.open();
    return new RaftStorage(db);
  }

  firstIndex(): number {
    return this.first;
  }

  lastIndex(): number {
    return this.last;
  }

  async load(): Promise<PersistedState> {
    const hsBytes = await this.db.get(HARD_STATE_KEY);
    const snapBytes = await this.db.get(SNAPSHOT_KEY);
    const hardState: HardState = hsBytes ? decodeOrCorrupt(HARD_STATE_KEY, () => decodeHardState(hsBytes)) : { term: 0, vote: NONE, commit: 0 };
    const snapshot = snapBytes ? decodeOrCorrupt(SNAPSHOT_KEY, () => decodeSnapshot(snapBytes, MAX_STORED_SNAPSHOT_BYTES)) : undefined;
    const after = snapshot?.meta.index ?? 0;
    const entries: Entry[] = [];
    for await (const [key, value] of this.db.iterator({ gt: entryKey(after), lt: ENTRY_PREFIX + '~' })) {
      const e = decodeOrCorrupt(key, () => decodeEntry(value, MAX_STORED_ENTRY_BYTES));
      const expected = (entries.length > 0 ? entries[entries.length - 1].index : after) + 1;
      if (e.index !== expected || key !== entryKey(e.index)) throw new StorageCorruptError(`log gap or misplaced entry at ${key}: expected index ${expected}, found ${e.index}`);
      entries.push(e);
    }
    this.first = entries.length > 0 ? entries[0].index : after + 1;
    this.last = entries.length > 0 ? entries[entries.length - 1].index : after;
    return { hardState, snapshot, entries };
  }

  async save(part: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot }, sync: boolean): Promise<void> {
    const batch = this.db.batch();
    let first = this.first;
    let last = this.last;
    if (part.snapshot) {
      batch.put(SNAPSHOT_KEY, encodeSnapshot(part.snapshot));
      await this.deleteRange(batch, 0, Math.max(part.snapshot.meta.index, last));
      first = part.snapshot.meta.index + 1;
      last = Math.max(last, part.snapshot.meta.index);
      if (last === part.snapshot.meta.index) last = part.snapshot.meta.index;
    }
    if (part.entries.length > 0) {
      const from = part.entries[0].index;
      if (from <= last) await this.deleteRange(batch, from, last);
      for (const e of part.entries) batch.put(entryKey(e.index), encodeEntry(e));
      last = part.entries[part.entries.length - 1].index;
      if (first === 0 || from < first) first = from;
    }
    if (part.hardState) batch.put(HARD_STATE_KEY, encodeHardState(part.hardState));
    if (batch.length === 0) return batch.close();
    await batch.write({ sync });
    this.first = first;
    this.last = last;
  }

  /** After a local compaction: keep the snapshot, drop the entries it covers. */
  async saveSnapshot(s: Snapshot): Promise<void> {
    const batch = this.db.batch();
    batch.put(SNAPSHOT_KEY, encodeSnapshot(s));
    await this.deleteRange(batch, 0, s.meta.index);
    await batch.write({ sync: true });
    this.first = s.meta.index + 1;
    if (this.last < s.meta.index) this.last = s.meta.index;
  }

  async getMeta<T>(key: string): Promise<T | undefined> {
    const v = await this.db.get(META_PREFIX + key);
    if (v === undefined) return undefined;
    return decodeOrCorrupt(META_PREFIX + key, () => JSON.parse(new TextDecoder().decode(v)) as T);
  }

  async putMeta(key: string, value: unknown): Promise<void> {
    await this.db.put(META_PREFIX + key, new TextEncoder().encode(JSON.stringify(value)), { sync: true });
  }

  async close(): Promise<void> {
    if (this.db.status === 'open') await this.db.close();
  }

  /** Deletes stored entries with from <= index <= to, by key range (never by guessing indexes). */
  private async deleteRange(batch: ReturnType<Level<string, Uint8Array>['batch']>, from: number, to: number): Promise<void> {
    for await (const key of this.db.keys({ gte: entryKey(from), lte: entryKey(to) })) batch.del(key);
  }
}

function decodeOrCorrupt<T>(key: string, decode: () => T): T {
  try {
    return decode();
  } catch (err) {
    throw new StorageCorruptError(`stored record ${key} cannot be decoded (${(err as Error).message}); the data dir is damaged`);
  }
}
