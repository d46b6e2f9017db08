// The command schema gate (protocol/cluster/schema.ts): a field of a later schema never reaches
// the log while a member could not read it, and an omnid older than the cluster cannot join.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { COMMAND_SCHEMA, SCHEMA_NODE_DRIVERS, SCHEMA_QUOTA_SET, clusterSchema, readSchema, resourcesForSchema } from '../../protocol/cluster/schema.js';
import { Membership, type MembershipDeps } from '../../node/cluster/membership.js';
import type { Command } from '../../protocol/cluster/state.js';

const member = (id: string, status = 'up') => ({ id, status });

describe('clusterSchema', () => {
  it('is the lowest schema among the members that have not left; one not heard from counts as 1', () => {
    const heard = new Map([['b', 2], ['c', 2]]);
    expect(COMMAND_SCHEMA).toBeGreaterThanOrEqual(SCHEMA_NODE_DRIVERS);
    expect(clusterSchema('a', [member('a'), member('b'), member('c')], (id) => heard.get(id))).toBe(2);
    expect(clusterSchema('a', [member('a'), member('b'), member('c'), member('old')], (id) => heard.get(id))).toBe(1);
    expect(clusterSchema('a', [member('a'), member('b'), member('gone', 'left')], (id) => heard.get(id))).toBe(2);
    expect(clusterSchema('a', [member('a'), member('b', 'down')], () => 1)).toBe(1); // a down member still counts
    expect(clusterSchema('a', [member('a')], () => undefined)).toBe(COMMAND_SCHEMA); // alone
    expect(clusterSchema('a', [member('b')], () => 2)).toBe(1); // not a member (yet)
  });

  it('reads an untrusted schema number; leaves later fields out of an earlier schema', () => {
    expect([readSchema(2), readSchema(undefined), readSchema('2'), readSchema(0), readSchema(1.5)]).toEqual([2, 1, 1, 1, 1]);
    const r = { cpuCores: 2, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [], drivers: ['docker', 'process'] };
    expect(resourcesForSchema(r, 1)).toEqual({ cpuCores: 2, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [] });
    expect(resourcesForSchema(r, 2)).toBe(r);
  });
});

describe('join: the leader gates on the schema', () => {
  const TOKEN = 'OMNIJ1.test-join-token';
  const proposed: Command[] = [];
  const deps = (schema: number, initialising = false, minSchema?: number): MembershipDeps =>
    ({
      id: 'leader',
      log: { info: () => undefined, warn: () => undefined, debug: () => undefined, error: () => undefined },
      raft: {
        isLeader: true,
        leader: 'leader',
        raft: { voters: new Set(['leader']), learners: new Set() },
        state: { tokens: () => [{ id: 't', role: 'join', name: 'j', hash: createHash('sha256').update(TOKEN).digest('hex') }], node: () => undefined, nodes: () => [], config: () => ({ clusterId: 'c1', voterTarget: 3, rootNodeId: '', rootRetired: false, ephemeralRoot: false, ...(minSchema !== undefined ? { minSchema } : {}) }) },
      },
      writes: {
        proposeAsOnLeader: async (_p: unknown, c: Command) => (proposed.push(c), { ok: true }),
        changeMembershipAsOnLeader: async () => ({ ok: true }),
      },
      clusterId: () => 'c1',
      clusterCa: async () => null,
      clusterSchema: () => schema,
      initialising: () => initialising,
      // the wait for the root's bootstrap ran out (a root that finishes in time: the test below)
      untilInitialised: async () => undefined,
    }) as unknown as MembershipDeps;
  const node = { id: 'joiner', name: 'j1', addrs: [], apiUrl: 'http://127.0.0.1:1', labels: {}, resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [], drivers: ['docker'] } };

  it('refuses an omnid that speaks an older schema than the members, with a clear message', async () => {
    await expect(new Membership(deps(2)).handleJoin({ token: TOKEN, node }, 'joiner')).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining('speak command schema 2 and the joining omnid speaks 1') });
    await expect(new Membership(deps(2)).handleJoin({ token: TOKEN, node, schema: 2 }, 'joiner')).resolves.toMatchObject({ clusterId: 'c1' });
  });

  it('refuses an omnid below the replicated floor even while a silent member makes the heard schema 1 (a quota change is in the log)', async () => {
    proposed.length = 0;
    await expect(new Membership(deps(1, false, SCHEMA_QUOTA_SET)).handleJoin({ token: TOKEN, node, schema: SCHEMA_QUOTA_SET - 1 }, 'joiner')).rejects.toMatchObject({ code: 'CONFLICT', message: expect.stringContaining(`speak command schema ${SCHEMA_QUOTA_SET} and the joining omnid speaks ${SCHEMA_QUOTA_SET - 1}`) });
    expect(proposed).toEqual([]);
    await expect(new Membership(deps(1, false, SCHEMA_QUOTA_SET)).handleJoin({ token: TOKEN, node, schema: SCHEMA_QUOTA_SET }, 'joiner')).resolves.toMatchObject({ clusterId: 'c1' });
  });

  it('a root still creating the cluster when the wait runs out answers UNAVAILABLE (the joiner retries), not a refusal, and proposes nothing', async () => {
    proposed.length = 0;
    await expect(new Membership(deps(2, true)).handleJoin({ token: 'OMNIJ1.a-token-not-in-the-state-yet', node, schema: 2 }, 'joiner')).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining('still being initialised') });
    expect(proposed).toEqual([]);
  });

  it('a join that arrives while the root creates the cluster waits for it and is admitted with the join token the bootstrap adds', async () => {
    proposed.length = 0;
    let initialising = true;
    let finish!: () => void;
    const finished = new Promise<void>((r) => (finish = r));
    const base = deps(2);
    const tokens = base.raft.state.tokens;
    const d = {
      ...base,
      raft: { ...base.raft, state: { ...base.raft.state, tokens: () => (initialising ? [] : tokens()) } },
      initialising: () => initialising,
      untilInitialised: () => finished,
    } as unknown as MembershipDeps;
    const answer = new Membership(d).handleJoin({ token: TOKEN, node, schema: 2 }, 'joiner');
    await new Promise((r) => setTimeout(r, 10));
    expect(proposed).toEqual([]); // nothing decided while the root creates the cluster
    initialising = false;
    finish();
    await expect(answer).resolves.toMatchObject({ clusterId: 'c1' });
    expect(proposed.map((c) => c.type)).toEqual(['node.register']);
  });

  it('a newer joiner into an older cluster is admitted, its record without the later fields', async () => {
    proposed.length = 0;
    await new Membership(deps(1)).handleJoin({ token: TOKEN, node, schema: 2 }, 'joiner');
    const reg = proposed.find((c) => c.type === 'node.register') as Extract<Command, { type: 'node.register' }>;
    expect('drivers' in reg.node.resources).toBe(false);
    proposed.length = 0;
    await new Membership(deps(2)).handleJoin({ token: TOKEN, node, schema: 2 }, 'joiner');
    expect((proposed.find((c) => c.type === 'node.register') as Extract<Command, { type: 'node.register' }>).node.resources.drivers).toEqual(['docker']);
  });
});
