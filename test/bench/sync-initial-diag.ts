// Diagnostic (not a benchmark): one initial `omni sync --push` of the bench:sync tree into a 3-node
// loopback cluster whose nodes log at debug level (echoed to stderr: every pushed blob's
// stored/recorded/copied times), with OMNI_SYNC_TRACE=1 for the CLI's phases.
// node --import tsx test/bench/sync-initial-diag.ts [files]
// DIAG_ECHO=0: the nodes' lines not echoed.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LocalCluster } from '../../node/local-cluster.js';
import { makeTree, waitForCli } from './sync-tree.js';
import { cpuMsOf, procKeyNumbers, procStatFields } from './load.js';

const run = promisify(execFile);
/** CPU ms of this process's waited-for children (cutime + cstime of /proc/self/stat): the CLI runs here. */
function childrenCpuMs(): number {
  const f = procStatFields('self');
  return ((Number(f[13]) + Number(f[14])) * 1000) / 100; // fields 16/17, after pid and comm
}
/** System CPU ms of one process (stime, field 15 of /proc/PID/stat): the kernel's copies, page faults, syscalls. */
function sysMsOf(pid: number): number {
  return (Number(procStatFields(pid)[12]) * 1000) / 100;
}
/** Bytes a process has read and written through read/write calls (files and sockets: /proc/PID/io rchar, wchar). */
function ioOf(pid: number): { rchar: number; wchar: number } {
  const io = procKeyNumbers(`/proc/${pid}/io`);
  return { rchar: io.get('rchar') ?? 0, wchar: io.get('wchar') ?? 0 };
}
const n = (bytes: number) => `${(bytes / 1e6).toFixed(0)} MB`;
const files = Number(process.argv[2] ?? 5000);
const work = await mkdtemp(join(tmpdir(), 'omni-sync-diag-'));
// DIAG_NODE_ARGS: extra Node flags for every omnid, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof" (profiles written when the nodes stop)
const nodeArgs = process.env.DIAG_NODE_ARGS?.split(' ').filter(Boolean);
// DIAG_CLI_NODE_OPTIONS: NODE_OPTIONS for the CLI only, e.g. "--cpu-prof --cpu-prof-dir=/tmp/cliprof"
// DIAG_FLAGS: extra omnid flags, e.g. "--registry-replicas 1" (no second copies)
const c = await LocalCluster.create({ flags: ['--log-level', 'debug', ...(process.env.DIAG_FLAGS?.split(' ').filter(Boolean) ?? [])], echo: process.env.DIAG_ECHO !== '0', ...(nodeArgs ? { nodeArgs } : {}) });
try {
  const src = join(work, 'src');
  await makeTree(src, files);
  await c.init('n1');
  // DIAG_NODES=1: n1 alone (no copies: what the replication costs)
  const names = process.env.DIAG_NODES === '1' ? ['n1'] : ['n1', 'n2', 'n3'];
  for (const n of names.slice(1)) await c.join(n);
  const env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: join(work, 'none.json'), OMNI_SYNC_TRACE: '1', ...(process.env.DIAG_CLI_NODE_OPTIONS ? { NODE_OPTIONS: process.env.DIAG_CLI_NODE_OPTIONS } : {}) };
  if (names.length > 1) await waitForCli(env);
  else await new Promise((r) => setTimeout(r, 2000)); // one node is never healthy (1 of 3 voters): waitForCli would wait forever
  {
    // what the nodes use with nothing to do (heartbeats, gossip, reports), over as long as a sync takes
    const idleMs = Number(process.env.DIAG_IDLE_MS ?? 5000);
    await new Promise((r) => setTimeout(r, Number(process.env.DIAG_SETTLE_MS ?? 0)));
    const before = names.map((n) => cpuMsOf([c.nodes.get(n)!.proc.pid!]));
    await new Promise((r) => setTimeout(r, idleMs));
    process.stderr.write(`diag: idle for ${idleMs} ms, CPU ms: ${names.map((n, i) => `${n} ${cpuMsOf([c.nodes.get(n)!.proc.pid!]) - before[i]}`).join(', ')}\n`);
  }
  process.stderr.write(`diag: === initial sync starts ${new Date().toISOString()}\n`);
  const pids = names.map((n) => c.nodes.get(n)!.proc.pid!);
  const cpu0 = pids.map((p) => cpuMsOf([p]));
  const sys0 = pids.map(sysMsOf);
  const io0 = pids.map(ioOf);
  const cli0 = childrenCpuMs();
  const t0 = performance.now();
  const r = await run('bin/omni', ['sync', src, '--app', 'diag', '--json', '--push'], { env, timeout: 600_000, maxBuffer: 64 * 1024 * 1024 });
  const took = performance.now() - t0;
  const cpu = pids.map((p, i) => cpuMsOf([p]) - cpu0[i]);
  const sys = pids.map((p, i) => sysMsOf(p) - sys0[i]);
  const io = pids.map((p, i) => { const now = ioOf(p); return `${n(now.rchar - io0[i].rchar)} in / ${n(now.wchar - io0[i].wchar)} out`; });
  // resident and peak memory of each node (MiB), after the sync
  const mem = (pid: number) => {
    const st = procKeyNumbers(`/proc/${pid}/status`);
    return `${Math.round((st.get('VmRSS') ?? 0) / 1024)}/${Math.round((st.get('VmHWM') ?? 0) / 1024)}`;
  };
  process.stderr.write(`diag: === initial sync took ${took.toFixed(0)} ms; CPU ms: cli ${childrenCpuMs() - cli0}, ${names.map((n, i) => `${n} ${cpu[i]} (sys ${sys[i]})`).join(', ')}; bytes read/written (files and sockets) ${names.map((n, i) => `${n} ${io[i]}`).join(', ')}; RSS/peak MiB ${names.map((n, i) => `${n} ${mem(pids[i])}`).join(', ')}\n${r.stderr}`);
} finally {
  await c.destroy();
  await rm(work, { recursive: true, force: true });
}
