// Diagnostic for bench:state (not a benchmark of record): does a joining node catch up by
// snapshot while writes continue? A 3-node omnid cluster on loopback gets --mib MiB of 1 MiB
// values, then a 4th node joins while 1 KiB writes continue at c=16 for up to --load-s seconds;
// if it has not caught up by then the writes stop and the catch-up is timed again without load.
// With --snapshot-entries small (default 1000) the leader compacts every few seconds under that
// load, which is what a 1 GiB state meets at the default 10,000 when its transfer takes longer
// than a compaction interval. Every node's output goes to --logs DIR (default: a temp dir, kept);
// the snapshot lines of the leader and the joiner are counted at the end, with every node's max RSS.
// Usage: node --import tsx test/bench/state-catchup-diag.ts [--mib 48] [--load-s 120] [--snapshot-entries 1000] [--logs DIR]
import { parseArgs } from 'node:util';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { Http, log } from './load.js';
import { writeKeys, writeUntilStopped } from './state-load.js';
import { RssSampler } from './rss.js';

const { values } = parseArgs({ options: { mib: { type: 'string' }, 'fill-small': { type: 'string' }, 'load-s': { type: 'string' }, 'snapshot-entries': { type: 'string' }, logs: { type: 'string' } } });
const MIB_TOTAL = Number(values.mib ?? 48);
/** 1 KiB writes after the 1 MiB ones: more entries than the 5,000-entry tail, so the joiner needs a snapshot. */
const FILL_SMALL = Number(values['fill-small'] ?? 8000);
const LOAD_MS = Number(values['load-s'] ?? 120) * 1000;
const SNAPSHOT_ENTRIES = values['snapshot-entries'] ?? '1000';
const LOGS = values.logs ?? mkdtempSync(join(tmpdir(), 'omni-catchup-diag-logs-'));
mkdirSync(LOGS, { recursive: true });

const c = await LocalCluster.create({ flags: ['--snapshot-entries', SNAPSHOT_ENTRIES] });
const rss = new RssSampler(() => c.running().map((n) => ({ name: n.name, pid: n.proc.pid! })), 500).start();
const http = new Http();
const auth = () => ({ authorization: `Bearer ${c.adminToken}` });
const status = async (name: string): Promise<StatusView> => {
  const r = await http.call(`${c.nodes.get(name)!.apiUrl}/v1/status`, 'GET', undefined, auth(), 5000);
  if (r.status !== 200) throw new Error(`status ${r.status}`);
  return JSON.parse(r.body) as StatusView;
};
const keepLog = (name: string) => {
  appendFileSync(join(LOGS, `${name}.log`), c.nodes.get(name)!.lines.map((l) => `(before) ${l}\n`).join(''));
  createInterface({ input: c.nodes.get(name)!.proc.stdout! }).on('line', (l) => appendFileSync(join(LOGS, `${name}.log`), `${new Date().toISOString()} ${l}\n`));
};
const keepErr = (name: string) => createInterface({ input: c.nodes.get(name)!.proc.stderr! }).on('line', (l) => appendFileSync(join(LOGS, `${name}.log`), `${new Date().toISOString()} ${l}\n`));
const put = async (ep: string, key: string, value: string, timeoutMs: number) => {
  const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth(), timeoutMs);
  if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.body.slice(0, 100)}`);
};
process.once('SIGINT', () => void c.destroy().then(() => process.exit(130)));
try {
  for (const [i, n] of ['c1', 'c2', 'c3'].entries()) {
    if (i === 0) await c.init(n);
    else await c.join(n);
    keepLog(n);
    keepErr(n);
  }
  await waitFor('formed', async () => {
    const s = await status('c3');
    return s.voters.length === 3 && s.rootRetired && s.health === 'healthy' && s.leader;
  }, 60_000, 50);
  const eps = () => ['c1', 'c2', 'c3'].map((n) => c.nodes.get(n)!.apiUrl);
  const big = await writeKeys({ endpoints: eps, concurrency: 16, put, timeoutMs: 60_000, valueBytes: 1 << 20, label: 'fill' }, MIB_TOTAL, (i) => `fill/${i}`);
  const small = await writeKeys({ endpoints: eps, concurrency: 16, put, timeoutMs: 10_000, valueBytes: 1024, label: 'fill small' }, FILL_SMALL, (i) => `fill-small/${i}`);
  log(`filled ${MIB_TOTAL} MiB at ${big.mibPerS} MiB/s and ${FILL_SMALL} × 1 KiB at ${small.writesPerS}/s; stateBytes ${(await status('c1')).stateBytes}`);
  rss.phase('join');
  const writer = writeUntilStopped({ endpoints: eps, concurrency: 16, put, timeoutMs: 10_000, valueBytes: 1024, label: 'load' }, (i) => `load/${i}`);
  const t0 = performance.now();
  await c.join('c4');
  keepLog('c4');
  keepErr('c4');
  const caughtUp = async () => {
    const s = await status('c1');
    const leader = s.leader === 'c4' ? undefined : s.leader!;
    const commit = leader === 'c1' ? s.commitIndex : (await status(leader!)).commitIndex;
    return (await status('c4')).appliedIndex >= commit;
  };
  let underLoadMs: number | undefined;
  try {
    await waitFor('c4 caught up under load', caughtUp, LOAD_MS, 100);
    underLoadMs = Math.round(performance.now() - t0);
  } catch {
    // not within LOAD_MS
  }
  const w = await writer.stop();
  rss.phase('after');
  let afterStopMs: number | undefined;
  if (underLoadMs === undefined) {
    const t1 = performance.now();
    await waitFor('c4 caught up after the writes stopped', caughtUp, 10 * 60_000, 100);
    afterStopMs = Math.round(performance.now() - t1);
  }
  const count = (name: string, re: RegExp) => readFileSync(join(LOGS, `${name}.log`), 'utf8').split('\n').filter((l) => re.test(l)).length;
  const leader = (await status('c1')).leader!;
  console.log(`snapshot-entries ${SNAPSHOT_ENTRIES}; ${MIB_TOTAL} MiB + ${FILL_SMALL} KiB of state; load ${w.writesPerS} writes/s while c4 joined`);
  console.log(underLoadMs !== undefined ? `c4 caught up under load after ${underLoadMs} ms` : `c4 did NOT catch up within ${LOAD_MS} ms of load; after the writes stopped it caught up in ${afterStopMs} ms`);
  console.log(`leader ${leader}: ${count(leader, /snapshot/i)} snapshot log lines; c4: ${count('c4', /snapshot/i)} (installed: ${count('c4', /installed snapshot/)})`);
  console.log(`max RSS by phase, MiB (anon/file):\n  ${rss.describe().join('\n  ')}`);
  console.log(`logs: ${LOGS}`);
} finally {
  rss.stop();
  http.close();
  await c.destroy();
}
