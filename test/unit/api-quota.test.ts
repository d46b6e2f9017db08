// PUT /v1/quota's schema gate (node/api/server.ts): the quota's new field (config.set
// maxStateBytes, command schema 3) is proposed only once every member reads it — an older
// member would refuse the entry and its state would differ. The API server over a plain
// ClusterState replica; proposals applied to it in order, as Raft would.
import { afterEach, describe, expect, it } from 'vitest';
import { ApiServer, type ApiServerDeps } from '../../node/api/server.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { newAdminToken, sha256Hex } from '../../node/api/tokens.js';
import { silentLogger } from '../../node/logger.js';
import { SCHEMA_QUOTA_SET } from '../../protocol/cluster/schema.js';

const servers: ApiServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

async function serve(schema: number) {
  const state = new ClusterState();
  const token = newAdminToken();
  const proposed: Command[] = [];
  const apply = (c: Command) => {
    const r = state.apply(state.appliedIndex + 1, encodeCommand(c));
    if (!r.ok) throw new Error(r.error.message);
  };
  apply({ type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: '', ephemeralRoot: false, maxStateBytes: 200_000 });
  apply({ type: 'token.add', token: { id: 'a1', hash: sha256Hex(token), role: 'admin', name: '' } });
  const deps = {
    id: 'n1',
    name: 'n1',
    raft: { state, isLeader: true, kvGet: async () => undefined, kvList: async () => [] },
    liveness: undefined,
    networkKeyHex: '00'.repeat(32),
    leave: async () => undefined,
    clusterSchema: () => schema,
    readBarrier: async () => undefined,
    proposeOk: async (c: Command) => {
      proposed.push(c);
      apply(c);
    },
  } as unknown as ApiServerDeps;
  const api = new ApiServer(deps, silentLogger);
  servers.push(api);
  await api.listen('127.0.0.1:0');
  const call = async (method: string, body?: unknown) => {
    const res = await fetch(`${api.url}/v1/quota`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };
  return { state, proposed, call };
}

describe('PUT /v1/quota', () => {
  it('is refused with 409 while a member reads an older command schema, and proposes nothing', async () => {
    const { proposed, call } = await serve(SCHEMA_QUOTA_SET - 1);
    const r = await call('PUT', { maxStateBytes: 300_000 });
    expect(r.status).toBe(409);
    expect(JSON.stringify(r.body)).toMatch(new RegExp(`command schema ${SCHEMA_QUOTA_SET}; the cluster's is ${SCHEMA_QUOTA_SET - 1}`));
    expect(proposed).toEqual([]);
    expect((await call('GET')).body).toMatchObject({ maxStateBytes: 200_000, alarm: false });
  });

  it('proposes one config.set keeping the voter target once every member reads it; refuses bad bodies with 400', async () => {
    const { state, proposed, call } = await serve(SCHEMA_QUOTA_SET);
    const r = await call('PUT', { maxStateBytes: 300_000 });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ maxStateBytes: 300_000, previousMaxStateBytes: 200_000, alarm: false });
    expect(proposed).toEqual([{ type: 'config.set', voterTarget: 3, maxStateBytes: 300_000 }]);
    expect(state.config()).toMatchObject({ voterTarget: 3, maxStateBytes: 300_000 });
    for (const body of [{ maxStateBytes: 1 }, { maxStateBytes: 2 ** 40 }, { maxStateBytes: 100_000.5 }, { maxStateBytes: '4GiB' }, { other: 1 }, [1]]) {
      expect((await call('PUT', body)).status).toBe(400);
    }
    expect(proposed).toHaveLength(1);
  });

  it('refuses a quota below what the state holds unless forced', async () => {
    const { state, proposed, call } = await serve(SCHEMA_QUOTA_SET);
    for (let i = 0; i < 40; i++) state.apply(state.appliedIndex + 1, encodeCommand({ type: 'kv.put', key: `k${i}`, value: 'v'.repeat(2000) }));
    expect(state.sizeBytes).toBeGreaterThan(70_000);
    const refused = await call('PUT', { maxStateBytes: 65_536 });
    expect(refused.status).toBe(409);
    expect(JSON.stringify(refused.body)).toMatch(/more than a quota of 65536/);
    expect(proposed).toEqual([]);
    const forced = await call('PUT', { maxStateBytes: 65_536, force: true });
    expect(forced.status).toBe(200);
    expect(forced.body).toMatchObject({ maxStateBytes: 65_536, alarm: true });
    expect(proposed).toEqual([{ type: 'config.set', voterTarget: 3, maxStateBytes: 65_536 }]);
  });
});
