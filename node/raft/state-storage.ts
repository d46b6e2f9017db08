// The replicated state's rows on LevelDB (ClusterState rows, see protocol/cluster/state.ts), in
// the same database as the Raft log, written with the index they are applied up to (etcd's
// consistent index).
//
// Rows live in one of two generations, `s/…` and `sb/…`; key `sg` names the live one. A
// snapshot from the leader is staged in the other generation — row by row as it streams in
// (node/raft/snapshot-stream.ts), resumable after a broken stream, durable once complete — and installed by
// one small atomic batch that flips `sg` and the applied index; the old generation is cleared
// afterwards. So a 1 GiB state never has to fit in one batch or in memory, and a crash at any
// point leaves either the old state or the new one.
//
// A follower is sent a snapshot from a view (openView): a LevelDB explicit snapshot of the live
// generation, consistent at the applied index the view reports.
import { isUtf8 } from 'node:buffer';
import { sealRecord, sealText } from './storage-integrity.js';
import { decodeOrCorrupt, levelError, read, unsealOrCorrupt, type Db } from './level-records.js';
import type { SnapshotSink, SnapshotSource } from './snapshot-stream.js';
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { isBinaryRow } from '../../protocol/cluster/row-format.js';
import { StorageCorruptError } from './storage-integrity.js';

/** The state rows as a start reads them (RaftStore.loadState). */
export interface StoredState {
  appliedIndex: number;
  /** By row key: text, or bytes for a binary row (`r/…`, a protobuf record). */
  rows: [string, RowValue][];
}

export interface StreamedState {
  appliedIndex: number;
  /** The rows by row key, a batch at a time; a row's value as text or as its UTF-8 bytes. */
  batches: AsyncIterable<[string, string | Uint8Array][]>;
}


type Generation = '' | 'b';
const GENERATION_KEY = 'sg';
const APPLIED_KEY = 'sa';
/** Who is being staged: {from, id, lastKey, complete}. */
const STAGE_KEY = 'st';
/** The first row of a view and of a staged snapshot: the index its rows are applied up to. */
export const APPLIED_ROW = '!applied';
/** Rows of spilled kv values (`v/…` in ClusterState): not read at start. */
const VALUE_ROWS = 'v/';
/** Strict; a leading U+FEFF is kept (a kv value may start with one). */
const STRICT_UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
const UTF8 = new TextEncoder();
/** Rows and bytes read per trip to LevelDB when loading the state at start. */
const LOAD_BATCH_ROWS = 4096;
const LOAD_BATCH_BYTES = 4 * 1024 * 1024;
/** Rows written per batch while replacing the state from a snapshot held in memory. */
const REPLACE_BATCH_ROWS = 2000;

const prefixOf = (g: Generation): string => `s${g}/`;
const endOf = (g: Generation): string => `s${g}0`;
const other = (g: Generation): Generation => (g === '' ? 'b' : '');

interface StageRecord {
  from: string;
  id: string;
  lastKey?: string;
  complete?: boolean;
}


/** A consistent view of the live rows, for sending a snapshot. */
export interface StateView extends SnapshotSource {
  readonly appliedIndex: number;
  close(): Promise<void>;
}

export class StateStorage {
  private gen: Generation = '';

  constructor(
    private readonly db: () => Db,
    private readonly dir: string,
  ) {}

  /** Reads which generation is live (after opening or reopening the database). */
  async init(): Promise<void> {
    const g = await read(this.db(), this.dir, GENERATION_KEY);
    const name = g === undefined ? '' : STRICT_UTF8.decode(g);
    if (name !== '' && name !== 'b') throw new StorageCorruptError(`record ${GENERATION_KEY} names an unknown state generation`, this.dir, { key: GENERATION_KEY });
    this.gen = name;
  }

  async load(withValues: boolean): Promise<StoredState | undefined> {
    const streamed = await this.stream(withValues);
    if (!streamed) return undefined;
    const rows: [string, RowValue][] = [];
    for await (const batch of streamed.batches) {
      for (const [key, value] of batch) rows.push([key, typeof value === 'string' || isBinaryRow(key, value) ? value : decodeOrCorrupt(key, this.dir, () => STRICT_UTF8.decode(value))]);
    }
    return { appliedIndex: streamed.appliedIndex, rows };
  }

