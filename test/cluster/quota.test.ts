// Issue 9, point 3: at the state quota, writes were answered 429 yet each refused write still
// entered the Raft log (commit index 609 → 3,288) until the leader's disk filled. Now the leader
// checks the replicated quota (omnid init --max-state-bytes) before proposing: refused writes
// are not logged, deletes are still accepted, and freeing space lets writes in again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { LocalCluster } from '../../node/local-cluster.js';
import type { OmniError } from '../../node/errors.js';
import { TEST_FLAGS, apiCall, status, waitFor } from './helpers.js';

const run = promisify(execFile);

const QUOTA_BYTES = 128 * 1024;
const VALUE = 'v'.repeat(4096);

describe('state quota (issue 9)', () => {
  let c: LocalCluster;
  beforeAll(async () => {
    c = await LocalCluster.create({ flags: TEST_FLAGS, echo: process.env.OMNI_TEST_ECHO === '1' });
    await c.init('n1', ['--max-state-bytes', String(QUOTA_BYTES)]);
    await c.join('n2');
    await waitFor('2 voters', async () => ((await status(c, 'n2')).voters.length === 2 ? true : undefined), 60_000);
  });
  afterAll(async () => c?.destroy());

  const putCode = async (node: string, key: string): Promise<string> => {
    const client = c.client(node);
    try {
      await client.put(`/v1/kv/${key}`, { value: VALUE });
      return 'OK';
    } catch (err) {
      return (err as OmniError).code;
    } finally {
      client.close();
    }
  };

  it('refuses writes past the quota with 429 before they reach the log, keeps deletes, and takes writes again once space is freed', async () => {
    const s0 = await status(c, 'n1');
    expect(s0.maxStateBytes).toBe(QUOTA_BYTES);
    // Fill the state, alternating the leader and the follower (whose writes are forwarded).
    let written = 0;
    for (;;) {
      const code = await putCode(written % 2 === 0 ? 'n1' : 'n2', `fill/${written}`);
      if (code === 'QUOTA_EXCEEDED') break;
      expect(code).toBe('OK');
      written++;
      expect(written).toBeLessThan(QUOTA_BYTES / VALUE.length + 10);
    }
    expect(written).toBeGreaterThan(10);
    const full = await status(c, 'n1');
    expect(full.stateBytes!).toBeLessThanOrEqual(QUOTA_BYTES);
    // Operator-visible: the QUOTA_EXCEEDED alarm degrades the cluster's health (omni status exits 2).
    expect(full.health).toBe('degraded');
    expect((full as unknown as { healthReasons: string[] }).healthReasons.join('\n')).toMatch(/QUOTA_EXCEEDED alarm/);

    // Many more writes, through both nodes: every one refused, and the log does not grow.
    const refused = 60;
    for (let i = 0; i < refused; i++) expect(await putCode(i % 2 === 0 ? 'n1' : 'n2', `over/${i}`)).toBe('QUOTA_EXCEEDED');
    const after = await status(c, 'n1');
    // (A leader election or a node's own report may add an entry or two; each refused write
    // used to add one.)
    expect(after.commitIndex - full.commitIndex).toBeLessThanOrEqual(2);

    // A refused write answers 429 over HTTP.
    const client = c.client('n2');
    const raw = await client.raw('PUT', '/v1/kv/over/raw', { value: VALUE });
    client.close();
    expect(raw.status).toBe(429);

    // Deletes are accepted at the quota, and the freed space takes writes again.
    const del = c.client('n2');
    await del.delete('/v1/kv/fill/0');
    await del.delete('/v1/kv/fill/1');
    del.close();
    expect(await putCode('n2', 'again/0')).toBe('OK');
  });

  it('omni quota shows the alarm; omni quota set changes the quota on every node — raised, writes pass again; lowered below the state only with --force, growth is then refused and deletes pass', async () => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n2')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const omni = (...args: string[]) => run('bin/omni', args, { env, timeout: 60_000 });
    interface QuotaView { stateBytes: number; maxStateBytes: number; alarm: boolean; previousMaxStateBytes?: number }
    let i = 0;
    while ((await putCode('n1', `refill/${i}`)) === 'OK') expect(++i).toBeLessThan(10);
    const full = JSON.parse((await omni('quota', '--json')).stdout) as QuotaView;
    expect(full).toMatchObject({ maxStateBytes: QUOTA_BYTES, alarm: true });
    expect((await omni('quota')).stdout).toMatch(/alarm\s+QUOTA_EXCEEDED/);

    // Raised through n2 (a follower or the leader): n1 applies it too, the alarm clears, writes pass.
    const raised = await omni('quota', 'set', '256KiB');
    expect(raised.stdout).toMatch(/quota changed from 128\.0KiB to 256\.0KiB/);
    await waitFor('n1 applies the new quota', async () => ((await status(c, 'n1')).maxStateBytes === 2 * QUOTA_BYTES ? true : undefined), 10_000);
    // (2 of 3 target voters keeps the health degraded: only the alarm's reason must be gone.)
    expect(((await status(c, 'n1')) as unknown as { healthReasons: string[] }).healthReasons.join('\n')).not.toMatch(/QUOTA_EXCEEDED/);
    for (let k = 0; k < 5; k++) expect(await putCode(k % 2 === 0 ? 'n1' : 'n2', `raised/${k}`)).toBe('OK');

    // Lowered below what the state holds: refused without --force (exit 1, the reason said);
    // with it, set, said, and growth refused; deletes still pass.
    const unforced = await omni('quota', 'set', '64k').then(() => undefined, (err: { code: number; stderr: string }) => err);
    expect(unforced?.code).toBe(1);
    expect(unforced?.stderr).toMatch(/the state holds \d+ bytes, more than a quota of 65536.*--force/);
    expect((await status(c, 'n1')).maxStateBytes).toBe(2 * QUOTA_BYTES);
    const lowered = JSON.parse((await omni('quota', 'set', '64k', '--force', '--json')).stdout) as QuotaView;
    expect(lowered).toMatchObject({ maxStateBytes: 64 * 1024, previousMaxStateBytes: 2 * QUOTA_BYTES, alarm: true });
    expect(lowered.stateBytes).toBeGreaterThan(64 * 1024);
    await waitFor('n1 applies the lower quota', async () => ((await status(c, 'n1')).maxStateBytes === 64 * 1024 ? true : undefined), 10_000);
    expect(await putCode('n1', 'lowered/0')).toBe('QUOTA_EXCEEDED');
    const del = c.client('n1');
    await del.delete('/v1/kv/raised/0');
    del.close();

    // Bad input: a usage error from the CLI (exit 2) and a 400 from the API, nothing changed.
    const usage = await omni('quota', 'set', '1.5').then(() => undefined, (err: { code: number; stderr: string }) => err);
    expect(usage?.code).toBe(2);
    expect(usage?.stderr).toMatch(/SIZE must be a size such as 4GiB/);
    for (const body of [{ maxStateBytes: 1 }, { maxStateBytes: '4GiB' }, { quota: 1 }, { maxStateBytes: 1 << 20, force: 'yes' }]) {
      const r = await apiCall<{ error: { code: string; message: string } }>(c, 'n1', 'PUT', '/v1/quota', body);
      expect(r.status).toBe(400);
    }
    expect((await status(c, 'n2')).maxStateBytes).toBe(64 * 1024);
  });
});
