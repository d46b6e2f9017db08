// Typed tables of the apps' records (Nomad MemDB style), kept by the state machine beside the
// kv records they mirror: every apply that changes a key under apps/, tasks/, taskstatus/ or
// volumes/ updates its table and the secondary indexes. A record is decoded into a typed,
// frozen object once, when first read after it changed (the value text is the kv's own string,
// shared, until then), so a follower pays nothing for the statuses only a leader reads.
// Readers (orchestrator, agents, API, simulator) ask the tables instead of scanning a prefix
// and parsing every value on every round.
//
// Tables and indexes:
//   apps          name → AppRecord                       (apps/<name>)
//   tasks         id → TaskRecord                        (tasks/<id>)
//     by node     node id → task ids                     (the agent's round, drains)
//     by app      app name → task ids                    (the orchestrator's plan, the API)
//   statuses      task id → TaskStatusRecord             (taskstatus/<id>: statuses by task)
//   volume pins   app name → volume → node id            (volumes/<app>/<volume>)
//
// Derived state only: the rows on disk and snapshots hold the kv records, and a start rebuilds
// the tables from them (ClusterState loads the rows; the log is not replayed): the tables take
// each record's text as it is (no decoding), and the tasks-by-node and by-app indexes, which
// need every task record parsed, are built by the first query that uses them, not by the start. A value that is
// not a JSON object (never written by Omni) is in no table, as parseRecord skipped it before.
// Pure: no I/O, deterministic.
import { APP_PREFIX, STATUS_PREFIX, TASK_PREFIX, VOLUME_PREFIX, parseRecord, type AppRecord, type TaskRecord, type TaskStatusRecord } from './model.js';
import { EncodedRecord } from './record-codec.js';

/** A record's value as the state holds it: its JSON text, or its protobuf (record-codec.ts). */
export type HeldRecord = string | EncodedRecord;

/** The kv prefixes the tables mirror. */
export const TABLE_PREFIXES: readonly string[] = [APP_PREFIX, TASK_PREFIX, STATUS_PREFIX, VOLUME_PREFIX];

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
  }
  return v;
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * A table keyed by id, with its values in id order on demand (cached until the next change).
 * A row is kept as the record, or as its text until first read (decoded then, once): a
 * follower whose orchestrator never reads statuses never pays to decode them.
 */
