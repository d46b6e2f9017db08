// The Raft driver's storage port (node/raft/raft-store.ts) over a simulated disk: a write goes to
// the page cache at once and completes after a simulated latency (fsync'ed when asked), so the
// real driver's early sends, crashes between write and fsync, torn writes and fsync errors all
// happen. At start the store checks its log against the hard-state witness as RaftStorage does.
import type { RowValue } from '../protocol/cluster/kv-space.js';
import { isBinaryRow } from '../protocol/cluster/row-format.js';
import type { PersistedState } from '../protocol/raft/raft.js';
import type { Entry, HardState, Snapshot } from '../protocol/raft/types.js';
import { badCompactedTo, type RaftStore, type StateRowsPart, type StoredState, type StreamedState } from '../node/raft/raft-store.js';
import type { StateView } from '../node/raft/state-storage.js';
import { staleHardState } from '../node/raft/hard-state-witness.js';
import { StorageCorruptError } from '../node/raft/storage-integrity.js';
import { SIM_APPLIED_ROW, type SimDisk, type StageOp } from './disk.js';
import type { SnapshotSink } from '../node/raft/snapshot-stream.js';

export interface SimStoreIo {
  /** Whether the process that owns this store still runs: a crashed process writes nothing more. */
  alive(): boolean;
  /** Runs fn after delayMs of virtual time, unless the node crashed meanwhile. */
  later(delayMs: number, fn: () => void): void;
  nowMs(): number;
  /** Latency of one write (random per write). */
  writeLatencyMs(): number;
  /** Whether this fsync fails (EIO). */
  fsyncFails(): boolean;
}

/** What a write of a crashed process does: nothing, ever. */
const DEAD: Promise<void> = new Promise<void>(() => undefined);

export class SimStore implements RaftStore {
  readonly dir: string;

  constructor(
    private readonly disk: SimDisk,
    private readonly io: SimStoreIo,
    name: string,
  ) {
    this.dir = `sim:${name}`;
  }

  load(): Promise<PersistedState> {
    const state = this.disk.load();
    const witness = this.disk.witness;
    const stale = witness ? staleHardState(state.hardState, witness) : undefined;
    if (stale) return Promise.reject(new StorageCorruptError(`a synced write was lost: ${stale}`, this.dir));
    return Promise.resolve(state);
  }

  save(part: { hardState?: HardState; entries: Entry[]; snapshot?: Snapshot; state?: StateRowsPart }, sync: boolean): Promise<void> {
    if (!this.io.alive()) return DEAD;
    if (part.entries.length === 0 && !part.hardState && !part.snapshot && !part.state) return new Promise((resolve) => this.io.later(0, resolve));
    this.disk.write(
      {
        ...(part.snapshot ? { snapshot: { snapshot: part.snapshot, replaceLog: true } } : {}),
        entries: part.entries,
        ...(part.hardState ? { hardState: part.hardState } : {}),
        ...(part.state ? { state: { rows: new Map(part.state.rows), appliedIndex: part.state.appliedIndex, replace: false } } : {}),
      },
      false,
      this.io.nowMs(),
    );
    return this.complete(sync);
  }

  saveSnapshot(s: Snapshot, compactedTo: number): Promise<void> {
    if (!this.io.alive()) return DEAD;
    const bad = badCompactedTo(s, compactedTo);
    if (bad) return Promise.reject(bad);
    this.disk.write({ snapshot: { snapshot: s, replaceLog: false, compactedTo }, entries: [] }, false, this.io.nowMs());
    return this.complete(true);
  }

  loadState(withValues = false): Promise<StoredState | undefined> {
    return Promise.resolve(this.disk.loadState(withValues));
  }

  streamState(withValues = false): Promise<StreamedState | undefined> {
    const st = this.disk.loadState(withValues);
    return Promise.resolve(st && { appliedIndex: st.appliedIndex, batches: (async function* () { yield st.rows; })() });
  }

  readStateRows(rows: readonly string[]): Promise<(string | undefined)[]> {
    const values = rows.map((r) => this.disk.readStateRow(r));
    return new Promise((resolve) => this.io.later(0, () => resolve(values)));
  }

