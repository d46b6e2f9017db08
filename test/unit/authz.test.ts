// The authorization table (protocol/cluster/authz.ts): every command has a row, and what a
// member, a joining node, an admin token and the leader's own duties may each propose.
import { describe, expect, it } from 'vitest';
import { COMMAND_AUTHZ, CONF_AUTHZ, authorize, authzView, type Action, type AuthzView, type Principal } from '../../protocol/cluster/authz.js';
import { COMMAND_TYPES, decodableCommandTypes, type Command } from '../../protocol/cluster/commands.js';
import { ClusterState } from '../../protocol/cluster/state.js';
import { statusKey, taskKey } from '../../protocol/apps/model.js';

const ADMIN: Principal = { kind: 'admin', tokenId: 't1' };
const LEADER: Principal = { kind: 'leader' };
const member = (nodeId: string): Principal => ({ kind: 'member', nodeId });
const joiner = (nodeId: string): Principal => ({ kind: 'joiner', nodeId });
const cmd = (command: Command): Action => ({ kind: 'command', command });

/** Tasks t1 on nodeA, t2 on nodeB. */
const VIEW: AuthzView = { taskNodeId: (id) => ({ t1: 'nodeA', t2: 'nodeB' } as Record<string, string>)[id] };

const REGISTRATION = { id: 'nodeA', name: 'a', addrs: [], apiUrl: 'http://127.0.0.1:1', resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'x64', gpus: [] }, labels: {} };

/** One example of every command type, acting on nodeA where it names a node. */
const EXAMPLES: { [T in Command['type']]: Extract<Command, { type: T }> } = {
  'cluster.init': { type: 'cluster.init', clusterId: 'c', voterTarget: 3, rootNodeId: 'nodeA', ephemeralRoot: false },
  'config.set': { type: 'config.set', voterTarget: 3 },
  'root.retire': { type: 'root.retire' },
  'node.register': { type: 'node.register', node: REGISTRATION },
  'node.status': { type: 'node.status', id: 'nodeA', status: 'up' },
  'node.remove': { type: 'node.remove', id: 'nodeA' },
  'node.eligibility': { type: 'node.eligibility', id: 'nodeA', eligibility: 'draining' },
  'token.add': { type: 'token.add', token: { id: 'x', hash: 'a'.repeat(64), role: 'admin', name: '' } },
  'token.revoke': { type: 'token.revoke', id: 'x' },
  'kv.put': { type: 'kv.put', key: statusKey('t1'), value: '{}' },
  'kv.delete': { type: 'kv.delete', key: 'k' },
  'kv.txn': { type: 'kv.txn', compares: [], ops: [{ op: 'put', key: statusKey('t1'), value: '{}' }] },
};

describe('authz table', () => {
  it('has a row for every command type the decoder knows, and COMMAND_TYPES lists exactly those', () => {
    const decodable = decodableCommandTypes().sort();
    expect([...COMMAND_TYPES].sort()).toEqual(decodable);
    const missing = decodable.filter((t) => !Object.hasOwn(COMMAND_AUTHZ, t));
    expect(missing, `commands without an authz row in protocol/cluster/authz.ts: ${missing.join(', ')}`).toEqual([]);
    // And no stale rows for commands that no longer exist.
    expect(Object.keys(COMMAND_AUTHZ).sort()).toEqual(decodable);
    for (const t of decodable) expect(Object.hasOwn(EXAMPLES, t), `test example for ${t}`).toBe(true);
  });

  it('has a row for every membership change', () => {
    expect(Object.keys(CONF_AUTHZ).sort()).toEqual(['addLearner', 'addVoter', 'remove']);
  });

  it('an unknown command type is refused for everyone, the leader included', () => {
    const bogus = { kind: 'command', command: { type: 'token.mint' } } as unknown as Action;
    for (const p of [ADMIN, LEADER, member('nodeA')]) expect(authorize(p, bogus, VIEW).ok).toBe(false);
    const inherited = { kind: 'command', command: { type: 'toString' } } as unknown as Action;
    expect(authorize(ADMIN, inherited, VIEW).ok).toBe(false);
  });
});

