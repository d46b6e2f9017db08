// A task's synced workspace on its node (issue 16): when a task of an app that has a workspace
// (the KV record sync/<app> exists) starts, its node materialises the workspace's revision into
// the task's own directory, <dataDir>/workspaces/<taskId>/files — the process driver's working
// directory, the docker driver's /workspace (node/apps/drivers) — and reads the task's files back
// as a new revision when the task stops and on demand (POST /v1/apps/NAME/workspace/sync). The
// bytes move through the same engine as `omni sync` (node/sync/engine.ts): chunks in the node's
// own registry (in process, written as the node itself: protocol/cluster/authz.ts lets a member
// write the workspace of an app whose task is placed on it), the record written through Raft with
// compare-and-set. Per task, next to `files/`: `sync-state.json` (the base: what the task and the
// cluster last agreed on) and `tmp/` (new contents are completed and checked there, then renamed
// into place; the same file system as files/).
//
// Conflicts (seed 003): in a read-back the task is the engine's "client" side. For a service or a
// lab ("agents") the task's copy wins; for a job, a cron run or a service's scheduled run the
// cluster's copy ("the cache") wins; the loser is kept as NAME.conflict on both sides.
import { lstat, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import { recordKey, syncDir, type SyncRecordStore, type SyncRegistry, type SyncSummary } from './engine.js';

const TASK_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
/** A walk of a task's directory stops counting after this many entries (a size check, not an inventory). */
const MAX_WALK_ENTRIES = 1_000_000;

export interface TaskWorkspaceDeps {
  dataDir: string;
  log: Logger;
  /** The app's workspace record as this node's replica has it (undefined: the app has no workspace). */
  readRecord(key: string): Promise<{ value: string; version: number } | undefined>;
  /** Writes the record through Raft as this node (compare-and-set; CONFLICT when another writer moved it). */
  writeRecord(key: string, value: string, expectedVersion: number): Promise<void>;
  /** This node's registry, in process (undefined: the registry is not up yet). */
  registry(): SyncRegistry | undefined;
}

export type ReadBackSummary = Omit<SyncSummary, 'skipped'> & { task: string; skipped: number };

export class TaskWorkspaces {
  /** One sync at a time per task (a stop's read-back and an on-demand one must not interleave). */
  private readonly busy = new Map<string, Promise<unknown>>();

  constructor(private readonly d: TaskWorkspaceDeps) {}

  private root(taskId: string): string {
    if (!TASK_ID_RE.test(taskId)) throw new OmniError('INVALID_ARGUMENT', `invalid task id ${JSON.stringify(taskId.slice(0, 80))}`);
    return join(this.d.dataDir, 'workspaces', taskId);
  }

  /** The task's working directory (its files). */
  dir(taskId: string): string {
    return join(this.root(taskId), 'files');
  }

  /** Whether the app has a synced workspace (its record exists). */
  async appHasWorkspace(app: string): Promise<boolean> {
    return (await this.d.readRecord(recordKey(app))) !== undefined;
  }

  /** Whether this task's workspace was materialised here (and not removed). */
  async prepared(taskId: string): Promise<boolean> {
    return (await stat(join(this.root(taskId), 'sync-state.json')).catch(() => undefined)) !== undefined;
  }

  private records(): SyncRecordStore {
    return {
      read: (key) => this.d.readRecord(key),
      write: (key, value, expectedVersion) => this.d.writeRecord(key, value, expectedVersion),
    };
  }

  private registry(): SyncRegistry {
    const r = this.d.registry();
    if (!r) throw new OmniError('UNAVAILABLE', "this node's registry is not running yet: the workspace cannot be read");
    return r;
  }

  private serial<T>(taskId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.busy.get(taskId) ?? Promise.resolve();
    const next = prev.catch(() => undefined).then(fn);
    this.busy.set(taskId, next);
    void next.finally(() => {
      if (this.busy.get(taskId) === next) this.busy.delete(taskId);
    }).catch(() => undefined);
    return next;
  }

  /**
   * Materialises the app's workspace into the task's directory (once per task: a restart of the
   * same task keeps its files). Returns the directory. The disk size (limitBytes) is checked
   * before anything is written.
   */
  prepare(taskId: string, app: string, limitBytes?: number): Promise<string> {
    return this.serial(taskId, async () => {
      const root = this.root(taskId);
      const dir = this.dir(taskId);
      if (await this.prepared(taskId)) return dir;
      await mkdir(dir, { recursive: true });
      const r = await syncDir({
        records: this.records(),
        registry: this.registry(),
        app,
        dir,
        direction: 'pull',
        stateFile: join(root, 'sync-state.json'),
        tmpDir: join(root, 'tmp'),
        ...(limitBytes !== undefined ? { limitBytes } : {}),
      });
      this.d.log.info(`workspace: ${taskId}: revision ${r.revision} of ${app} materialised (${r.downloaded} files, ${r.bytesDownloaded} bytes)`);
      return dir;
    });
  }

  /**
   * Reads the task's files back into the app's workspace (two-way: the cluster's changes since
   * the last sync come down into the task's directory too). `agent`: a service or a lab (the
   * task's copy wins a conflict), else a job / cron run (the cluster's copy wins). `push`: the
   * task's changes go up, nothing comes down into its directory (the node's own periodic
   * read-back: a running task's files are not changed under it, e.g. by another replica's).
   */
  readBack(taskId: string, app: string, agent: boolean, limitBytes?: number, direction: 'both' | 'push' = 'both'): Promise<ReadBackSummary> {
    return this.serial(taskId, async () => {
      const root = this.root(taskId);
      if (!(await this.prepared(taskId))) throw new OmniError('NOT_FOUND', `task ${taskId} has no workspace on this node`);
      const r = await syncDir({
        records: this.records(),
        registry: this.registry(),
        app,
        dir: this.dir(taskId),
        direction,
        ...(direction === 'both' ? { winner: agent ? ('client' as const) : ('cluster' as const) } : {}),
        // nothing changed on either side since the last read-back: a stat of the directory and one record read (omni sync --watch asks every few seconds)
        quickNoop: true,
        stateFile: join(root, 'sync-state.json'),
        tmpDir: join(root, 'tmp'),
        ...(limitBytes !== undefined ? { limitBytes } : {}),
      });
      if (!r.noop) this.d.log.info(`workspace: ${taskId}: read back into ${app} revision ${r.revision} (${r.uploaded} up, ${r.downloaded} down, ${r.conflicts.length} conflicts)`);
      const { plan: _plan, skipped, ...rest } = r;
      return { ...rest, task: taskId, skipped: skipped.length };
    });
  }

  /** Bytes of regular files under the task's directory (what the disk size limits); undefined when it has none. */
  async size(taskId: string): Promise<number | undefined> {
    if (!(await this.prepared(taskId))) return undefined;
    let total = 0;
    let seen = 0;
    const walk = async (d: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(d, { withFileTypes: true });
      } catch {
        return;
      }
      for (const e of entries) {
        if (++seen > MAX_WALK_ENTRIES) return;
        const p = join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else if (e.isFile()) total += (await lstat(p).catch(() => undefined))?.size ?? 0;
      }
    };
    await walk(this.dir(taskId));
    return total;
  }

  /** Removes what the node keeps of the task's workspace (after the task record is gone). */
  remove(taskId: string): Promise<void> {
    return this.serial(taskId, () => rm(this.root(taskId), { recursive: true, force: true }));
  }
}
