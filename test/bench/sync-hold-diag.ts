// Diagnostic (not part of npm test): the bench:sync tree and cluster, the initial sync done, then
// held for SYNC_HOLD_S seconds so single syncs can be timed and profiled by hand. Prints the env.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { LocalCluster } from '../../node/local-cluster.js';
import { makeTree, waitForCli } from './sync-tree.js';

const run = promisify(execFile);
const FILES = Number(process.env.SYNC_BENCH_FILES ?? 5000);
const work = await mkdtemp(join(tmpdir(), 'omni-sync-hold-'));
const src = join(work, 'src');
await makeTree(src, FILES);
const c = await LocalCluster.create({ echo: process.env.SYNC_HOLD_ECHO === '1', flags: process.env.SYNC_HOLD_FLAGS?.split(' ').filter(Boolean), nodeArgs: process.env.SYNC_HOLD_NODE_ARGS?.split(' ').filter(Boolean) });
try {
  await c.init('n1');
  await c.join('n2');
  await c.join('n3');
  const env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: join(work, 'none.json') };
  await waitForCli(env);
  await run('bin/omni', ['sync', src, '--app', 'bench', '--json', '--push'], { env, timeout: 600_000 });
  console.log(`export OMNI_ADDR=${env.OMNI_ADDR} OMNI_TOKEN=${env.OMNI_TOKEN} OMNI_CONFIG=${env.OMNI_CONFIG} SRC=${src}`);
  await new Promise((r) => setTimeout(r, Number(process.env.SYNC_HOLD_S ?? 600) * 1000));
} finally {
  await c.destroy();
  await rm(work, { recursive: true, force: true });
}
