// Diagnostic (not part of npm test): sequential writes (c=1) to the leader and to a follower of a
// 3-node loopback cluster, p50/p99 of each, so fixed delays on the write path show. Usage:
// node --import tsx test/bench/write-latency-diag.ts [N]
import { join } from 'node:path';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { Http, log } from './load.js';

const N = Number(process.argv[2] ?? 400);

async function main() {
  const c = await LocalCluster.create({ nodeArgs: process.env.DIAG_NODE_ARGS ? process.env.DIAG_NODE_ARGS.split(' ') : [] });
  const http = new Http();
  try {
    await c.init('w1');
    await Promise.all(['w2', 'w3'].map((n) => c.join(n)));
    const auth = { authorization: `Bearer ${c.adminToken}` };
    const status = async (n: string) => JSON.parse((await http.call(`${c.nodes.get(n)!.apiUrl}/v1/status`, 'GET', undefined, auth)).body);
    await waitFor('formed', async () => {
      const s = await status('w3');
      return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
    }, 60_000, 50);
    const names = ['w1', 'w2', 'w3'];
    let leaderName = names[0];
    for (const n of names) if ((await status(n)).role === 'leader') leaderName = n;
    const follower = names.find((n) => n !== leaderName)!;
    log(`leader ${leaderName}, follower ${follower} (data ${join(c.rootDir)})`);
    for (const [what, n] of [['leader', leaderName], ['follower', follower], ['leader', leaderName], ['follower', follower]] as const) {
      const ep = c.nodes.get(n)!.apiUrl;
      const ms: number[] = [];
      for (let i = 0; i < N; i++) {
        const t = performance.now();
        const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(`lat/${i % 100}`)}`, 'PUT', { value: 'x'.repeat(256) }, auth);
        if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.body}`);
        ms.push(performance.now() - t);
      }
      ms.sort((a, b) => a - b);
      log(`${what} ${n}: p50 ${ms[N >> 1].toFixed(2)} ms, p90 ${ms[Math.floor(N * 0.9)].toFixed(2)}, p99 ${ms[Math.floor(N * 0.99)].toFixed(2)}, min ${ms[0].toFixed(2)}`);
    }
  } finally {
    http.close();
    await c.destroy();
  }
}
void main();