  saveState(rows: ReadonlyMap<string, RowValue | null>, appliedIndex: number, sync: boolean, hardState?: HardState): Promise<void> {
    if (!this.io.alive()) return DEAD;
    const write = { entries: [], ...(hardState ? { hardState } : {}), state: { rows: new Map(rows), appliedIndex, replace: false } };
    // Unsynced, it only lands in LevelDB's memtable and log buffer: no disk latency, but (as
    // LevelDB's batch) readers see it only once the write completes.
    if (!sync) {
      return new Promise((resolve) =>
        this.io.later(0, () => {
          this.disk.write(write, false, this.io.nowMs());
          resolve();
        }),
      );
    }
    this.disk.write(write, false, this.io.nowMs());
    return this.complete(sync);
  }

  replaceState(rows: Iterable<[string, RowValue]>, appliedIndex: number): Promise<void> {
    if (!this.io.alive()) return DEAD;
    this.disk.write({ entries: [], state: { rows: new Map(rows), appliedIndex, replace: true } }, false, this.io.nowMs());
    return this.complete(true);
  }

  /** A view of the rows as a read sees them now (copied: later writes do not change it). */
  openStateView(id: string): Promise<StateView> {
    if (!this.io.alive()) return DEAD as Promise<never>;
    const st = this.disk.current().state;
    if (!st) return Promise.reject(new Error('no state rows are stored yet'));
    const rows: [string, RowValue][] = [[SIM_APPLIED_ROW, String(st.appliedIndex)], ...[...st.rows].sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))];
    const utf8 = new TextEncoder();
    return Promise.resolve({
      id,
      appliedIndex: st.appliedIndex,
      async *rows(afterKey: Uint8Array | undefined) {
        const after = afterKey && new TextDecoder().decode(afterKey);
        for (const [k, v] of rows) if (after === undefined || k > after) yield [utf8.encode(k), typeof v === 'string' ? utf8.encode(v) : v] as [Uint8Array, Uint8Array];
      },
      close: () => Promise.resolve(),
    });
  }

  installStagedState(from: string, id: string): Promise<number> {
    if (!this.io.alive()) return DEAD as Promise<never>;
    const st = this.disk.current().staged;
    if (!st || st.from !== from || st.id !== id || !st.complete) return Promise.reject(new Error(`no complete snapshot ${id} from ${from} is staged`));
    const applied = Number(st.rows.get(SIM_APPLIED_ROW));
    this.disk.write({ entries: [], stage: { op: 'install', from, id } }, false, this.io.nowMs());
    return this.complete(true).then(() => applied);
  }

  /** Where a streamed snapshot is staged (as StateStorage's sink, over the simulated disk). */
  snapshotSink(): SnapshotSink {
    const text = new TextDecoder();
    const staged = () => this.disk.current().staged;
    const stage = (op: StageOp): Promise<void> => {
      if (!this.io.alive()) return DEAD;
      this.disk.write({ entries: [], stage: op }, false, this.io.nowMs());
      return this.complete(true);
    };
    return {
      resumeAfter: async (from, id) => {
        const st = staged();
        if (st && st.from === from && st.id === id && !st.complete) return st.lastKey === undefined ? undefined : new TextEncoder().encode(st.lastKey);
        await stage({ op: 'start', from, id });
        return undefined;
      },
      write: async (from, id, rows) => {
        const st = staged();
        if (!st || st.from !== from || st.id !== id || st.complete) throw new Error(`snapshot ${id} from ${from} is not being staged`);
        await stage({ op: 'rows', from, id, rows: rows.map(([k, v]): [string, RowValue] => {
          const key = text.decode(k);
          return [key, isBinaryRow(key, v) ? new Uint8Array(v) : text.decode(v)];
        }) });
      },
      complete: async (from, id) => {
        const st = staged();
        if (!st || st.from !== from || st.id !== id) throw new Error(`snapshot ${id} from ${from} is not being staged`);
        await stage({ op: 'complete', from, id });
      },
      abort: async (from, id) => {
        const st = staged();
        if (st && st.from === from && st.id === id) await stage({ op: 'drop' });
      },
    };
  }

  reopen(): Promise<void> {
    return Promise.resolve();
  }

  private complete(sync: boolean): Promise<void> {
    const fails = sync && this.io.fsyncFails();
    return new Promise((resolve, reject) => {
      this.io.later(this.io.writeLatencyMs(), () => {
        if (fails) {
          // The write stays in the page cache, maybe to be lost: the driver must stop.
          reject(Object.assign(new Error('EIO: fsync failed (simulated)'), { code: 'EIO' }));
          return;
        }
        if (sync) this.disk.sync();
        resolve();
      });
    });
  }
}
