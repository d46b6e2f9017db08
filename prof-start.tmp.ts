import { LocalCluster, waitFor } from './node/local-cluster.js';
const dir = process.argv[2];
const c = await LocalCluster.create({ nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval', '250'] });
try {
  await c.init('node1'); await c.join('node2'); await c.join('node3');
  await c.kill('node3', 'SIGTERM');
  const t = performance.now();
  await c.restart('node3');
  const cl = c.client('node3');
  await waitFor('api', () => cl.get('/v1/status').then(() => true), 30000, 10);
  cl.close();
  console.log('restart → api', Math.round(performance.now() - t), 'ms; pid', c.nodes.get('node3')!.proc.pid);
  await c.kill('node3', 'SIGTERM');
} finally { await c.destroy(); }