class Table<T> {
  readonly #rows = new Map<string, T | HeldRecord | typeof MALFORMED>();
  #sorted: T[] | undefined;
  get(id: string): T | undefined {
    const v = this.#rows.get(id);
    if (v === MALFORMED) return undefined;
    if (typeof v !== 'string' && !(v instanceof EncodedRecord)) return v;
    const rec = decode<T>(v);
    // A value that is no JSON object (never written by Omni) is in no table, as parseRecord skipped it.
    this.#rows.set(id, rec === undefined ? MALFORMED : rec);
    return rec;
  }
  /** A decoded record, or its text or protobuf (decoded when first read); undefined deletes. */
  set(id: string, v: T | HeldRecord | undefined): void {
    if (v === undefined) {
      if (!this.#rows.delete(id)) return;
    } else this.#rows.set(id, v);
    this.#sorted = undefined;
  }
  /** A row as stored, not decoded: its text or protobuf until first read, then its record (undefined: none or malformed). */
  peek(id: string): T | HeldRecord | undefined {
    const v = this.#rows.get(id);
    return v === MALFORMED ? undefined : v;
  }
  /** Every row by id (UTF-16 code unit order: a prefix scan's order). */
  all(): readonly T[] {
    if (!this.#sorted) {
      const out: T[] = [];
      for (const k of [...this.#rows.keys()].sort(compare)) {
        const rec = this.get(k);
        if (rec !== undefined) out.push(rec);
      }
      this.#sorted = Object.freeze(out) as T[];
    }
    return this.#sorted;
  }
}

const MALFORMED = Symbol('malformed');

/** A secondary index: value → ids, and id → value. */
class Index {
  readonly #ids = new Map<string, Set<string>>();
  readonly #of = new Map<string, string>();
  set(id: string, value: string | undefined): void {
    const before = this.#of.get(id);
    if (before === value) return;
    if (before !== undefined) {
      const set = this.#ids.get(before)!;
      set.delete(id);
      if (set.size === 0) this.#ids.delete(before);
      this.#of.delete(id);
    }
    if (value !== undefined) {
      let set = this.#ids.get(value);
      if (!set) this.#ids.set(value, (set = new Set()));
      set.add(id);
      this.#of.set(id, value);
    }
  }
  /** The ids under value, in id order. */
  ids(value: string): string[] {
    return [...(this.#ids.get(value) ?? [])].sort(compare);
  }
}

export class AppTables {
  readonly #apps = new Table<AppRecord>();
  readonly #tasks = new Table<TaskRecord>();
  readonly #statuses = new Table<TaskStatusRecord>();
  readonly #tasksByNode = new Index();
  readonly #tasksByApp = new Index();
  readonly #volumePins = new Map<string, Map<string, string>>();
  /**
   * Tasks changed since the indexes were last brought up to date, while they are built lazily:
   * from the start (a restart loads every task record; the indexes are built by the first query
   * that needs them, not by the start) until that query. Undefined once built: from then on
   * every change updates the indexes as it is applied.
   */
  #unindexed: Set<string> | undefined = new Set();

  /** A kv record changed (value undefined: deleted). Keys outside the tables' prefixes are ignored. */
  onKv(key: string, value: HeldRecord | undefined): void {
    if (key.startsWith(TASK_PREFIX)) {
      const id = key.slice(TASK_PREFIX.length);
      this.#tasks.set(id, value);
      if (this.#unindexed) this.#unindexed.add(id);
      // Parsed now for the indexes; the table keeps the text (decoded again, once, when first read).
      else this.#index(id, decode<TaskRecord>(value));
    } else if (key.startsWith(STATUS_PREFIX)) {
      this.#statuses.set(key.slice(STATUS_PREFIX.length), value);
    } else if (key.startsWith(APP_PREFIX)) {
      this.#apps.set(key.slice(APP_PREFIX.length), value);
    } else if (key.startsWith(VOLUME_PREFIX)) {
      const rest = key.slice(VOLUME_PREFIX.length);
      const slash = rest.indexOf('/');
      if (slash < 0) return;
      const app = rest.slice(0, slash);
      const volume = rest.slice(slash + 1);
      let pins = this.#volumePins.get(app);
      if (value === undefined) {
        if (pins?.delete(volume) && pins.size === 0) this.#volumePins.delete(app);
        return;
      }
      if (!pins) this.#volumePins.set(app, (pins = new Map()));
      pins.set(volume, typeof value === 'string' ? value : value.text());
    }
  }

  #index(id: string, t: TaskRecord | undefined): void {
    this.#tasksByNode.set(id, typeof t?.nodeId === 'string' ? t.nodeId : undefined);
    this.#tasksByApp.set(id, typeof t?.app === 'string' ? t.app : undefined);
  }

  /** Brings the indexes up to date with the tasks changed while they were deferred (see #unindexed). */
  #indexes(): void {
    const pending = this.#unindexed;
    if (!pending) return;
    this.#unindexed = undefined;
    for (const id of pending) {
      const v = this.#tasks.peek(id);
      this.#index(id, typeof v === 'string' || v instanceof EncodedRecord ? decode<TaskRecord>(v) : v);
    }
  }

  /** Whether the indexes are still to be built (the first index query builds them). */
  get indexesDeferred(): boolean {
    return this.#unindexed !== undefined;
  }

  // -- queries: frozen records, shared (never copy-on-read) -----------------

  app(name: string): AppRecord | undefined {
    return this.#apps.get(name);
  }
  /** Every app record, by name. */
  apps(): readonly AppRecord[] {
    return this.#apps.all();
  }
  /** The task record at tasks/<id>. */
  task(id: string): TaskRecord | undefined {
    return this.#tasks.get(id);
  }
  /** Every task record, by id. */
  tasks(): readonly TaskRecord[] {
    return this.#tasks.all();
  }
  /** Task ids placed on a node (the tasks-by-node index), by id. */
  taskIdsOnNode(nodeId: string): string[] {
    this.#indexes();
    return this.#tasksByNode.ids(nodeId);
  }
  /** Task records placed on a node, by id. */
  tasksOnNode(nodeId: string): TaskRecord[] {
    this.#indexes();
    return this.#tasksByNode.ids(nodeId).map((id) => this.#tasks.get(id)!);
  }
  /** Task records of an app (the tasks-by-app index), by id. */
  tasksOfApp(app: string): TaskRecord[] {
    this.#indexes();
    return this.#tasksByApp.ids(app).map((id) => this.#tasks.get(id)!);
  }
  /** The status its node wrote for a task (statuses by task). */
  status(taskId: string): TaskStatusRecord | undefined {
    return this.#statuses.get(taskId);
  }
  /** Every status, by task id. */
  statuses(): readonly TaskStatusRecord[] {
    return this.#statuses.all();
  }
  /** The volume → node pins of an app (volumes/<app>/<volume>), by volume. */
  volumePins(app: string): Map<string, string> {
    return new Map([...(this.#volumePins.get(app) ?? [])].sort((x, y) => compare(x[0], y[0])));
  }
}

function decode<T>(value: HeldRecord | undefined): T | undefined {
  const v = value instanceof EncodedRecord ? (value.record() as T) : parseRecord<T>(value);
  return v === undefined ? undefined : deepFreeze(v);
}
