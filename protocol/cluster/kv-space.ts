// The kv key space of ClusterState over its two stores: the apps' records (record-store.ts:
// keys under RECORD_PREFIXES, a protobuf row each) and every other key (kv-index.ts: pages).
// Each key lives in exactly one of them, chosen by its prefix; listing merges both in key order.
// Pure: no I/O.
import { RECORD_PREFIXES, recordKindOf } from '../apps/record-codec.js';
import { InvalidFieldError } from './commands.js';
import { KvIndex, type KvEntry } from './kv-index.js';
import { RecordStore } from './record-store.js';

export type RowValue = string | Uint8Array;

export class KvSpace {
  constructor(
    readonly pages: KvIndex,
    readonly records: RecordStore = new RecordStore(),
  ) {}

  #of(key: string): KvIndex | RecordStore {
    return recordKindOf(key) ? this.records : this.pages;
  }

  get size(): number {
    return this.pages.size + this.records.size;
  }

  get(key: string): KvEntry | undefined {
    return this.#of(key).get(key);
  }

  has(key: string): boolean {
    return this.#of(key).has(key);
  }

  set(e: KvEntry): void {
    this.#of(e.key).set(e);
  }

  delete(key: string): boolean {
    return this.#of(key).delete(key);
  }

  /** Every record with key >= from, in key order, from both stores. */
  *entries(from = ''): IterableIterator<KvEntry> {
    const a = this.pages.entries(from);
    const b = this.records.entries(from);
    let x = a.next();
    let y = b.next();
    while (!x.done || !y.done) {
      if (y.done || (!x.done && x.value.key < y.value.key)) {
        yield x.value;
        x = a.next();
      } else {
        yield y.value;
        y = b.next();
      }
    }
  }

  /**
   * The records whose key starts with prefix, in key order: only from the store(s) that can hold
   * such keys (listing a registry prefix never sorts the apps' records).
   */
  *withPrefix(prefix: string): IterableIterator<KvEntry> {
    const inRecords = RECORD_PREFIXES.some(([p]) => p.startsWith(prefix) || prefix.startsWith(p));
    const inPages = !RECORD_PREFIXES.some(([p]) => prefix.startsWith(p));
    const source = inRecords && inPages ? this.entries(prefix) : inRecords ? this.records.entries(prefix) : this.pages.entries(prefix);
    for (const e of source) {
      if (!e.key.startsWith(prefix)) return;
      yield e;
    }
  }

  sumSizeBytes(): number {
    return this.pages.sumSizeBytes() + this.records.sumSizeBytes();
  }

  get hasDirty(): boolean {
    return this.pages.hasDirty || this.records.hasDirty;
  }

  takeDirty(out: Map<string, RowValue | null>): void {
    this.records.takeDirty(out);
    for (const [row, text] of this.pages.takeDirty()) out.set(row, text);
  }

  clearDirty(): void {
    this.pages.clearDirty();
    this.records.clearDirty();
  }

  /**
   * Moves records kept in kv pages (as a state written before record rows keeps them) to the
   * record store; returns how many moved. Their pages and rows are then dirty (written by the
   * next takeDirty). A key found in both is InvalidFieldError (rows that do not hold together).
   */
  moveRecordsOutOfPages(): number {
    let moved = 0;
    for (const [prefix] of RECORD_PREFIXES) {
      const found: KvEntry[] = [];
      for (const e of this.pages.entries(prefix)) {
        if (!e.key.startsWith(prefix)) break;
        found.push(e);
      }
      for (const e of found) {
        if (this.records.has(e.key)) throw new InvalidFieldError(e.key, 'is both in a kv page and in a record row');
        this.pages.delete(e.key);
        this.records.set(e);
        moved++;
      }
    }
    return moved;
  }
}
