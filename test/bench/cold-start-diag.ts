// Diagnostic (not a benchmark of record): where bench:cluster's cold start goes. init, then two
// joins at once, until the third node's status shows 3 voters, the root retired and health
// healthy — as bench:cluster times it — with every node's output echoed, each line prefixed with
// the ms since the start. node --import tsx test/bench/cold-start-diag.ts [--log-level debug] [--together]
// (--together: the three start at once with a join token made in advance, as bench:cluster's cold start)
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { Http, cpuMsOf } from './load.js';

const t0 = performance.now();
const ms = () => (performance.now() - t0).toFixed(0).padStart(5);
const write = process.stderr.write.bind(process.stderr);
process.stderr.write = ((chunk: string | Uint8Array) => write(String(chunk).replace(/^(?=.)/gm, () => `${ms()} `))) as typeof process.stderr.write;
const level = process.argv.includes('--log-level') ? process.argv[process.argv.indexOf('--log-level') + 1] : 'info';
// DIAG_NODE_ARGS: extra Node flags for every omnid, e.g. "--require /path/profile-hook.cjs"
const nodeArgs = process.env.DIAG_NODE_ARGS?.split(' ').filter(Boolean);
const c = await LocalCluster.create({ flags: ['--log-level', level], echo: true, ...(nodeArgs ? { nodeArgs } : {}) });
const http = new Http();
const status = async (name: string): Promise<StatusView> => {
  const r = await http.call(`${c.nodes.get(name)!.apiUrl}/v1/status`, 'GET', undefined, { authorization: `Bearer ${c.adminToken}` }, 2000);
  if (r.status !== 200) throw new Error(`status ${r.status}`);
  return JSON.parse(r.body) as StatusView;
};
try {
  if (process.argv.includes('--together')) {
    process.stderr.write('diag: n1, n2 and n3 start together (omnid init --join-token)\n');
    await c.startTogether(['n1', 'n2', 'n3']);
  } else {
    process.stderr.write('diag: init n1\n');
    await c.init('n1');
    process.stderr.write('diag: n1 listening; n2 and n3 join\n');
    await Promise.all(['n2', 'n3'].map((n) => c.join(n)));
  }
  process.stderr.write('diag: joins returned\n');
  let last = '';
  await waitFor('formed', async () => {
    const s = await status('n3');
    const now = `voters ${s.voters.length} rootRetired ${s.rootRetired} health ${s.health} leader ${s.leader} term ${s.term}`;
    if (now !== last) process.stderr.write(`diag: status of n3: ${(last = now)}\n`);
    return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
  }, 60_000, 5);
  // on two cores, three starts at once are CPU-bound: what each node used until then
  const cpu = ['n1', 'n2', 'n3'].map((n) => `${n} ${cpuMsOf([c.nodes.get(n)!.proc.pid!])}`).join(', ');
  process.stderr.write(`diag: healthy; CPU ms so far: ${cpu}\n`);
  // DIAG_HOLD_MS: the cluster kept that long after (a profiler in the nodes writes on a timer)
  await new Promise((r) => setTimeout(r, Number(process.env.DIAG_HOLD_MS ?? 0)));
} finally {
  http.close();
  await c.destroy();
}
