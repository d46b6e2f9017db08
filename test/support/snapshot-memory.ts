// In-memory SnapshotSource and SnapshotSink for the snapshot-stream tests and benchmark: the
// source serves sorted rows and records where each read started; the sink keeps what it was
// given per (from, id), records every call and flags a row written twice.
import { randomBytes } from 'node:crypto';
import type { SnapshotSink, SnapshotSource } from '../../node/raft/snapshot-stream.js';
import { compareKeys } from '../../protocol/raft/snapshot-wire.js';

export type Row = [Uint8Array, Uint8Array];

/** `count` rows of `valueBytes` random bytes each, keys `row/00000000`… in ascending order. */
export function makeRows(count: number, valueBytes: number): Row[] {
  const pool = randomBytes(count * valueBytes);
  const enc = new TextEncoder();
  return Array.from({ length: count }, (_, i) => [enc.encode(`row/${String(i).padStart(8, '0')}`), pool.subarray(i * valueBytes, (i + 1) * valueBytes)]);
}

export class MemorySource implements SnapshotSource {
  /** The afterKey of every rows() call, in order. */
  readonly reads: (Uint8Array | undefined)[] = [];
  constructor(
    readonly id: string,
    private readonly data: Row[],
  ) {}

  async *rows(afterKey: Uint8Array | undefined, signal: AbortSignal): AsyncIterable<Row> {
    this.reads.push(afterKey);
    let i = 0;
    if (afterKey !== undefined) {
      let lo = 0;
      let hi = this.data.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (compareKeys(this.data[mid][0], afterKey) <= 0) lo = mid + 1;
        else hi = mid;
      }
      i = lo;
    }
    for (; i < this.data.length; i++) {
      signal.throwIfAborted();
      yield this.data[i];
    }
  }
}

interface Transfer {
  rows: Row[];
  keys: Set<string>;
  duplicates: number;
}

export class MemorySink implements SnapshotSink {
  readonly transfers = new Map<string, Transfer>();
  readonly calls: string[] = [];
  /** Row bytes of each write, in order. */
  readonly writeBytes: number[] = [];
  readonly completed: { from: string; id: string; rowCount: number }[] = [];
  readonly aborted: { from: string; id: string }[] = [];
  /** What resumeAfter answered, in order. */
  readonly resumeAnswers: (Uint8Array | undefined)[] = [];
  /** Runs inside each write (1-based count), after the rows are stored and before it resolves. */
  onWrite: ((n: number, rowsSoFar: number) => Promise<void> | void) | undefined;
  private writes = 0;

  private key(from: string, id: string): string {
    return `${from}/${id}`;
  }

  transfer(from: string, id: string): Transfer {
    let t = this.transfers.get(this.key(from, id));
    if (!t) this.transfers.set(this.key(from, id), (t = { rows: [], keys: new Set(), duplicates: 0 }));
    return t;
  }

  async resumeAfter(from: string, id: string): Promise<Uint8Array | undefined> {
    this.calls.push('resumeAfter');
    const rows = this.transfers.get(this.key(from, id))?.rows;
    const answer = rows && rows.length > 0 ? rows[rows.length - 1][0] : undefined;
    this.resumeAnswers.push(answer);
    return answer;
  }

  async write(from: string, id: string, rows: Row[]): Promise<void> {
    this.calls.push('write');
    const t = this.transfer(from, id);
    let bytes = 0;
    for (const [k, v] of rows) {
      const s = Buffer.from(k).toString('hex');
      if (t.keys.has(s)) t.duplicates++;
      t.keys.add(s);
      t.rows.push([k, v]);
      bytes += k.length + v.length;
    }
    this.writeBytes.push(bytes);
    await this.onWrite?.(++this.writes, t.rows.length);
  }

  async complete(from: string, id: string, rowCount: number): Promise<void> {
    this.calls.push('complete');
    this.completed.push({ from, id, rowCount });
  }

  async abort(from: string, id: string): Promise<void> {
    this.calls.push('abort');
    this.aborted.push({ from, id });
    this.transfers.delete(this.key(from, id));
  }

  async *stagedRows(from: string, id: string, signal: AbortSignal): AsyncIterable<Row> {
    this.calls.push('stagedRows');
    for (const row of [...(this.transfers.get(this.key(from, id))?.rows ?? [])]) {
      signal.throwIfAborted();
      yield row;
    }
  }
}
