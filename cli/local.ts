// npm start: a real local cluster — three omnid processes on loopback (init + 2 joins). Waits
// for quorum and the root's step-down, prints `omni status`, writes a key through a follower
// and reads it back from another node, deploys an example HTTP app (3 replicas, one per node)
// and calls it, then keeps running until Ctrl-C (or exits with --exit, as the test does).
import { LocalCluster, waitFor } from '../node/local-cluster.js';
import { formatStatus, type StatusView } from './omni/status.js';
import { runMain } from './common.js';
import { OmniError } from '../node/errors.js';
import { request } from 'node:http';

/** The example app: a tiny HTTP server run by the process driver, one replica per node. */
const EXAMPLE_SERVER = `require('http').createServer((q, s) => s.end('hello from ' + process.env.OMNI_TASK_ID + '\\n')).listen(Number(process.env.PORT), () => console.log('hello-web listening on ' + process.env.PORT))`;

async function deployExample(c: LocalCluster, via: string): Promise<void> {
  const client = c.client(via);
  try {
    process.stdout.write(`$ omni run --name hello-web --replicas 3 --spread --port 8080 --health-http / -- node -e '<http server>'\n`);
    const spec = { name: 'hello-web', command: [process.execPath, '-e', EXAMPLE_SERVER], ports: [{ name: 'http', port: 8080 }], replicas: 3, antiAffinity: true, healthCheck: { type: 'http', port: 'http', path: '/', intervalMs: 500 } };
    await client.post('/v1/apps', spec);
    const eps = await waitFor('hello-web healthy', async () => {
      const r = await client.get<{ endpoints: { host: string; ports: Record<string, number>; node: string }[] }>('/v1/apps/hello-web/endpoints');
      return r.endpoints.length === 3 ? r.endpoints : undefined;
    }, 60_000, 200);
    process.stdout.write(`hello-web is healthy: 3/3 replicas, one per node\n$ omni endpoints hello-web\n`);
    for (const e of eps) process.stdout.write(`${e.host}:${e.ports.http}\thttp\t${e.node}\n`);
    const body = await new Promise<string>((resolve, reject) => {
      const req = request({ host: eps[0].host, port: eps[0].ports.http, path: '/' }, (res) => {
        let b = '';
        res.on('data', (d) => (b += d));
        res.on('end', () => resolve(b.trim()));
      });
      req.on('error', reject);
      req.end();
    });
    process.stdout.write(`$ curl http://${eps[0].host}:${eps[0].ports.http}/ → ${body}\n\n`);
  } finally {
    client.close();
  }
}

const NAMES = ['node1', 'node2', 'node3'];
/** Marks npm start's clusters, so the next npm start removes one left behind. */
const OWNER_TAG = 'npm-start';

await runMain(async () => {
  const exitWhenDone = process.argv.includes('--exit');
  const started = Date.now();
  // A cluster an earlier npm start left behind (killed, or stopped before it could clean up).
  for (const dir of await LocalCluster.sweepAbandoned(OWNER_TAG)) process.stdout.write(`removed a cluster an earlier npm start left in ${dir} (its processes and app tasks stopped)\n`);
  const c = await LocalCluster.create({ owner: OWNER_TAG });
  // Ctrl-C (SIGINT to this process only: the omnid processes have process groups of their own)
  // and SIGTERM stop everything once, in order: the nodes, then their tasks, then the data.
  let stopping: Promise<never> | undefined;
  const stop = (why: string): Promise<never> =>
    (stopping ??= (async () => {
      process.stdout.write(`\n${why}: stopping the local cluster (nodes, app tasks, data in ${c.rootDir})...\n`);
      await c.destroy().catch((err: Error) => process.stderr.write(`error while stopping: ${err.message}\n`));
      process.stdout.write('stopped; nothing is left running\n');
      process.exit(why === 'SIGTERM' ? 143 : 130);
    })());
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGHUP', () => void stop('SIGHUP'));
  try {
    process.stdout.write(`starting ${NAMES[0]} (omnid init) with data in ${c.rootDir}\n`);
    await c.init(NAMES[0]);
    for (const n of NAMES.slice(1)) {
      process.stdout.write(`starting ${n} (omnid join ${c.joinAddr} --token …)\n`);
      await c.join(n);
    }
    process.stdout.write('waiting for 3 voters, a leader and the root to step down...\n');
    const s = await waitFor('quorum and root step-down', async () => {
      const client = c.client(NAMES[2]);
      try {
        const st = await client.get<StatusView>('/v1/status');
        return st.voters.length === 3 && st.rootRetired && st.health === 'healthy' ? st : undefined;
      } finally {
        client.close();
      }
    }, 60_000);
    process.stdout.write(`cluster ready in ${((Date.now() - started) / 1000).toFixed(1)} s\n\n$ omni status\n${formatStatus(s)}\n`);
    const follower = NAMES.find((n) => n !== s.leader)!;
    const reader = NAMES.find((n) => n !== follower)!;
    const w = c.client(follower);
    const r = c.client(reader);
    await w.put('/v1/kv/hello', { value: 'world' });
    const got = await r.get<{ value: string; version: number }>('/v1/kv/hello');
    w.close();
    r.close();
    process.stdout.write(`$ omni kv put hello world   (via ${follower}, a follower)\n$ omni kv get hello         (via ${reader}) → ${got.value}\n\n`);
    await deployExample(c, follower);
    process.stdout.write(
      `To use the CLI against this cluster:\n  export OMNI_ADDR=${c.nodes.get(NAMES[0])!.apiUrl} OMNI_TOKEN=${c.adminToken}\n  bin/omni status; bin/omni nodes; bin/omni ps; bin/omni inspect hello-web; bin/omni logs hello-web\n`,
    );
    if (exitWhenDone) {
      await c.destroy();
      return 0;
    }
    process.stdout.write('\nthe cluster keeps running; press Ctrl-C to stop it\n');
    await new Promise(() => undefined);
  } catch (err) {
    if (stopping) return stopping; // a node exited because we are stopping it
    for (const n of c.nodes.values()) process.stderr.write(`--- ${n.name} output ---\n${n.lines.slice(-20).join('\n')}\n`);
    await c.destroy();
    if (err instanceof OmniError) throw err;
    throw new OmniError('LOCAL_CLUSTER_FAILED', `${(err as Error).message.split('\n')[0]} (the nodes' last output is above)`);
  }
});
