// The kv records of the apps' tables (keys under apps/, tasks/, taskstatus/: RECORD_PREFIXES of
// protocol/apps/record-codec.ts), kept apart from the kv pages (kv-index.ts): one state row
// each, `r/<kv key>`, a protobuf RecordRow with the record's numbers and its value as a protobuf
// record (AppRec, TaskRec, TaskStatusRec) — or, for a value with no exact protobuf form, its
// text. So a task's status changing writes one small row, not a page of 64 JSON records holding
// JSON text, and the state on disk and in a streamed snapshot holds no JSON inside JSON.
//
// In memory a record is held as its protobuf bytes (smaller than its text); its JSON text (the kv
// API's value) is rendered when read. The same interface as KvIndex for what ClusterState does
// with a record (get, set, delete, entries in key order, dirty rows), so the state keeps one kv
// space over both (kv-space.ts). Pure: no I/O.
import { DecodeError } from '../codec.js';
import { EncodedRecord, decodeRecord, encodeRecordText, recordKindOf, type RecordKind } from '../apps/record-codec.js';
import { InvalidFieldError, decodeMessage, encodeMessage, readKvKey, readKvValue, readSafeInt } from './commands.js';
import { compareKeys, lowerBound, type KvEntry } from './kv-index.js';
import { PROTOBUF_ROW, messageOfRow, protobufRow } from './row-format.js';

export const RECORD_ROW_PREFIX = 'r/';
export const recordRow = (key: string): string => `${RECORD_ROW_PREFIX}${key}`;

/** A stored record: its numbers, and its value as protobuf bytes or (no exact protobuf form) as text. */
class StoredRecord implements KvEntry {
  constructor(
    readonly key: string,
    readonly version: number,
    readonly createIndex: number,
    readonly modIndex: number,
    readonly sizeBytes: number,
    /** The value: its text, or the record it encodes. */
    readonly held: string | EncodedRecord,
  ) {}
  /** The JSON text (rendered from the record when held as one). */
  get value(): string {
    return typeof this.held === 'string' ? this.held : this.held.text();
  }
}

export class RecordStore {
  readonly #records = new Map<string, StoredRecord>();
  /** The keys in order, rebuilt when a key came or went (undefined until then). */
  #sorted: string[] | undefined = [];
  readonly #dirty = new Set<string>();
  /** Keys whose value has no exact protobuf form (kept as text). */
  readonly #asText = new Set<string>();
  #sizeSum = 0;

  get size(): number {
    return this.#records.size;
  }

  get(key: string): KvEntry | undefined {
    return this.#records.get(key);
  }

  has(key: string): boolean {
    return this.#records.has(key);
  }

  /** The record held as protobuf (for the typed tables), its text, or undefined (no such key). */
  held(key: string): string | EncodedRecord | undefined {
    return this.#records.get(key)?.held;
  }

  /** Stores a record (its value given as its JSON text; the key must be under RECORD_PREFIXES). */
  set(e: KvEntry): void {
    const kind = kindOf(e.key);
    if (e.value === undefined) throw new Error(`record ${e.key}: a record's value is always held`);
    const bytes = encodeRecordText(kind, e.value);
    this.#put(new StoredRecord(e.key, e.version, e.createIndex, e.modIndex, e.sizeBytes, bytes ? new EncodedRecord(kind, bytes) : e.value));
  }

