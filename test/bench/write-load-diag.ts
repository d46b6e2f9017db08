// Diagnostic (not part of npm test): a write load at one concurrency against a 3-node loopback
// cluster (the load generator of bench:cluster, all endpoints), with the CPU each omnid used (/proc)
// per 1,000 writes, so a change to the write path can be compared run by run without the whole
// bench. Usage: node --import tsx test/bench/write-load-diag.ts [concurrency=16] [seconds=10] [write|read]
// (read: linearizable GETs of one 256-byte key, as bench:cluster's read figure).
// DIAG_NODE_ARGS: Node flags for every omnid (e.g. "--cpu-prof --cpu-prof-dir=DIR").
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { Http, cpuMsOf, log, writeLoad } from './load.js';

const CONCURRENCY = Number(process.argv[2] ?? 16);
const SECONDS = Number(process.argv[3] ?? 10);
const MODE = process.argv[4] === 'read' ? 'read' : 'write';

async function main() {
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
    const endpoints = c.running().map((n) => n.apiUrl);
    const put = async (ep: string, key: string, value: string) => {
      const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth, 5000);
      if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    };
    const get = async (ep: string) => {
      const r = await http.call(`${ep}/v1/kv/read-key`, 'GET', undefined, auth, 5000);
      if (r.status !== 200) throw new Error(`HTTP ${r.status}`);
    };
    await put(endpoints[0], 'read-key', 'v'.repeat(256));
    const op = MODE === 'read' ? get : put;
    await writeLoad(endpoints, CONCURRENCY, 2000, op); // warm-up
    const pids = c.running().map((n) => n.proc.pid!);
    const cpu0 = cpuMsOf(pids);
    const own0 = process.cpuUsage();
    const r = await writeLoad(endpoints, CONCURRENCY, SECONDS * 1000, op);
    const cpuMs = cpuMsOf(pids) - cpu0;
    const own = process.cpuUsage(own0);
    const ownMs = (own.user + own.system) / 1000;
    log(`c=${CONCURRENCY}: ${r.writesPerS} ${MODE}s/s, p50 ${r.p50Ms} ms, p99 ${r.p99Ms} ms, errors ${r.errors}; omnid CPU ${Math.round((cpuMs / r.ops) * 1000)} ms per 1,000 ${MODE}s, the load generator's ${Math.round((ownMs / r.ops) * 1000)} ms`);
  } finally {
    http.close();
    await c.destroy();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
