// Cost of the apps' reads and of applying plans, with N tasks and their statuses (issue 12).
//   node --expose-gc --import tsx test/bench/app-tables.ts [root of a checkout] [tasks]
// Old read path (every checkout): kvList + JSON.parse of every apps/, tasks/, taskstatus/ value
// (the orchestrator's round before the tables) and taskKeysOnNode + kvGet + parse (an agent's).
// New read path (when the checkout has ClusterState.tables): the typed tables and indexes.
// Medians of 7; the host is shared, so the figures are noisy.
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const root = resolve(process.argv[2] ?? new URL('../..', import.meta.url).pathname);
const N = Number(process.argv[3] ?? 10_000);
const { ClusterState, encodeCommand } = await import(pathToFileURL(`${root}/protocol/cluster/state.ts`).href);
const NODES = 20;
const APPS = 100;
const now = 1_764_000_000_000;

function median(fn: () => void, reps = 7): number {
  const t: number[] = [];
  for (let r = 0; r < reps; r++) {
    const t0 = process.hrtime.bigint();
    fn();
    t.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return t.sort((a, b) => a - b)[reps >> 1];
}

const gc = (globalThis as { gc?: () => void }).gc;
gc?.();
const heap0 = process.memoryUsage().heapUsed;
const s = new ClusterState();
let index = 0;
const plans: Uint8Array[] = [];
for (let i = 0; i < N; i += 10) {
  const ops = [];
  const app = `app${(i / 10) % APPS}`;
  ops.push({ op: 'put', key: `apps/${app}`, value: JSON.stringify({ name: app, version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: now, message: '' }, pending: '', events: [{ atMs: now, message: 'deployed' }] }) });
  for (let k = i; k < i + 10 && k < N; k++) {
    const id = `${app}-${k.toString(16).padStart(6, '0')}`;
    ops.push({ op: 'put', key: `tasks/${id}`, value: JSON.stringify({ id, app, version: 1, nodeId: `node${k % NODES}`, hostPorts: [20000 + (k % 1000)], desired: 'run', createdAtMs: now, stopReason: '' }) });
    ops.push({ op: 'put', key: `taskstatus/${id}`, value: JSON.stringify({ id, state: 'running', health: 'healthy', exitCode: null, reason: '', restarts: 0, startedAtMs: now, updatedAtMs: now, stable: true }) });
  }
  plans.push(encodeCommand({ type: 'kv.txn', compares: [], ops }));
}
const t0 = process.hrtime.bigint();
for (const p of plans) if (!s.apply(++index, p).ok) throw new Error('apply failed');
const applyMs = Number(process.hrtime.bigint() - t0) / 1e6;
gc?.();
const heapMb = (process.memoryUsage().heapUsed - heap0) / 2 ** 20;

const parse = (v: string | undefined) => (v === undefined ? undefined : JSON.parse(v));
const oldRound = median(() => {
  for (const prefix of ['apps/', 'tasks/', 'taskstatus/']) s.kvList(prefix, 100_000).map((r: { value: string }) => parse(r.value));
});
const oldAgent = median(() => {
  for (let n = 0; n < NODES; n++) for (const k of s.taskKeysOnNode(`node${n}`)) parse(s.kvGet(k)?.value);
});
console.log(`${root}: ${N} tasks + statuses, ${APPS} apps, ${NODES} nodes`);
console.log(`  apply ${plans.length} plans (10 tasks + statuses each): ${applyMs.toFixed(0)} ms; heap after: ${heapMb.toFixed(1)} MiB`);
console.log(`  old read path: orchestrator round (scan + parse apps, tasks, statuses) ${oldRound.toFixed(2)} ms; ${NODES} agent rounds (index + kvGet + parse) ${oldAgent.toFixed(2)} ms`);
if (s.tables) {
  const newRound = median(() => {
    const t = s.tables;
    t.apps();
    t.tasks();
    new Map(t.statuses().map((x: { id: string }) => [x.id, x]));
    for (let a = 0; a < APPS; a++) t.tasksOfApp(`app${a}`);
  });
  const newAgent = median(() => {
    for (let n = 0; n < NODES; n++) s.tables.tasksOnNode(`node${n}`);
  });
  console.log(`  tables: orchestrator round (apps, tasks, statuses, tasks of each app) ${newRound.toFixed(2)} ms; ${NODES} agent rounds (tasks on node) ${newAgent.toFixed(2)} ms`);
}

// Start-up: the state from its rows (what a restart does), and the tables' share of it (every
// record of apps/, tasks/, taskstatus/ handed to a fresh AppTables, as the load does).
if (s.tables) {
  const rows = [...s.rows()];
  const firstQueryMs: number[] = [];
  const fromRows = median(() => ClusterState.fromRows(s.appliedIndex, rows), 5);
  const { AppTables, TABLE_PREFIXES } = await import(pathToFileURL(`${root}/protocol/apps/tables.ts`).href);
  const records: [string, string][] = [];
  for (const prefix of TABLE_PREFIXES as string[]) for (const r of s.kvList(prefix, 1_000_000) as { key: string; value: string }[]) records.push([r.key, r.value]);
  const tables = median(() => {
    const t = new AppTables();
    for (const [k, v] of records) t.onKv(k, v);
  }, 5);
  // The indexes (tasks by node, by app) when built lazily: by the first query after the start.
  const firstQuery = median(() => {
    const st = ClusterState.fromRows(s.appliedIndex, rows);
    const t0 = process.hrtime.bigint();
    st.tables.taskIdsOnNode('node0');
    firstQueryMs.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }, 5);
  void firstQuery;
  console.log(`  start-up: state from ${rows.length} rows ${fromRows.toFixed(1)} ms, of which the tables' rebuild (${records.length} records) ${tables.toFixed(1)} ms; then the first index query ${firstQueryMs.sort((a, b) => a - b)[2].toFixed(1)} ms (median)`);
}