  #put(r: StoredRecord): void {
    const prev = this.#records.get(r.key);
    if (!prev) this.#sorted = undefined;
    this.#sizeSum += r.sizeBytes - (prev?.sizeBytes ?? 0);
    this.#records.set(r.key, r);
    if (typeof r.held === 'string') this.#asText.add(r.key);
    else this.#asText.delete(r.key);
    this.#dirty.add(r.key);
  }

  /** Keys of records kept as text (no exact protobuf form: written by hand, or by another build), in key order. */
  keptAsText(): string[] {
    return [...this.#asText].sort(compareKeys);
  }

  delete(key: string): boolean {
    const prev = this.#records.get(key);
    if (!prev) return false;
    this.#records.delete(key);
    this.#asText.delete(key);
    this.#sizeSum -= prev.sizeBytes;
    this.#sorted = undefined;
    this.#dirty.add(key);
    return true;
  }

  /** The records with key >= from, in key order (UTF-16 code units, as KvIndex.entries). */
  *entries(from = ''): IterableIterator<KvEntry> {
    if (!this.#sorted) this.#sorted = [...this.#records.keys()].sort(compareKeys);
    const keys = this.#sorted;
    for (let i = lowerBound(keys, from); i < keys.length; i++) {
      const r = this.#records.get(keys[i]);
      // A key deleted while iterating is skipped (the array is the one from before).
      if (r) yield r;
    }
  }

  sumSizeBytes(): number {
    return this.#sizeSum;
  }

  get hasDirty(): boolean {
    return this.#dirty.size > 0;
  }

  /** Every record counts as changed (to write them all, e.g. moving them out of kv pages). */
  markAllDirty(): void {
    for (const key of this.#records.keys()) this.#dirty.add(key);
  }

  /** The record rows changed since the last call (null: deleted), and forgets them. */
  takeDirty(out: Map<string, string | Uint8Array | null>): void {
    for (const key of this.#dirty) {
      const r = this.#records.get(key);
      out.set(recordRow(key), r ? encodeRow(r) : null);
    }
    this.#dirty.clear();
  }

  clearDirty(): void {
    this.#dirty.clear();
  }

  /** Every record's row, in no particular order (the caller sorts what it writes). */
  *rows(): IterableIterator<[string, Uint8Array]> {
    for (const r of this.#records.values()) yield [recordRow(r.key), encodeRow(r)];
  }

  /** Every record as held (key, protobuf or text), in no particular order: no sort at start. */
  *allHeld(): IterableIterator<[string, string | EncodedRecord]> {
    for (const r of this.#records.values()) yield [r.key, r.held];
  }

  /** A row as rows() and takeDirty() write it, into this store; InvalidFieldError when it does not hold. */
  load(row: string, data: Uint8Array, applied: number): void {
    const key = readKvKey(row.slice(RECORD_ROW_PREFIX.length), row);
    const kind = recordKindOf(key);
    if (!kind) throw new InvalidFieldError(row, 'is not under a record prefix');
    if (this.#records.has(key)) throw new InvalidFieldError(row, 'duplicate key');
    if (data[0] !== PROTOBUF_ROW) throw new InvalidFieldError(row, 'is not a protobuf row');
    // Strictly, as commands are read: an unknown field, a wrong wire type or bad UTF-8 is refused.
    const m = decodeMessage('RecordRow', messageOfRow(data), row);
    const version = readSafeInt(m.version, `${row}.version`, 1);
    const createIndex = readSafeInt(m.createIndex, `${row}.createIndex`, 1);
    const modIndex = readSafeInt(m.modIndex, `${row}.modIndex`, createIndex);
    if (modIndex > applied) throw new InvalidFieldError(`${row}.modIndex`, `must be from ${createIndex} to the applied index ${applied}`);
    const sizeBytes = readSafeInt(m.sizeBytes, `${row}.sizeBytes`, 1);
    let held: string | EncodedRecord;
    if (m.record !== undefined) {
      // A copy: the row's bytes are a view into what the store read.
      const bytes = new Uint8Array(m.record as Uint8Array);
      try {
        decodeRecord(kind, bytes);
      } catch (err) {
        throw new InvalidFieldError(`${row}.record`, err instanceof DecodeError ? err.message : 'does not decode');
      }
      held = new EncodedRecord(kind, bytes);
    } else if (m.text !== undefined) held = readKvValue(m.text, `${row}.text`);
    else throw new InvalidFieldError(row, 'holds no value');
    this.#put(new StoredRecord(key, version, createIndex, modIndex, sizeBytes, held));
  }
}

function kindOf(key: string): RecordKind {
  const kind = recordKindOf(key);
  if (!kind) throw new Error(`kv key ${key} is not under a record prefix`);
  return kind;
}

function encodeRow(r: StoredRecord): Uint8Array {
  const m: Record<string, unknown> = { version: r.version, createIndex: r.createIndex, modIndex: r.modIndex, sizeBytes: r.sizeBytes };
  if (typeof r.held === 'string') m.text = r.held;
  else m.record = r.held.bytes;
  return protobufRow(encodeMessage('RecordRow', m));
}
