// Catch-up by snapshot, ephemeral root, omnid leave, and loss of quorum.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, status, put, get, waitFor } from './helpers.js';
import { createDrivers } from '../../node/apps/drivers/index.js';

const run = promisify(execFile);
let c: LocalCluster | undefined;
afterEach(async () => {
  await c?.destroy();
  c = undefined;
});

describe('cluster lifecycle', () => {
  it('a node that joins after log compaction catches up by snapshot', async () => {
    c = await formCluster(['s1', 's2', 's3'], { flags: ['--snapshot-entries', '50', '--snapshot-tail', '10'] });
    for (let i = 0; i < 120; i++) await put(c, `s${(i % 3) + 1}`, `snap/${i}`, `value-${i}`);
    await c.join('s4');
    const v = await waitFor('s4 has the data', async () => (await get(c!, 's4', 'snap/119', true).catch(() => undefined))?.value);
    expect(v).toBe('value-119');
    expect((await get(c, 's4', 'snap/0', true)).value).toBe('value-0');
    expect(c.nodes.get('s4')!.lines.some((l) => l.includes('installed snapshot'))).toBe(true);
  }, 180_000);

  it('--ephemeral-root leaves and exits once 3 other voters exist; the rest keeps committing', async () => {
    c = await formClusterEphemeral();
    const code = await waitFor('root exits', async () => (c!.nodes.get('e0')!.running ? undefined : { code: await c!.nodes.get('e0')!.exited }));
    expect(code.code).toBe(0);
    expect(c.nodes.get('e0')!.lines.some((l) => l.includes('ephemeral root retired'))).toBe(true);
    const s = await waitFor('root out of the configuration', async () => {
      const st = await status(c!, 'e1');
      return !st.voters.includes('e0') && !st.nonVoters.includes('e0') ? st : undefined;
    });
    expect(s.voters).toEqual(['e1', 'e2', 'e3']);
    await put(c, 'e2', 'after/root', 'still-works');
    expect((await get(c, 'e3', 'after/root')).value).toBe('still-works');
  }, 180_000);

  it('omnid leave removes a node cleanly; /health turns 503 when quorum is lost', async () => {
    c = await formCluster(['l1', 'l2', 'l3', 'l4']);
    // One replica per node, so l4 runs one; after leaving it must run none.
    const api = c.client('l1');
    expect((await api.raw('POST', '/v1/apps', { name: 'spread4', command: ['sleep', '600'], replicas: 4, antiAffinity: true })).status).toBe(201);
    await waitFor('a task on every node', async () => (await api.get<{ tasks: { node: string; state: string }[] }>('/v1/apps/spread4')).tasks.filter((t) => t.state === 'running').length === 4, 30_000, 200);
    const leave = await run('bin/omnid', ['leave', '--data', c.dataDir('l4'), '--json'], { cwd: process.cwd() });
    expect(JSON.parse(leave.stdout)).toMatchObject({ left: true, node: 'l4' });
    expect(await c.nodes.get('l4')!.exited).toBe(0);
    const left = await createDrivers(c.dataDir('l4')).process.recover();
    expect(left.filter((t) => t.state === 'running')).toEqual([]);
    api.close();
    // l4 is gone; if it was a voter, the autopilot promotes the remaining non-voter (a moment later).
    const s = await waitFor('l4 gone and 3 voters again', async () => {
      const st = await status(c!, 'l1');
      return !st.nonVoters.includes('l4') && !st.voters.includes('l4') && st.voters.length === 3 ? st : undefined;
    });
    expect(s.voters).toHaveLength(3);
    // Restarting a node that left is refused with a clear message.
    await expect(c.restart('l4')).rejects.toThrow(/left the cluster/);
    // Kill two of the three voters: the survivor reports unhealthy (503).
    const [a, b, survivor] = s.voters;
    await Promise.all([c.kill(a), c.kill(b)]);
    const h = await waitFor('503 without quorum', async () => {
      const client = c!.client(survivor);
      try {
        const r = await client.raw('GET', '/health');
        return r.status === 503 ? r : undefined;
      } finally {
        client.close();
      }
    });
    expect((h.body as { status: string }).status).toBe('unhealthy');
  }, 180_000);
});

async function formClusterEphemeral(): Promise<LocalCluster> {
  const { LocalCluster } = await import('../../node/local-cluster.js');
  const { TEST_FLAGS } = await import('./helpers.js');
  const cl = await LocalCluster.create({ flags: TEST_FLAGS });
  try {
    await cl.init('e0', ['--ephemeral-root']);
    for (const n of ['e1', 'e2', 'e3']) await cl.join(n);
  } catch (err) {
    await cl.destroy();
    throw err;
  }
  return cl;
}