  /**
   * The applied index and the rows, in batches as they are read: big batches (one trip to
   * LevelDB's thread per LOAD_BATCH_BYTES, not per 16 KiB), the next one read while the caller
   * handles the last. Values are handed out as their UTF-8 bytes (checked against their seal,
   * not decoded: ClusterState.rowsReader decodes what it uses).
   */
  async stream(withValues: boolean): Promise<StreamedState | undefined> {
    const a = await read(this.db(), this.dir, APPLIED_KEY);
    if (a === undefined) return undefined;
    const appliedIndex = decodeOrCorrupt(APPLIED_KEY, this.dir, () => decodeIndex(a));
    const p = prefixOf(this.gen);
    const ranges = withValues
      ? [{ gte: p, lt: endOf(this.gen) }]
      : [{ gte: p, lt: p + VALUE_ROWS }, { gte: p + 'v0', lt: endOf(this.gen) }];
    const db = this.db();
    const dir = this.dir;
    async function* batches(): AsyncIterable<[string, Uint8Array][]> {
      for (const range of ranges) {
        const it = db.iterator({ ...range, highWaterMarkBytes: LOAD_BATCH_BYTES });
        try {
          let next = it.nextv(LOAD_BATCH_ROWS);
          for (;;) {
            const batch = await next;
            if (batch.length === 0) break;
            next = it.nextv(LOAD_BATCH_ROWS);
            // Not awaited if the caller stops early: closing the iterator settles it.
            next.catch(() => undefined);
            yield batch.map(([key, sealed]): [string, Uint8Array] => [key.slice(p.length), unsealOrCorrupt(key, sealed, dir)]);
          }
        } catch (err) {
          throw levelError(err, dir, 'reading the state rows');
        } finally {
          await it.close();
        }
      }
    }
    return { appliedIndex, batches: batches() };
  }

  async read(rows: readonly string[]): Promise<(string | undefined)[]> {
    const keys = rows.map((r) => prefixOf(this.gen) + r);
    let values: (Uint8Array | undefined)[];
    try {
      values = await this.db().getMany(keys);
    } catch (err) {
      throw levelError(err, this.dir, 'reading state rows');
    }
    return values.map((v, i) => (v === undefined ? undefined : this.text(keys[i], v)));
  }

  /** `alsoPut`: more records for the same batch (the raft store's hard state). */
  async save(rows: ReadonlyMap<string, RowValue | null>, appliedIndex: number, sync: boolean, alsoPut?: (batch: ReturnType<ReturnType<typeof this.db>['batch']>) => void): Promise<void> {
    const batch = this.db().batch();
    alsoPut?.(batch);
    this.putRows(batch, rows, appliedIndex);
    await batch.write({ sync });
  }

  /** Adds the rows and their applied index to a batch of this database (the raft store's log writes). */
  putRows(batch: ReturnType<ReturnType<typeof this.db>['batch']>, rows: ReadonlyMap<string, RowValue | null>, appliedIndex: number): void {
    const p = prefixOf(this.gen);
    for (const [row, value] of rows) {
      const key = p + row;
      if (value === null) batch.del(key);
      else batch.put(key, typeof value === 'string' ? sealText(key, value) : sealRecord(key, value));
    }
    batch.put(APPLIED_KEY, sealRecord(APPLIED_KEY, encodeIndex(appliedIndex)));
  }

  /** Replaces every row (a whole snapshot held in memory): staged in batches, then installed. */
  async replace(rows: Iterable<[string, RowValue]>, appliedIndex: number): Promise<void> {
    const id = `local-${appliedIndex}`;
    await this.stageStart('local', id);
    let chunk: [string, RowValue][] = [[APPLIED_ROW, String(appliedIndex)]];
    for (const row of rows) {
      chunk.push(row);
      if (chunk.length >= REPLACE_BATCH_ROWS) {
        await this.stageRows('local', id, chunk);
        chunk = [];
      }
    }
    if (chunk.length > 0) await this.stageRows('local', id, chunk);
    await this.stageDone('local', id);
    await this.installStaged('local', id);
  }

