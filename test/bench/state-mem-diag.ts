// Diagnostic for bench:state (not a benchmark of record): where a node's memory goes. A 3-node
// omnid cluster on loopback takes --big 1 MiB values and --small 1 KiB values at c=16, then every
// node's anonymous memory is broken down from /proc/<pid>/smaps (mappings by size: V8 pages,
// malloc arenas, the brk heap) next to its RSS, after --settle-s seconds of quiet.
// With --node-args="--heapsnapshot-signal=SIGUSR2" a heap snapshot of each node is written to
// its working directory (--snap-dir) at the end.
// With --restart a follower is stopped and started again (spawn → its status answers at its
// applied index); --inject N first adds N kv records (1 KiB values, spilled) to its stored state
// while it is down — records the others do not have: only for timing a start that holds them.
// Usage: node --import tsx test/bench/state-mem-diag.ts [--big 32] [--small 8000] [--node-args "..."] [--env "MALLOC_ARENA_MAX=2"] [--settle-s 5] [--restart [--inject 524288]]
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { Http, log, procStatFields } from './load.js';
import { RssSampler, memOf } from './rss.js';
import { writeKeys } from './state-load.js';
import { ClassicLevel } from 'classic-level';
import { execFileSync } from 'node:child_process';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { KvIndex, type Page } from '../../protocol/cluster/kv-index.js';

const { values } = parseArgs({ options: { big: { type: 'string' }, small: { type: 'string' }, 'node-args': { type: 'string' }, env: { type: 'string' }, 'settle-s': { type: 'string' }, snap: { type: 'boolean' }, restart: { type: 'boolean' }, inject: { type: 'string' }, 'copy-dir': { type: 'string' } } });
const BIG = Number(values.big ?? 32);
const SMALL = Number(values.small ?? 8000);
for (const kv of (values.env ?? '').split(' ').filter(Boolean)) {
  const [k, v] = kv.split('=');
  process.env[k] = v;
}
const nodeArgs = (values['node-args'] ?? '').split(' ').filter(Boolean);
const c = await LocalCluster.create({ nodeArgs });
const http = new Http();
const auth = () => ({ authorization: `Bearer ${c.adminToken}` });
const status = async (name: string): Promise<StatusView> => JSON.parse((await http.call(`${c.nodes.get(name)!.apiUrl}/v1/status`, 'GET', undefined, auth())).body) as StatusView;
process.once('SIGINT', () => void c.destroy().then(() => process.exit(130)));

