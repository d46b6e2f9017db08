// The exclusive lease's backstop outside omnid: the process wrapper's watchdog and the docker
// lease watchdog kill an exclusive task once the deadline in the node's lease file has passed
// (or the file is missing) — with no omnid (no agent) running at all — and leave it alone while
// the deadline keeps moving. A plain task is never watched.
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { afterAll, describe, expect, it } from 'vitest';
import { ProcessDriver } from '../../node/apps/drivers/process.js';
import { DockerDriver, LABEL_OWNER } from '../../node/apps/drivers/docker.js';
import type { TaskConfig, TaskDriver } from '../../node/apps/drivers/types.js';
import { leaseFilePath, uptimeCs, writeLeaseFile } from '../../node/apps/lease-file.js';
import { waitFor } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';

const engine = await dockerForTests();
const dockerSkip = 'skip' in engine ? engine.skip : undefined;
if (dockerSkip) console.warn(`\n!!! SKIPPING the docker lease watchdog test: ${dockerSkip}\n`);
const owner = `lease-${process.pid}-${randomBytes(3).toString('hex')}`;
const dirs: string[] = [];

afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
  if (dockerSkip) return;
  const docker = new Docker({ socketPath: (engine as { socketPath: string }).socketPath });
  for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } })) {
    await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
  }
});

async function dataDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'omni-lease-'));
  dirs.push(d);
  return d;
}

let seq = 0;
function cfg(exclusive: boolean, extra: Partial<TaskConfig> = {}): TaskConfig {
  return { taskId: `lw-${process.pid}-${++seq}`, app: 'job', version: 1, command: ['sleep', '600'], env: {}, ports: [], volumes: [], cpu: 0, memoryBytes: 0, labels: {}, ...(exclusive ? { exclusive: true } : {}), ...extra };
}

/** The lease for the next ms milliseconds (what the daemon writes on each renewal). */
const leaseFor = (dir: string, ms: number) => writeLeaseFile(dir, performance.now() + ms, 0);

async function running(d: TaskDriver, id: string): Promise<boolean> {
  return (await d.inspect(id))?.state === 'running';
}

describe('lease file', () => {
  it('holds the deadline on the boot clock, in centiseconds', async () => {
    const dir = await dataDir();
    const before = uptimeCs()!;
    const written = await writeLeaseFile(dir, performance.now() + 5000, 1000);
    const after = uptimeCs()!;
    expect(written).toBeGreaterThanOrEqual(before + 590);
    expect(written).toBeLessThanOrEqual(after + 600);
  });
});

describe('process wrapper watchdog', () => {
  it('kills an exclusive task once its lease lapses, with no omnid running; a plain task runs on', async () => {
    const dir = await dataDir();
    const d = new ProcessDriver(dir);
    await leaseFor(dir, 1500);
    const ex = cfg(true);
    const plain = cfg(false);
    await d.start(ex);
    await d.start(plain);
    expect(await running(d, ex.taskId)).toBe(true);
    await waitFor('the exclusive task to be killed', async () => !(await running(d, ex.taskId)), 15_000, 200);
    expect(await running(d, plain.taskId)).toBe(true);
    await d.stop(plain.taskId, 500);
  });

  it('a lease that keeps being renewed keeps the task running past its first deadline', async () => {
    const dir = await dataDir();
    const d = new ProcessDriver(dir);
    await leaseFor(dir, 1500);
    const ex = cfg(true);
    await d.start(ex);
    const renew = setInterval(() => void leaseFor(dir, 1500), 300);
    try {
      await new Promise((r) => setTimeout(r, 3500));
      expect(await running(d, ex.taskId)).toBe(true);
    } finally {
      clearInterval(renew);
    }
    await waitFor('the task to be killed once renewals stop', async () => !(await running(d, ex.taskId)), 15_000, 200);
  });

  it('a missing lease file counts as lapsed', async () => {
    const dir = await dataDir();
    const d = new ProcessDriver(dir);
    await leaseFor(dir, 60_000);
    const ex = cfg(true);
    await d.start(ex);
    await rm(leaseFilePath(dir));
    await waitFor('the task to be killed', async () => !(await running(d, ex.taskId)), 15_000, 200);
    await writeFile(leaseFilePath(dir), 'garbage\n');
    const again = cfg(true);
    await d.start(again);
    await waitFor('a task with an unreadable deadline to be killed', async () => !(await running(d, again.taskId)), 15_000, 200);
  });
});

describe.skipIf(dockerSkip !== undefined)('docker lease watchdog', () => {
  it('kills an exclusive container once its lease lapses, with no omnid running', async () => {
    const dir = await dataDir();
    const { socketPath, image } = engine as { socketPath: string; image: string };
    const d = new DockerDriver({ socketPath, owner, nodeName: 'test', leaseDir: dir });
    await leaseFor(dir, 8000);
    const ex = cfg(true, { image, command: ['sleep', '600'] });
    const plain = cfg(false, { image, command: ['sleep', '600'] });
    await d.start(ex);
    await d.start(plain);
    expect(await running(d, ex.taskId)).toBe(true);
    await waitFor('the exclusive container to be killed', async () => !(await running(d, ex.taskId)), 30_000, 250);
    expect(await running(d, plain.taskId)).toBe(true);
    await d.stop(plain.taskId, 500);
  });

  it('refuses an exclusive container when it has no lease dir (nothing could stop it while omnid is down)', async () => {
    const { socketPath, image } = engine as { socketPath: string; image: string };
    const d = new DockerDriver({ socketPath, owner, nodeName: 'test' });
    await expect(d.start(cfg(true, { image, command: ['sleep', '600'] }))).rejects.toThrow(/exclusive tasks need a lease file/);
  });
});