  /** A consistent view of the live rows now, and the index they are applied up to in it. */
  async openView(id: string): Promise<StateView> {
    const db = this.db();
    const snapshot = db.snapshot();
    const p = prefixOf(this.gen);
    const end = endOf(this.gen);
    const dir = this.dir;
    let appliedIndex: number;
    try {
      // Read from the view itself: the applied index and the rows come from the same batch.
      const a = await db.get(APPLIED_KEY, { snapshot });
      if (a === undefined) throw new Error('no state rows are stored yet');
      appliedIndex = decodeOrCorrupt(APPLIED_KEY, dir, () => decodeIndex(unsealOrCorrupt(APPLIED_KEY, a, dir)));
    } catch (err) {
      await snapshot.close();
      throw levelError(err, dir, 'opening a snapshot view');
    }
    return {
      id,
      appliedIndex,
      async *rows(afterKey: Uint8Array | undefined, signal: AbortSignal): AsyncIterable<[Uint8Array, Uint8Array]> {
        const after = afterKey === undefined ? undefined : STRICT_UTF8.decode(afterKey);
        if (after === undefined || after < APPLIED_ROW) yield [UTF8.encode(APPLIED_ROW), UTF8.encode(String(appliedIndex))];
        const range = after === undefined || after < APPLIED_ROW ? { gte: p, lt: end } : { gt: p + after, lt: end };
        try {
          for await (const [key, sealed] of db.iterator({ ...range, snapshot })) {
            if (signal.aborted) return;
            // The stored payload as it is (UTF-8 text, checked by its seal): no decode and re-encode.
            yield [UTF8.encode(key.slice(p.length)), unsealOrCorrupt(key, sealed, dir)];
          }
        } catch (err) {
          throw levelError(err, dir, 'reading a snapshot view');
        }
      },
      close: () => snapshot.close(),
    };
  }

  /** Receives a streamed snapshot into the other generation (SnapshotSink of the stream). */
  sink(): SnapshotSink {
    return {
      resumeAfter: async (from, id) => {
        const st = await this.stage();
        if (st && st.from === from && st.id === id && !st.complete) return st.lastKey === undefined ? undefined : UTF8.encode(st.lastKey);
        await this.stageStart(from, id);
        return undefined;
      },
      write: async (from, id, rows) => {
        // Values are stored as the bytes that came (checked to be UTF-8 text, as every row but a binary one is).
        await this.stageRows(from, id, rows.map(([k, v]) => {
          const key = STRICT_UTF8.decode(k);
          if (!isBinaryRow(key, v) && !isUtf8(v)) throw new Error('a snapshot row value is not UTF-8 text');
          return [key, v];
        }));
      },
      complete: async (from, id) => this.stageDone(from, id),
      abort: async (from, id) => {
        const st = await this.stage();
        if (st && st.from === from && st.id === id) await this.stageStart('', '');
      },
      stagedRows: (from, id, signal) => this.stagedRows(from, id, signal),
    };
  }

  /** The rows staged so far for (from, id), as they came and in the order they came (key order). */
  private async *stagedRows(from: string, id: string, signal: AbortSignal): AsyncIterable<[Uint8Array, Uint8Array]> {
    const st = await this.stage();
    if (!st || st.from !== from || st.id !== id || st.complete) return;
    const g = other(this.gen);
    const p = prefixOf(g);
    try {
      for await (const [key, sealed] of this.db().iterator({ gte: p, lt: endOf(g) })) {
        signal.throwIfAborted();
        yield [UTF8.encode(key.slice(p.length)), unsealOrCorrupt(key, sealed, this.dir)];
      }
    } catch (err) {
      if (signal.aborted) throw err;
      throw levelError(err, this.dir, 'reading a staged snapshot');
    }
  }