/** CPU time of a process so far (user + system), ms. */
function cpuMsOf(pid: number): number {
  const f = procStatFields(pid);
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

/** Anonymous RSS of a process by kind of mapping, in MiB. */
async function smaps(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const buckets = new Map<string, { n: number; kb: number }>();
  let cur: { name: string; sizeKb: number } | undefined;
  for (const line of text.split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (head) {
      cur = { name: head[3], sizeKb: (parseInt(head[2], 16) - parseInt(head[1], 16)) / 1024 };
      continue;
    }
    const anon = /^Anonymous:\s+(\d+) kB/.exec(line);
    if (!anon || !cur || Number(anon[1]) === 0) continue;
    const kind = cur.name === '[heap]' ? 'brk heap' : cur.name !== '' ? cur.name.split('/').pop()! : cur.sizeKb >= 60 * 1024 && cur.sizeKb <= 64 * 1024 ? 'arena-sized (64 MiB)' : cur.sizeKb === 256 ? 'v8 page 256K' : cur.sizeKb < 256 ? '<256K' : cur.sizeKb <= 1024 ? '256K-1M' : cur.sizeKb <= 8192 ? '1M-8M' : '>8M';
    const b = buckets.get(kind) ?? { n: 0, kb: 0 };
    b.n++;
    b.kb += Number(anon[1]);
    buckets.set(kind, b);
  }
  return [...buckets].sort((a, b) => b[1].kb - a[1].kb).filter(([, b]) => b.kb > 1024).map(([k, b]) => `${k} ${Math.round(b.kb / 1024)} (${b.n})`).join(', ');
}

/** Adds `count` kv records (1 KiB values, spilled, stamped at index 1) to a stopped node's stored state. */
async function inject(dir: string, count: number): Promise<void> {
  const t0 = performance.now();
  const storage = await RaftStorage.open(dir);
  const stored = (await storage.streamState())!;
  const pages: Page[] = [];
  for await (const batch of stored.batches) for (const [row, v] of batch) if (row.startsWith('i/')) pages.push(KvIndex.readPage(row, v));
  const index = KvIndex.fromRead(pages, stored.appliedIndex);
  let rows = new Map<string, string | null>();
  const value = 'i'.repeat(1000);
  for (let i = 0; i < count; i++) {
    const key = `inject/${String(i).padStart(8, '0')}`;
    const v = `${i}${value}`;
    index.set({ key, version: 1, createIndex: 1, modIndex: 1, sizeBytes: v.length + key.length + 70 });
    rows.set(`v/${key}`, v);
    if (rows.size >= 5000 || i === count - 1) {
      await storage.saveState(index.takeDirty(rows), stored.appliedIndex, false);
      rows = new Map();
    }
  }
  await storage.close();
  // As a store written over minutes would be: compacted, not a pile of level-0 tables.
  const db = new ClassicLevel(dir);
  await db.open();
  await db.compactRange('', '~');
  await db.close();
  log(`injected ${count} kv records into ${dir} in ${Math.round(performance.now() - t0)} ms (compacted)`);
}

try {
  await c.init('m1');
  await c.join('m2');
  await c.join('m3');
  await waitFor('formed', async () => {
    const s = await status('m3');
    return s.voters.length === 3 && s.rootRetired && s.health === 'healthy' && s.leader;
  }, 60_000, 50);
  const names = ['m1', 'm2', 'm3'];
  const rss = new RssSampler(() => c.running().map((n) => ({ name: n.name, pid: n.proc.pid! })), 500).start();
  const report = async (label: string) => {
    const leader = (await status('m1')).leader;
    for (const n of names) {
      const node = c.nodes.get(n)!;
      if (!node.running) continue;
      const m = await memOf(node.proc.pid!);
      log(`${label}: ${n}${n === leader ? ' (leader)' : ''}: rss ${Math.round(m!.rssKb / 1024)} anon ${Math.round(m!.anonKb / 1024)} MiB; ${await smaps(node.proc.pid!)}`);
    }
  };
  await report('formed');
  const eps = () => names.map((n) => c.nodes.get(n)!.apiUrl);
  const put = async (ep: string, key: string, value: string, timeoutMs: number) => {
    const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth(), timeoutMs);
    if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.body.slice(0, 100)}`);
  };
  const load = (valueBytes: number, label: string) => ({ endpoints: eps, concurrency: 16, put, timeoutMs: 60_000, valueBytes, label, progressMs: 30_000 });
  if (BIG > 0) {
    rss.phase('1mib');
    const b = await writeKeys(load(1024 * 1024, '1MiB'), BIG, (i) => `state/big/${String(i).padStart(7, '0')}`);
    log(`1 MiB: ${b.writesPerS} writes/s, p50 ${b.p50Ms} ms, p99 ${b.p99Ms} ms; retried: ${JSON.stringify(b.retries)}`);
    for (const n of names) for (const l of c.nodes.get(n)!.lines.filter((x) => /leader|term|election|campaign/i.test(x)).slice(-6)) log(`  ${n}: ${l.slice(0, 160)}`);
    await report('after 1 MiB values');
  }
  if (SMALL > 0) {
    rss.phase('1kib');
    const s = await writeKeys(load(1024, '1KiB'), SMALL, (i) => `state/small/${String(i).padStart(8, '0')}`);
    log(`1 KiB: ${s.writesPerS} writes/s`);
    await report('after 1 KiB values');
  }
  rss.phase('settle');
  await new Promise((r) => setTimeout(r, Number(values['settle-s'] ?? 5) * 1000));
  await report('settled');
  if (values.restart) {
    rss.phase('restart');
    // A follower stops (SIGTERM) and starts again: spawn → its status answers at the applied index it had.
    const leader = (await status('m1')).leader;
    const name = names.find((n) => n !== leader)!;
    const before = (await status(name)).appliedIndex;
    await c.kill(name, 'SIGTERM');
    if (values.inject) await inject(`${c.nodes.get(name)!.dataDir}/raft`, Number(values.inject));
    const t0 = performance.now();
    const node = await c.restart(name);
    const started = performance.now() - t0;
    await waitFor('applied again', async () => (await status(name)).appliedIndex >= before, 120_000, 20);
    log(`restart of ${name}: 'omnid: started' after ${Math.round(started)} ms, applied ≥ ${before} after ${Math.round(performance.now() - t0)} ms`);
    log(node.lines.slice(0, 30).join('\n'));
    await report('restarted');
    if (values['copy-dir']) {
      await c.kill(name, 'SIGTERM');
      execFileSync('cp', ['-r', `${c.nodes.get(name)!.dataDir}/raft`, values['copy-dir']]);
      log(`copied ${name}'s raft dir to ${values['copy-dir']}`);
    }
  }
  rss.stop();
  log(`max RSS by phase, MiB (anon/file):\n  ${rss.describe().join('\n  ')}`);
  // CPU of the original members (user + system, from /proc): how much each write cost them.
  let cpuMs = 0;
  for (const n of names) cpuMs += c.nodes.get(n)!.running ? cpuMsOf(c.nodes.get(n)!.proc.pid!) : 0;
  log(`omnid CPU: ${Math.round(cpuMs)} ms for ${BIG + SMALL} writes: ${(cpuMs / Math.max(1, BIG + SMALL)).toFixed(2)} ms per write (the three members together)`);
  if (nodeArgs.some((a) => a.startsWith('--heapsnapshot-signal'))) {
    for (const n of names) c.nodes.get(n)!.proc.kill('SIGUSR2');
    await new Promise((r) => setTimeout(r, 15_000));
    log(`heap snapshots written in each node's working directory (${process.cwd()})`);
  }
} finally {
  http.close();
  await c.destroy();
}