describe('a member acting for itself', () => {
  const allowed = (p: Principal, c: Command) => authorize(p, cmd(c), VIEW).ok;

  it('may only register itself, report its own status and remove itself (leave)', () => {
    const self = member('nodeA');
    const other = member('nodeB');
    expect(allowed(self, EXAMPLES['node.register'])).toBe(true);
    expect(allowed(other, EXAMPLES['node.register'])).toBe(false);
    expect(allowed(self, EXAMPLES['node.status'])).toBe(true);
    expect(allowed(other, EXAMPLES['node.status'])).toBe(false);
    expect(allowed(self, EXAMPLES['node.remove'])).toBe(true);
    expect(allowed(other, EXAMPLES['node.remove'])).toBe(false);
  });

  it('may write the status of its own tasks only', () => {
    expect(allowed(member('nodeA'), { type: 'kv.put', key: statusKey('t1'), value: '{}' })).toBe(true);
    expect(allowed(member('nodeA'), { type: 'kv.put', key: statusKey('t2'), value: '{}' })).toBe(false);
    expect(allowed(member('nodeA'), { type: 'kv.put', key: statusKey('nope'), value: '{}' })).toBe(false);
    expect(allowed(member('nodeA'), { type: 'kv.put', key: taskKey('t1'), value: '{}' })).toBe(false);
    expect(allowed(member('nodeA'), { type: 'kv.put', key: 'app/config', value: 'x' })).toBe(false);
    expect(allowed(member('nodeA'), { type: 'kv.txn', compares: [], ops: [{ op: 'put', key: statusKey('t1'), value: '{}' }, { op: 'put', key: 'apps/x', value: '{}' }] })).toBe(false);
    expect(allowed(member('nodeA'), { type: 'kv.txn', compares: [], ops: [{ op: 'delete', key: statusKey('t1') }] })).toBe(false);
  });

  it('may not mint or revoke tokens, write or delete keys, change config, eligibility or the root', () => {
    for (const t of ['token.add', 'token.revoke', 'kv.delete', 'config.set', 'node.eligibility', 'root.retire', 'cluster.init'] as const) {
      const r = authorize(member('nodeA'), cmd(EXAMPLES[t]), VIEW);
      expect(r.ok, t).toBe(false);
      if (!r.ok) expect(r.error.code).toBe('FORBIDDEN');
    }
  });

  it('may not change membership except its own removal: no self-promotion', () => {
    const conf = (type: 'addVoter' | 'addLearner' | 'remove', node: string): Action => ({ kind: 'conf', change: { type, node } });
    expect(authorize(member('nodeA'), conf('addVoter', 'nodeA'), VIEW).ok).toBe(false);
    expect(authorize(member('nodeA'), conf('addLearner', 'nodeA'), VIEW).ok).toBe(false);
    expect(authorize(member('nodeA'), conf('remove', 'nodeB'), VIEW).ok).toBe(false);
    expect(authorize(member('nodeA'), conf('remove', 'nodeA'), VIEW).ok).toBe(true);
  });
});

describe('a joining node, an admin token, the leader', () => {
  it('a joiner may register itself and be added as a learner, nothing else', () => {
    const j = joiner('nodeA');
    for (const t of COMMAND_TYPES) expect(authorize(j, cmd(EXAMPLES[t]), VIEW).ok, t).toBe(t === 'node.register');
    expect(authorize(joiner('nodeB'), cmd(EXAMPLES['node.register']), VIEW).ok).toBe(false);
    expect(authorize(j, { kind: 'conf', change: { type: 'addLearner', node: 'nodeA' } }, VIEW).ok).toBe(true);
    expect(authorize(j, { kind: 'conf', change: { type: 'addLearner', node: 'nodeB' } }, VIEW).ok).toBe(false);
    expect(authorize(j, { kind: 'conf', change: { type: 'addVoter', node: 'nodeA' } }, VIEW).ok).toBe(false);
  });

  it('an admin token manages tokens, keys, apps and members, but does not promote or register nodes', () => {
    for (const t of ['token.add', 'token.revoke', 'kv.put', 'kv.delete', 'kv.txn', 'node.remove', 'node.eligibility', 'config.set'] as const) {
      expect(authorize(ADMIN, cmd(EXAMPLES[t]), VIEW).ok, t).toBe(true);
    }
    for (const t of ['cluster.init', 'root.retire', 'node.register', 'node.status'] as const) expect(authorize(ADMIN, cmd(EXAMPLES[t]), VIEW).ok, t).toBe(false);
    expect(authorize(ADMIN, { kind: 'conf', change: { type: 'addVoter', node: 'nodeA' } }, VIEW).ok).toBe(false);
    expect(authorize(ADMIN, { kind: 'conf', change: { type: 'remove', node: 'nodeA' } }, VIEW).ok).toBe(true);
  });

  it('the leader duties decide membership and statuses', () => {
    for (const t of ['cluster.init', 'root.retire', 'node.status', 'node.remove', 'node.eligibility', 'kv.txn', 'token.add'] as const) {
      expect(authorize(LEADER, cmd(EXAMPLES[t]), VIEW).ok, t).toBe(true);
    }
    for (const type of ['addVoter', 'addLearner', 'remove'] as const) expect(authorize(LEADER, { kind: 'conf', change: { type, node: 'nodeB' } }, VIEW).ok).toBe(true);
  });

  it('a refusal names the command and who may do it', () => {
    const r = authorize(member('nodeA'), cmd(EXAMPLES['token.add']), VIEW);
    expect(r).toEqual({ ok: false, error: { code: 'FORBIDDEN', message: expect.stringMatching(/^token\.add refused: .*admin token/) } });
  });
});

describe('authzView over the cluster state', () => {
  it('finds the node a task is placed on from its task record', () => {
    const s = new ClusterState();
    const enc = (c: Command) => new TextEncoder().encode(JSON.stringify(c));
    s.apply(1, enc({ type: 'kv.put', key: taskKey('t9'), value: JSON.stringify({ id: 't9', nodeId: 'nodeZ' }) }));
    s.apply(2, enc({ type: 'kv.put', key: taskKey('bad'), value: 'not json' }));
    const v = authzView(s);
    expect(v.taskNodeId('t9')).toBe('nodeZ');
    expect(v.taskNodeId('bad')).toBeUndefined();
    expect(v.taskNodeId('none')).toBeUndefined();
  });
});
