// The loop of `omni sync --watch` (cli/omni/sync-watch.ts) with a fake sync: a local change
// triggers a sync without read-back, the interval one with read-back, failures are retried with
// growing delays, a refused token ends the watch, Ctrl-C (stopped) ends it with 0.
import { describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchSync, type WatchOptions } from '../../cli/omni/sync-watch.js';
import { OmniError } from '../../node/errors.js';
import { UsageError } from '../../cli/common.js';
import type { SyncSummary } from '../../node/sync/engine.js';
import type { ApiClient } from '../../node/api/client.js';
import type { Registry } from '../../cli/omni/registry-client.js';

const summary = (noop: boolean): SyncSummary => ({ app: 'a', direction: 'both', revision: 1, uploaded: noop ? 0 : 1, downloaded: 0, deletedLocal: 0, deletedRemote: 0, conflicts: [], skipped: [], ignored: 0, bytesUploaded: 0, bytesDownloaded: 0, chunksSkipped: 0, dryRun: false, noop });
const until = async (what: string, cond: () => boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

function harness(dir: string, syncOnce: WatchOptions['syncOnce'], intervalMs = 60_000) {
  let stop!: () => void;
  const stopped = new Promise<void>((r) => (stop = r));
  const reports: Parameters<WatchOptions['report']>[0][] = [];
  const done = watchSync({ client: {} as ApiClient, registry: {} as Registry, app: 'a', dir, direction: 'both', intervalMs, debounceMs: 30, syncOnce, report: (r) => reports.push(r), stopped });
  return { done, stop, reports };
}

describe('omni sync --watch loop', () => {
  it('syncs at start (with read-back), after a local change (without), and every interval (with); reports only syncs that moved something; stops with 0', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-watch-'));
    try {
      const calls: boolean[] = [];
      const h = harness(dir, async (readBack) => {
        calls.push(readBack);
        return summary(calls.length === 2);
      }, 1500);
      await until('the first sync', () => calls.length === 1);
      expect(calls[0]).toBe(true);
      // the sync's own files (.omni/) do not trigger a sync
      await mkdir(join(dir, '.omni'));
      await writeFile(join(dir, '.omni', 'sync-state.json'), '{}');
      await new Promise((r) => setTimeout(r, 300));
      expect(calls.length).toBe(1);
      await writeFile(join(dir, 'x.txt'), 'x');
      await writeFile(join(dir, '.omni-not-state.txt'), 'y'); // a name that only starts like .omni
      await until('a sync after the change', () => calls.length >= 2);
      expect(calls[1]).toBe(false);
      await until('an interval sync', () => calls.length >= 3, 10_000);
      expect(calls[calls.length - 1]).toBe(true);
      h.stop();
      expect(await h.done).toBe(0);
      // the second sync was a no-op: not reported
      expect(h.reports.filter((r) => r.ok).length).toBe(calls.length - 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('retries failures with growing delays, then goes on', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-watch-'));
    try {
      let n = 0;
      const h = harness(dir, async () => {
        n++;
        if (n <= 3) throw new OmniError('UNAVAILABLE', 'no node answers');
        return summary(false);
      }, 40);
      await until('the sync after three failures', () => h.reports.some((r) => r.ok), 10_000);
      const failed = h.reports.filter((r): r is Extract<typeof r, { ok: false }> => !r.ok);
      expect(failed.length).toBe(3);
      expect(failed[0].error.message).toMatch(/no node answers/);
      // backoff: the base doubles (40, 80, 160 ms), each delay in [base/2, base]
      failed.forEach((f, i) => {
        expect(f.retryInMs).toBeGreaterThanOrEqual((40 * 2 ** i) / 2);
        expect(f.retryInMs).toBeLessThanOrEqual(40 * 2 ** i);
      });
      h.stop();
      expect(await h.done).toBe(0);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ends with the error when the token is refused, or the app name or directory is not usable', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-watch-'));
    try {
      const h = harness(dir, async () => {
        throw new OmniError('UNAUTHORIZED', 'bad token');
      });
      await expect(h.done).rejects.toThrow(/bad token/);
      const u = harness(dir, async () => {
        throw new UsageError('--app must be an app name');
      });
      await expect(u.done).rejects.toThrow(/--app must be/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
