// omni sync [DIR] --app NAME [--push|--pull]: a project directory on the client against the app's
// workspace on the cluster. The engine (scan, plan, chunks, manifests, the record's compare-and-
// set) is node/sync/engine.ts, shared with the nodes (a task's working directory); this file is
// the command and the client's way to the cluster: the record through /v1/kv, the chunks through
// the registry's /v2/ (with failover).
import { OmniError } from '../../node/errors.js';
import type { ApiClient } from '../../node/api/client.js';
import type { Direction, SyncPlan } from '../../protocol/sync/plan.js';
import { APP_RE, syncDir, type SyncRecordStore, type SyncRegistry, type SyncSummary } from '../../node/sync/engine.js';
import { encodeSyncCommit } from '../../protocol/sync/commit.js';
import { parse, parseDurationMs, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { registryFor, type FailoverRegistry, type Registry } from './registry-client.js';
import { watchSync } from './sync-watch.js';

export { scanTree, type SyncSummary } from '../../node/sync/engine.js';

/** The workspace record through the HTTP API (/v1/kv, compare-and-set with expectedVersion; a small change with it: /v1/sync/<app>/commit). */
export function apiRecords(client: ApiClient): SyncRecordStore {
  const path = (key: string) => `/v1/kv/${encodeURIComponent(key)}`;
  return {
    read: async (key) => {
      try {
        return await client.get<{ value: string; version: number }>(path(key));
      } catch (err) {
        if (err instanceof OmniError && err.code === 'NOT_FOUND') return undefined;
        throw err;
      }
    },
    write: async (key, value, expectedVersion) => {
      await client.put(path(key), { value, expectedVersion });
    },
    // a small change in one request (node/api/sync-routes.ts)
    commit: async (app, header, blobs, manifests) => client.post<{ untagged?: boolean }>(`/v1/sync/${encodeURIComponent(app)}/commit`, encodeSyncCommit(header, blobs, manifests)),
  };
}

export interface SyncOptions {
  client: ApiClient;
  app: string;
  dir: string;
  direction?: Direction;
  dryRun?: boolean;
  /** The registry to use (default: the one of the node the client talks to, with failover); a function: called at the first registry call (none for a small change). */
  registry?: Registry | (() => Promise<FailoverRegistry>);
  /** Who wins a conflict in a two-way sync (default: the cluster; seed 003). */
  winner?: 'client' | 'cluster';
  /** The app's disk size (bytes): a sync that would make the workspace larger fails (a promise: awaited when the plan is made). */
  limitBytes?: number | Promise<number | undefined>;
  /** Work the cluster's record is read after (the app's tasks writing their files back): the directory is scanned meanwhile. */
  recordAfter?: Promise<unknown>;
  /** Write the record even when the workspace is empty (omni run: the app then has a workspace). */
  ensureRecord?: boolean;
  /** The engine's no-op fast path (one KV read when nothing changed); the plan's trees are then empty. */
  quickNoop?: boolean;
  onProgress?: (p: { bytesUp: number; bytesDown: number; totalUp: number; totalDown: number }) => void;
  /** For tests: called after the chunks went up and before the record is written. */
  beforeCommit?: () => Promise<void>;
}

/** Syncs `dir` with app `app`'s workspace on the cluster; what `omni sync`, `omni run` and `omni stop` call. */
export async function syncProject(opts: SyncOptions): Promise<SyncSummary & { plan: SyncPlan }> {
  const { client, app } = opts;
  if (!APP_RE.test(app) || app.length > 100) throw new UsageError(`--app must be an app name (lower-case letters, digits, . _ -), got ${app}`);
  const registry = typeof opts.registry === 'function' ? whenAsked(opts.registry) : (opts.registry ?? (await registryFor(client, {})));
  try {
    return await syncDir({ blockingScan: true, ...opts, records: apiRecords(client), registry });
  } catch (err) {
    if (err instanceof OmniError && err.code === 'INVALID_ARGUMENT' && /is not a directory$/.test(err.message)) throw new UsageError(err.message);
    throw err;
  }
}

/**
 * The registry `find` finds (a request to the node), asked for at the first call that uses it: a
 * small change committed in one request (and a no-op) makes no registry request at all.
 */
function whenAsked(find: () => Promise<FailoverRegistry>): SyncRegistry {
  let found: Promise<FailoverRegistry> | undefined;
  // a failed lookup is not kept: the engine's retries ask again
  const registry = () => (found ??= find().catch((err: unknown) => {
    found = undefined;
    throw err;
  }));
  return {
    hasBlob: async (repo, digest) => (await registry()).hasBlob(repo, digest),
    uploadBlob: async (repo, digest, path) => (await registry()).uploadBlob(repo, digest, path),
    uploadBytes: async (repo, digest, bytes) => (await registry()).uploadBytes(repo, digest, bytes),
    downloadBlob: async (repo, digest, dest) => (await registry()).downloadBlob(repo, digest, dest),
    manifest: async (repo, digest) => (await registry()).manifest(repo, digest),
    putManifest: async (repo, ref, bytes, mediaType) => (await registry()).putManifest(repo, ref, bytes, mediaType),
    deleteTag: async (repo, tag) => (await registry()).deleteTag(repo, tag),
  };
}

/** What the read-back before a sync found: the app's disk size in bytes (resources.diskMB, which bounds the workspace) and how many of its tasks run. */
export interface ReadBackInfo {
  limitBytes?: number;
  runningTasks: number;
}

/**
 * Before a sync of an app that exists: its running (or stopped, not yet removed) tasks write their
 * files back into the workspace (POST /v1/apps/NAME/workspace/sync), so the sync sees them.
 */
async function readBackFirst(client: ApiClient, app: string, dryRun: boolean): Promise<ReadBackInfo> {
  const a = await client.raw('GET', `/v1/apps/${encodeURIComponent(app)}`);
  if (a.status !== 200) return { runningTasks: 0 };
  const body = a.body as { spec?: { resources?: { diskMB?: number } }; tasks?: { state?: string }[] };
  const diskMB = body.spec?.resources?.diskMB;
  if (!dryRun) {
    const r = await readBackTasks(client, app);
    if ('error' in r) process.stderr.write(`omni sync: the files of ${app}'s tasks were not all written back first (${r.error}); syncing with the workspace as the cluster has it\n`);
  }
  return {
    ...(typeof diskMB === 'number' && diskMB > 0 ? { limitBytes: diskMB * 1024 * 1024 } : {}),
    runningTasks: Array.isArray(body.tasks) ? body.tasks.filter((t) => t?.state === 'running').length : 0,
  };
}

/** Whether a sync changed the cluster's copy of the workspace (something its running tasks do not have yet). */
export function changedWorkspace(s: Pick<SyncSummary, 'dryRun' | 'uploaded' | 'deletedRemote'>): boolean {
  return !s.dryRun && (s.uploaded > 0 || s.deletedRemote > 0);
}

/** What a read-back of an app's tasks did: how many tasks' directories changed, or why a node could not. */
export type Delivery = { reached: number } | { error: string };

/**
 * POST /v1/apps/NAME/workspace/sync: the nodes holding the app's tasks read them back (two-way).
 * A node's refusal is returned; a request that fails on the way throws.
 */
export async function readBackTasks(client: ApiClient, app: string): Promise<Delivery> {
  const r = await client.raw('POST', `/v1/apps/${encodeURIComponent(app)}/workspace/sync`, {});
  if (r.status === 404) return { reached: 0 };
  if (r.status !== 200) return { error: (r.body as { error?: { message?: string } })?.error?.message ?? `HTTP ${r.status}` };
  const nodes = (r.body as { nodes?: { tasks?: { downloaded?: number; deletedLocal?: number }[] }[] }).nodes ?? [];
  return { reached: nodes.flatMap((n) => n.tasks ?? []).filter((t) => (t.downloaded ?? 0) > 0 || (t.deletedLocal ?? 0) > 0).length };
}

/**
 * After a sync that changed the workspace of an app with running tasks: the nodes holding them
 * read them back again (two-way), which writes the new revision into the tasks' directories, so
 * a running service or lab has the files when the command returns (the node's own periodic
 * read-back only sends: it never changes a task's files under it). A failure is not the sync's
 * (the files are on the cluster; a task gets them with the next omni sync or when it starts
 * again): the caller reports it (deliveryNote).
 */
export function deliverToTasks(client: ApiClient, app: string): Promise<Delivery> {
  return readBackTasks(client, app).catch((err: Error) => ({ error: err.message }));
}

/** The line saying what a delivery did (undefined: nothing to say — no running task's files changed). */
export function deliveryNote(app: string, d: Delivery): string | undefined {
  if ('error' in d) return `${app}: the changes are on the cluster but did not reach every running task now (${d.error}); they get them with the next omni sync or when they start again`;
  return d.reached > 0 ? `${app}: the changes reached ${d.reached} running task${d.reached === 1 ? '' : 's'}` : undefined;
}

// ---------------------------------------------------------------- the command

const USAGE = `usage: omni sync [DIR] --app NAME [--push|--pull] [--dry-run] [--json] [flags]
       omni sync [DIR] --app NAME --watch [--interval 2s] [--push|--pull] [--json] [flags]

  Syncs DIR (default .) with the app's workspace on the cluster: two-way by default (a file
  changed on both sides: the cluster's copy wins, yours is kept as NAME.conflict); --push sends
  your changes only (yours win), --pull fetches the cluster's only. The last synced tree is kept in
  DIR/.omni/sync-state.json. What DIR's .gitignore files ignore is left out, both ways (the
  cluster's copies of such paths stay there untouched); so are .omni/, symlinks, devices.

  The app's tasks work in this workspace on their nodes (a process task's working directory, a
  container's /workspace): a task starts from the cluster's copy, and the nodes write their
  running tasks' files back before a sync, so --pull brings what the app wrote; what a sync
  changes on the cluster is written into the running tasks' directories before omni sync
  returns. The app's disk size (resources.diskMB, \`disk:\` in .omni/config.yaml) bounds the
  workspace.

  --watch keeps syncing until Ctrl-C: a change in DIR goes up within a moment (the directory is
  watched), and every --interval (default 2s, at least 200ms) the app's running tasks write their
  files back and DIR is synced again, so what they write comes down. Each sync that moved files
  prints a line (with --json, one JSON object per line); failures are printed and retried with
  backoff. --push only sends (no read-back), --pull only fetches (DIR is not watched).
${CONNECTION_HELP}
`;

export async function sync(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, app: { type: 'string' }, push: { type: 'boolean' }, pull: { type: 'boolean' }, 'dry-run': { type: 'boolean' }, registry: { type: 'string' }, watch: { type: 'boolean' }, interval: { type: 'string' } }, USAGE);
  if (positionals.length > 1) throw new UsageError(USAGE);
  if (values.push && values.pull) throw new UsageError('--push and --pull exclude each other');
  const app = values.app as string | undefined;
  if (!app) throw new UsageError(`--app NAME is required\n\n${USAGE}`);
  const dir = positionals[0] ?? '.';
  if (values.watch && values['dry-run']) throw new UsageError('--watch and --dry-run exclude each other');
  if (values.interval !== undefined && !values.watch) throw new UsageError('--interval goes with --watch');
  const intervalMs = values.interval !== undefined ? parseDurationMs(values.interval as string, '--interval') : 2000;
  if (intervalMs < 200 || intervalMs > 3_600_000) throw new UsageError(`--interval must be between 200ms and 1h, got ${values.interval}`);
  const client = connect(values);
  if (values.watch) {
    try {
      return await watchProject(client, { app, dir, direction: values.push ? 'push' : values.pull ? 'pull' : 'both', intervalMs, json: !!values.json, registryFlags: values });
    } finally {
      client.close();
    }
  }
  const tty = process.stderr.isTTY && !values.json;
  let last = 0;
  try {
    // The read-back goes out while the directory is stat'ed and the state read (the record is read
    // once the app's tasks have written their files back); the registry is asked for when needed.
    const readBack = readBackFirst(client, app, !!values['dry-run']);
    readBack.catch(() => undefined); // the sync reports it
    const r = await syncProject({
      client,
      app,
      dir,
      limitBytes: readBack.then((b) => b.limitBytes),
      recordAfter: readBack,
      registry: values.registry !== undefined ? await registryFor(client, values) : () => registryFor(client, values), // --registry is checked at once (no request)
      direction: values.push ? 'push' : values.pull ? 'pull' : 'both',
      quickNoop: true,
      dryRun: !!values['dry-run'],
      onProgress: tty
        ? (p) => {
            const now = Date.now();
            if (now - last < 200) return;
            last = now;
            process.stderr.write(`\r  up ${(p.bytesUp / 1e6).toFixed(1)}/${(p.totalUp / 1e6).toFixed(1)} MB  down ${(p.bytesDown / 1e6).toFixed(1)}/${(p.totalDown / 1e6).toFixed(1)} MB   `);
          }
        : undefined,
    });
    if (tty && last) process.stderr.write('\n');
    // the running tasks get what this sync sent (their directories are written now, not at their next start)
    const delivery = changedWorkspace(r) && (await readBack.catch(() => ({ runningTasks: 0 }))).runningTasks > 0 ? await deliverToTasks(client, app) : undefined;
    const { plan, ...summary } = r;
    if (values.json) printJson(values['dry-run'] ? { ...summary, plan: { upload: plan.upload.map((f) => f.path), download: plan.download.map((f) => f.path), deleteLocal: plan.deleteLocal, deleteRemote: plan.deleteRemote } } : { ...summary, ...(delivery ? { delivery } : {}) });
    else {
      if (values['dry-run']) {
        for (const f of plan.upload) process.stdout.write(`upload    ${f.path}\n`);
        for (const f of plan.download) process.stdout.write(`download  ${f.path}\n`);
        for (const p of plan.deleteRemote) process.stdout.write(`delete on the cluster  ${p}\n`);
        for (const p of plan.deleteLocal) process.stdout.write(`delete here            ${p}\n`);
      }
      for (const c of r.conflicts) process.stdout.write(`conflict  ${c.path}: the ${c.winner}'s copy stays${c.keptAs ? `, the other is kept as ${c.keptAs}` : ''}\n`);
      for (const s of r.skipped) process.stderr.write(`skipped   ${s.path}: ${s.why}\n`);
      if (r.ignored > 0) process.stderr.write(`${r.ignored} file(s) or directories left out by .gitignore\n`);
      process.stdout.write(
        r.noop
          ? `${app}: in sync (revision ${r.revision})\n`
          : `${app}: ${r.dryRun ? 'would upload' : 'uploaded'} ${r.uploaded}, ${r.dryRun ? 'download' : 'downloaded'} ${r.downloaded}, deleted ${r.deletedRemote} on the cluster and ${r.deletedLocal} here, ${r.conflicts.length} conflicts; ${(r.bytesUploaded / 1e6).toFixed(1)} MB up, ${(r.bytesDownloaded / 1e6).toFixed(1)} MB down (revision ${r.revision})\n`,
      );
      const note = delivery && deliveryNote(app, delivery);
      if (note) ('error' in delivery! ? process.stderr : process.stdout).write(note + '\n');
    }
    return 0;
  } finally {
    client.close();
  }
}

