// Issue 9, point 3: at the state quota, writes were answered 429 yet each refused write still
// entered the Raft log (commit index 609 → 3,288) until the leader's disk filled. Now the leader
// checks the replicated quota (omnid init --max-state-bytes) before proposing: refused writes
// are not logged, deletes are still accepted, and freeing space lets writes in again.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../node/local-cluster.js';
import type { OmniError } from '../../node/errors.js';
import { TEST_FLAGS, status, waitFor } from './helpers.js';

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
});
