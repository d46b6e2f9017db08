// omni sync --watch: keeps a project directory and an app's workspace in step until Ctrl-C.
//
// A change in the directory (fs.watch, recursive) is synced after a short quiet time (the
// debounce: an editor's save is several events); every `intervalMs` the app's running tasks are
// asked to write their files back (POST /v1/apps/NAME/workspace/sync, which also brings the
// cluster's newer files into their directories) and the directory is synced again, so what a
// task writes comes down and what another client pushed comes in. The periodic sync also catches
// local changes the watcher missed (or all of them, where fs.watch is not available): it takes
// the no-op fast path (a stat of the tree and one KV read) when nothing changed. One sync runs at
// a time; a change during a sync runs another right after. Failures that may pass (the cluster
// unreachable, a compare-and-set lost five times, the workspace over its disk size) are printed
// and retried with exponential backoff and jitter; a refused token stops the command.
import { watch, type FSWatcher } from 'node:fs';
import { OmniError } from '../../node/errors.js';
import { UsageError } from '../common.js';
import type { ApiClient } from '../../node/api/client.js';
import type { Direction } from '../../protocol/sync/plan.js';
import type { SyncSummary } from '../../node/sync/engine.js';
import type { Registry } from './registry-client.js';

export const WATCH_DEBOUNCE_MS = 300;
export const WATCH_BACKOFF_MAX_MS = 30_000;

export interface WatchOptions<S extends SyncSummary = SyncSummary> {
  client: ApiClient;
  app: string;
  dir: string;
  registry: Registry;
  direction: Direction;
  /** How often the tasks' files are read back and the directory synced regardless of events. */
  intervalMs: number;
  debounceMs?: number;
  /** One sync: the caller's (syncProject with the read-back first when `readBack`). */
  syncOnce(readBack: boolean): Promise<S>;
  /** A sync that moved something (or failed): printed by the caller. */
  report(r: { ok: true; summary: S } | { ok: false; error: Error; retryInMs: number }): void;
  /** Resolves when the watch should end (Ctrl-C). */
  stopped: Promise<void>;
}

/** Errors after which watching on cannot help (a refused token, a bad app name or directory): the command ends with them. */
function fatal(err: unknown): boolean {
  if (err instanceof UsageError) return true;
  return err instanceof OmniError && (err.code === 'UNAUTHORIZED' || err.code === 'FORBIDDEN' || err.code === 'INVALID_ARGUMENT');
}

/** Runs until `stopped` resolves (returns 0) or a fatal error (thrown). */
export async function watchSync<S extends SyncSummary>(o: WatchOptions<S>): Promise<number> {
  const debounceMs = o.debounceMs ?? WATCH_DEBOUNCE_MS;
  let running: Promise<void> | undefined;
  let again = false;
  let againReadBack = false;
  let failures = 0;
  let stop = false;
  let fatalError: unknown;
  let debounce: ReturnType<typeof setTimeout> | undefined;
  let retry: ReturnType<typeof setTimeout> | undefined;
  let wake!: () => void;
  const idle = new Promise<void>((r) => (wake = r));

  const run = (readBack: boolean): Promise<void> => {
    if (stop) return Promise.resolve();
    if (running) {
      again = true;
      againReadBack ||= readBack;
      return running;
    }
    running = once(readBack);
    return running;
  };
  const once = async (readBack: boolean): Promise<void> => {
    try {
      const summary = await o.syncOnce(readBack);
      failures = 0;
      if (!summary.noop || summary.conflicts.length > 0) o.report({ ok: true, summary });
    } catch (err) {
      if (fatal(err)) {
        fatalError = err;
        stop = true;
        wake();
        return;
      }
      failures++;
      const base = Math.min(WATCH_BACKOFF_MAX_MS, o.intervalMs * 2 ** (failures - 1));
      const retryInMs = Math.round(base / 2 + Math.random() * (base / 2));
      o.report({ ok: false, error: err as Error, retryInMs });
      if (retry === undefined && !stop)
        retry = setTimeout(() => {
          retry = undefined;
          void run(true);
        }, retryInMs);
    } finally {
      running = undefined;
      if (stop) wake();
      else if (again) {
        const rb = againReadBack;
        again = false;
        againReadBack = false;
        void run(rb);
      }
    }
  };

  const localChange = (name: string | Buffer | null) => {
    const n = name === null ? '' : String(name);
    if (n === '.omni' || n.startsWith('.omni/') || n.startsWith(`.omni\\`)) return; // the sync's own state and scratch files
    if (debounce) clearTimeout(debounce);
    debounce = setTimeout(() => {
      debounce = undefined;
      void run(false);
    }, debounceMs);
  };

  let watcher: FSWatcher | undefined;
  if (o.direction !== 'pull') {
    try {
      watcher = watch(o.dir, { recursive: true }, (_event, name) => localChange(name));
      watcher.on('error', (err) => {
        process.stderr.write(`omni sync: watching ${o.dir} failed (${err.message}); changes are picked up every ${o.intervalMs} ms\n`);
        watcher?.close();
        watcher = undefined;
      });
    } catch (err) {
      process.stderr.write(`omni sync: cannot watch ${o.dir} (${(err as Error).message}); changes are picked up every ${o.intervalMs} ms\n`);
    }
  }
  const tick = setInterval(() => {
    if (failures === 0) void run(o.direction !== 'push');
  }, o.intervalMs);

  await run(o.direction !== 'push');
  await Promise.race([o.stopped, idle]);
  stop = true;
  clearInterval(tick);
  if (debounce) clearTimeout(debounce);
  if (retry) clearTimeout(retry);
  watcher?.close();
  // a sync under way finishes (it is safe to interrupt, but its state write is cheap to wait for)
  while (running) await running;
  if (fatalError) throw fatalError;
  return 0;
}