/** omni sync --watch: the first sync, then one per change and per interval until Ctrl-C (cli/omni/sync-watch.ts). */
async function watchProject(client: ApiClient, o: { app: string; dir: string; direction: Direction; intervalMs: number; json: boolean; registryFlags: Record<string, unknown> }): Promise<number> {
  const registry = await registryFor(client, o.registryFlags);
  let limitBytes: number | undefined;
  let stopRequested!: () => void;
  const stopped = new Promise<void>((r) => (stopRequested = r));
  let signals = 0;
  const onSignal = () => {
    if (++signals > 1) process.exit(130); // a second Ctrl-C does not wait for the sync under way
    process.stderr.write(`omni sync: stopping (Ctrl-C again to stop at once)\n`);
    stopRequested();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const time = () => new Date().toTimeString().slice(0, 8);
  if (!o.json) process.stderr.write(`omni sync: watching ${o.dir} for ${o.app} (${o.direction === 'push' ? 'sending changes' : o.direction === 'pull' ? 'fetching changes' : 'both ways'}, every ${o.intervalMs} ms); Ctrl-C stops\n`);
  try {
    return await watchSync({
      client,
      app: o.app,
      dir: o.dir,
      registry,
      direction: o.direction,
      intervalMs: o.intervalMs,
      stopped,
      syncOnce: async (readBack): Promise<SyncSummary & { delivery?: Delivery }> => {
        if (readBack) limitBytes = (await readBackFirst(client, o.app, false)).limitBytes ?? limitBytes;
        const { plan: _plan, ...summary } = await syncProject({ client, app: o.app, dir: o.dir, registry, direction: o.direction, quickNoop: true, ...(limitBytes !== undefined ? { limitBytes } : {}) });
        // what went up reaches the running tasks now, not at the next interval's read-back
        if (o.direction !== 'pull' && changedWorkspace(summary)) return { ...summary, delivery: await deliverToTasks(client, o.app) };
        return summary;
      },
      report: (r) => {
        if (r.ok) {
          const s = r.summary;
          if (o.json) process.stdout.write(JSON.stringify({ at: new Date().toISOString(), ...s }) + '\n');
          else {
            process.stdout.write(`${time()} ${o.app}: uploaded ${s.uploaded}, downloaded ${s.downloaded}, deleted ${s.deletedRemote} on the cluster and ${s.deletedLocal} here (revision ${s.revision})\n`);
            for (const c of s.conflicts) process.stdout.write(`${time()} conflict  ${c.path}: the ${c.winner}'s copy stays${c.keptAs ? `, the other is kept as ${c.keptAs}` : ''}\n`);
            const note = s.delivery && deliveryNote(o.app, s.delivery);
            if (note) ('error' in s.delivery! ? process.stderr : process.stdout).write(`${time()} ${note}\n`);
          }
        } else {
          const e = r.error;
          const what = e instanceof OmniError ? `${e.message} (${e.code})` : e.message;
          if (o.json) process.stdout.write(JSON.stringify({ at: new Date().toISOString(), error: { message: e.message, ...(e instanceof OmniError ? { code: e.code } : {}) }, retryInMs: r.retryInMs }) + '\n');
          else process.stderr.write(`${time()} omni sync: ${what}; trying again in ${(r.retryInMs / 1000).toFixed(1)} s\n`);
        }
      },
    });
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