  /**
   * Makes the staged snapshot of (from, id) the live state, atomically, and returns its applied
   * index; the old generation is cleared afterwards. Throws when nothing complete is staged.
   */
  async installStaged(from: string, id: string): Promise<number> {
    const st = await this.stage();
    if (!st || st.from !== from || st.id !== id || !st.complete) {
      throw new Error(`no complete snapshot ${id} from ${from} is staged`);
    }
    const next = other(this.gen);
    const appliedKey = prefixOf(next) + APPLIED_ROW;
    const a = await read(this.db(), this.dir, appliedKey);
    if (a === undefined) throw new Error(`the staged snapshot ${id} has no applied index`);
    const appliedIndex = decodeOrCorrupt(appliedKey, this.dir, () => decodeIndex(a));
    const batch = this.db().batch();
    batch.del(appliedKey);
    batch.put(GENERATION_KEY, sealRecord(GENERATION_KEY, UTF8.encode(next)));
    batch.put(APPLIED_KEY, sealRecord(APPLIED_KEY, encodeIndex(appliedIndex)));
    batch.del(STAGE_KEY);
    await batch.write({ sync: true });
    const old = this.gen;
    this.gen = next;
    await this.clear(old);
    return appliedIndex;
  }

  private async stage(): Promise<StageRecord | undefined> {
    const v = await read(this.db(), this.dir, STAGE_KEY);
    return v === undefined ? undefined : decodeOrCorrupt(STAGE_KEY, this.dir, () => JSON.parse(STRICT_UTF8.decode(v)) as StageRecord);
  }

  /** Drops whatever was staged and starts staging (from, id) ('' to just drop). */
  private async stageStart(from: string, id: string): Promise<void> {
    await this.clear(other(this.gen));
    if (from === '') await this.db().del(STAGE_KEY);
    else await this.putStage({ from, id });
  }

  private async stageRows(from: string, id: string, rows: [string, string | Uint8Array][]): Promise<void> {
    if (rows.length === 0) return;
    const st = await this.stage();
    if (!st || st.from !== from || st.id !== id || st.complete) throw new Error(`snapshot ${id} from ${from} is not being staged`);
    const p = prefixOf(other(this.gen));
    const batch = this.db().batch();
    for (const [row, value] of rows) {
      const key = p + row;
      batch.put(key, sealRecord(key, typeof value === 'string' ? UTF8.encode(value) : value));
    }
    const rec: StageRecord = { from, id, lastKey: rows[rows.length - 1][0] };
    batch.put(STAGE_KEY, sealRecord(STAGE_KEY, UTF8.encode(JSON.stringify(rec))));
    // Not synced: the rows and the position go in one batch, so a crash of the machine loses at
    // most the last chunks, never a chunk in part (a process that is killed loses nothing: the
    // batch is in the OS's hands); after a restart the stream resumes from the rows held, their
    // checksum recomputed from them (stagedRows). stageDone's synced write makes every chunk durable.
    await batch.write({ sync: false });
  }

  private async stageDone(from: string, id: string): Promise<void> {
    const st = await this.stage();
    if (!st || st.from !== from || st.id !== id) throw new Error(`snapshot ${id} from ${from} is not being staged`);
    await this.putStage({ ...st, complete: true });
  }

  private async putStage(rec: StageRecord): Promise<void> {
    await this.db().put(STAGE_KEY, sealRecord(STAGE_KEY, UTF8.encode(JSON.stringify(rec))), { sync: true });
  }

  private async clear(g: Generation): Promise<void> {
    try {
      await this.db().clear({ gte: prefixOf(g), lt: endOf(g) });
    } catch (err) {
      throw levelError(err, this.dir, 'clearing old state rows');
    }
  }

  private text(key: string, sealed: Uint8Array): string {
    const value = unsealOrCorrupt(key, sealed, this.dir);
    return decodeOrCorrupt(key, this.dir, () => STRICT_UTF8.decode(value));
  }
}

function encodeIndex(index: number): Uint8Array {
  return UTF8.encode(String(index));
}

function decodeIndex(bytes: Uint8Array): number {
  const n = Number(STRICT_UTF8.decode(bytes));
  if (!Number.isSafeInteger(n) || n < 0) throw new Error('not an index');
  return n;
}
