// Diagnostic (not part of npm test): a write (or read) load at one concurrency against a 3-node
// loopback cluster — omni, or etcd with DIAG_SYSTEM=etcd — with the load generator of
// bench:cluster on all endpoints, and the CPU the cluster's processes used (/proc) and the load
// generator's own, per 1,000 operations: a change to the write path compared run by run without
// the whole bench. Usage:
//   node --import tsx test/bench/write-load-diag.ts [concurrency=16] [seconds=10] [write|read]
// (read: linearizable GETs of one 256-byte key, as bench:cluster's read figure).
// DIAG_NODE_ARGS: Node flags for every omnid (e.g. "--cpu-prof --cpu-prof-dir=DIR"); DIAG_ECHO=1
// echoes the omnids' output.
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { EtcdCluster } from './etcd-cluster.js';
import { Http, contextSwitchesOf, cpuMsOf, log, rssMiBOf, writeLoad, writeSyscallsOf } from './load.js';

const CONCURRENCY = Number(process.argv[2] ?? 16);
const SECONDS = Number(process.argv[3] ?? 10);
const MODE = process.argv[4] === 'read' ? 'read' : 'write';
const READ_KEY = 'read-key';

interface Target {
  endpoints: string[];
  pids: number[];
  put(ep: string, key: string, value: string): Promise<void>;
  get(ep: string): Promise<void>;
}

async function measure(name: string, t: Target): Promise<void> {
  await t.put(t.endpoints[0], READ_KEY, 'v'.repeat(256));
  const op = MODE === 'read' ? (ep: string) => t.get(ep) : t.put;
  await writeLoad(t.endpoints, CONCURRENCY, 2000, op); // warm-up
  const cpu0 = cpuMsOf(t.pids);
  const sys0 = t.pids.map((p) => writeSyscallsOf([p]));
  const own0 = process.cpuUsage();
  const cs0 = contextSwitchesOf(t.pids);
  const r = await writeLoad(t.endpoints, CONCURRENCY, SECONDS * 1000, op);
  const cpuMs = cpuMsOf(t.pids) - cpu0;
  const perOp = t.pids.map((p, i) => ((writeSyscallsOf([p]) - sys0[i]) / r.ops).toFixed(2));
  const cs1 = contextSwitchesOf(t.pids);
  const own = process.cpuUsage(own0);
  const ownMs = (own.user + own.system) / 1000;
  log(`${name} c=${CONCURRENCY}: ${r.writesPerS} ${MODE}s/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, errors ${r.errors}; ${name} CPU ${Math.round((cpuMs / r.ops) * 1000)} ms per 1,000 ${MODE}s, the load generator's ${Math.round((ownMs / r.ops) * 1000)} ms; write syscalls per ${MODE} by process ${perOp.join(' / ')}; context switches per ${MODE} (all threads of the cluster) ${((cs1.voluntary - cs0.voluntary) / r.ops).toFixed(1)} voluntary, ${((cs1.involuntary - cs0.involuntary) / r.ops).toFixed(1)} involuntary; RSS after, MiB ${t.pids.map((p) => Math.round(rssMiBOf(p))).join(' / ')}`);
}

async function omni(): Promise<void> {
  const c = await LocalCluster.create({ echo: process.env.DIAG_ECHO === '1', nodeArgs: process.env.DIAG_NODE_ARGS ? process.env.DIAG_NODE_ARGS.split(' ') : [] });
  const http = new Http();
  try {
    await c.init('l1');
    await Promise.all(['l2', 'l3'].map((n) => c.join(n)));
    const auth = { authorization: `Bearer ${c.adminToken}` };
    await waitFor('formed', async () => {
      const s = JSON.parse((await http.call(`${c.nodes.get('l3')!.apiUrl}/v1/status`, 'GET', undefined, auth)).body);
      return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
    }, 60_000, 50);
    await measure('omni', {
      endpoints: c.running().map((n) => n.apiUrl),
      pids: c.running().map((n) => n.proc.pid!),
      put: async (ep, key, value) => {
        const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth, 5000);
        if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
      },
      get: async (ep) => {
        const r = await http.call(`${ep}/v1/kv/${READ_KEY}`, 'GET', undefined, auth, 5000);
        if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
      },
    });
  } finally {
    http.close();
    await c.destroy();
  }
}

async function etcd(): Promise<void> {
  const e = await EtcdCluster.start();
  try {
    await e.waitHealthy();
    await measure('etcd', {
      endpoints: e.endpoints(),
      pids: ['e1', 'e2', 'e3'].map((n) => e.pid(n)!),
      put: (ep, key, value) => e.put(ep, key, value),
      get: (ep) => e.get(ep, READ_KEY),
    });
  } finally {
    await e.stop();
  }
}

(process.env.DIAG_SYSTEM === 'etcd' ? etcd() : omni()).catch((err) => {
  console.error(err);
  process.exit(1);
});
