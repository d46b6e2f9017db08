// A synced workspace in a container (issue 16, docker driver) on a real 3-node loopback cluster:
// the client pushes a project with `omni sync`, an image app of that name starts with the
// workspace bind-mounted at /workspace (its working directory; OMNI_WORKSPACE=/workspace), reads
// the synced file and writes new ones, and `omni sync --pull` brings them back (the node reads
// the container's workspace back on demand). The real CLI (bin/omni) and a real Docker engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { apiCall, formCluster, waitFor } from './helpers.js';

const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : undefined;
if (skip) console.warn(`!!! SKIPPING the synced workspace test with the docker driver: ${skip}`);

const OMNI = resolve('bin/omni');
interface Out { code: number | null; stdout: string; stderr: string }
interface AppJson { tasks: { id: string; node: string; desired: string; state: string }[] }

describe.skipIf(skip !== undefined)('a synced workspace in a container (3 nodes, docker driver)', () => {
  let c: LocalCluster;
  let dir: string;
  const image = 'skip' in docker ? '' : docker.image;
  const omni = (cwd: string, args: string[], node: string): Promise<Out> =>
    new Promise((res) => {
      const env = { ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
      execFile(OMNI, args, { cwd, env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => res({ code: err ? ((err as { code?: number }).code ?? null) : 0, stdout, stderr }));
    });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-sync-docker-'));
    c = await formCluster(['s1', 's2', 's3']);
  }, 240_000);
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the container works in /workspace on the synced files; what it writes comes back with omni sync --pull', async () => {
    const d = join(dir, 'dws');
    await mkdir(d);
    await writeFile(join(d, 'input.txt'), 'hello from the laptop\n');
    await mkdir(join(d, 'sub'));
    await writeFile(join(d, 'sub', 'deep.txt'), 'deep\n');
    const up = await omni(d, ['sync', '--app', 'dws', '--push'], 's1');
    expect(up.code, up.stderr + up.stdout).toBe(0);

    const script = 'cat input.txt sub/deep.txt > seen.txt; pwd > where.txt; echo "$OMNI_WORKSPACE" >> where.txt; while true; do sleep 0.2; done';
    const created = await apiCall(c, 's2', 'POST', '/v1/apps', { name: 'dws', image, args: ['sh', '-c', script], resources: { cpu: 0.1, memory: '32M' } });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    await waitFor('the dws container running', async () => ((await apiCall<AppJson>(c, 's2', 'GET', '/v1/apps/dws')).body.tasks?.some((t) => t.state === 'running') ? true : undefined), 120_000, 300);

    await waitFor("the container's files to come back", async () => {
      const s = await omni(d, ['sync', '--app', 'dws', '--pull'], 's3');
      if (s.code !== 0) throw new Error(s.stderr);
      return (await stat(join(d, 'seen.txt')).catch(() => undefined)) !== undefined ? true : undefined;
    }, 60_000, 1000);
    expect(await readFile(join(d, 'seen.txt'), 'utf8')).toBe('hello from the laptop\ndeep\n');
    expect(await readFile(join(d, 'where.txt'), 'utf8')).toBe('/workspace\n/workspace\n');
    expect(await readFile(join(d, 'input.txt'), 'utf8')).toBe('hello from the laptop\n');
    expect((await apiCall(c, 's1', 'DELETE', '/v1/apps/dws')).status).toBeLessThan(300);
  }, 400_000);
});
