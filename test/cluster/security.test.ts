// The outside trial of issue 9, point 2, replayed: a host that joined with the join token (so
// it holds the network key, a member identity and a control socket) tries to become cluster
// admin. Before the fix it minted an admin token through its control socket, promoted itself
// with the membership RPC, and one forged learner heartbeat moved the term from 3 to 104.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { peerIdFromString } from '@libp2p/peer-id';
import { multiaddr } from '@multiformats/multiaddr';
import type { LocalCluster } from '../../node/local-cluster.js';
import { ApiClient } from '../../node/api/client.js';
import { createHost, loadOrCreateIdentity, type OmniHost } from '../../node/p2p/host.js';
import { networkKeyFromJoinToken } from '../../node/api/tokens.js';
import { Rpc } from '../../node/p2p/rpc.js';
import { Forwarder } from '../../node/p2p/forwarder.js';
import { RaftTransport } from '../../node/raft/raft-transport.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { ConfChangeType, MessageType, emptyMessage } from '../../protocol/raft/types.js';
import { formCluster, status, waitFor } from './helpers.js';

interface NodeView {
  name: string;
  id: string;
  role: string;
  addrs: string[];
}

const VOTERS = ['n1', 'n2', 'n3'];

describe('a host joined with the join token cannot act as cluster admin (issue 9 trial)', () => {
  let c: LocalCluster;
  let nodes: NodeView[];
  let attacker: OmniHost | undefined;

  beforeAll(async () => {
    c = await formCluster(VOTERS);
    await c.join('n4'); // beyond the voter target: a non-voter (learner)
    // It asked n1, which no longer leads: only the leader admits nodes, so n1 named it.
    expect(c.nodes.get('n4')!.lines.some((l) => l.includes('does not lead; asking the leader'))).toBe(true);
    // /v1/nodes reads n1's replica, which may apply the join's conf change a moment later.
    const client = c.client('n1');
    await waitFor('n4 listed as a non-voter on n1', async () => {
      nodes = (await client.get<{ nodes: NodeView[] }>('/v1/nodes')).nodes;
      return nodes.find((n) => n.name === 'n4')?.role === 'non-voter';
    }, 10_000);
    client.close();
    expect(nodes.find((n) => n.name === 'n4')?.role).toBe('non-voter');
  });
  afterAll(async () => {
    await attacker?.stop();
    await c?.destroy();
  });

  const code = async (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => 'ACCEPTED',
      (err: unknown) => (err as OmniError).code ?? String(err),
    );

  it("its control socket speaks for the node itself (no admin token, no writes, no removals; reads and leave only), and its join token is no API token", async () => {
    const control = new ApiClient(`unix:${join(c.dataDir('n4'), 'api.sock')}`, undefined);
    try {
      expect(await code(control.post('/v1/tokens', { role: 'admin', name: 'mine' }))).toBe('FORBIDDEN');
      expect(await code(control.put('/v1/kv/owned', { value: 'x' }))).toBe('FORBIDDEN');
      expect(await code(control.delete('/v1/nodes/n1?force=true'))).toBe('FORBIDDEN');
      expect(await code(control.post('/v1/apps', { name: 'evil', driver: 'process', command: ['sleep', '1'] }))).toBe('FORBIDDEN');
      expect((await control.get<{ node: string }>('/v1/status')).node).toBe('n4');
    } finally {
      control.close();
    }
    // And the join token is no API token.
    const asJoin = c.client('n4', c.joinToken);
    try {
      expect(await code(asJoin.get('/v1/status'))).toBe('UNAUTHORIZED');
      expect(await code(asJoin.post('/v1/tokens', { role: 'admin' }))).toBe('UNAUTHORIZED');
      expect(await code(asJoin.put('/v1/kv/x', { value: 'y' }))).toBe('UNAUTHORIZED');
    } finally {
      asJoin.close();
    }
  });

  it('with its own identity over libp2p: no token minting, no self-promotion, and forged Raft messages move no term', async () => {
    // The attacker stops its daemon and speaks for itself with the same identity and key.
    await c.kill('n4', 'SIGTERM');
    const before = await status(c, 'n1');
    const leaderId = nodes.find((n) => n.name === before.leader)!.id;
    const n4 = nodes.find((n) => n.name === 'n4')!;
    attacker = await createHost({ privateKey: await loadOrCreateIdentity(c.dataDir('n4')), networkKey: networkKeyFromJoinToken(c.joinToken), listen: ['/ip4/127.0.0.1/tcp/0'] });
    expect(attacker.peerId.toString()).toBe(n4.id);
    for (const n of nodes.filter((x) => x.name !== 'n4')) {
      await attacker.peerStore.merge(peerIdFromString(n.id), { multiaddrs: n.addrs.map((a) => multiaddr(a)) });
    }

    // Forwarded proposals: as itself, with the join token posing as an admin token, as a leader duty.
    const fwd = new Forwarder(attacker, async () => ({ ok: true }), silentLogger);
    const mint = encodeCommand({ type: 'token.add', token: { id: 'evil', hash: 'e'.repeat(64), role: 'admin', name: 'evil' } });
    expect(await code(fwd.propose(leaderId, mint, { kind: 'self' }))).toBe('FORBIDDEN');
    expect(await code(fwd.propose(leaderId, mint, { kind: 'admin', token: c.joinToken }))).toBe('UNAUTHORIZED');
    expect(await code(fwd.propose(leaderId, mint, { kind: 'leader-duty' } as never))).toBe('BAD_REQUEST');
    expect(await code(fwd.propose(leaderId, encodeCommand({ type: 'kv.put', key: 'owned', value: 'x' }), { kind: 'self' }))).toBe('FORBIDDEN');
    expect(await code(fwd.propose(leaderId, encodeCommand({ type: 'node.remove', id: leaderId }), { kind: 'self' }))).toBe('FORBIDDEN');
    await fwd.stop();

    // The membership RPC: it cannot promote itself, nor remove a voter.
    const rpc = new Rpc(attacker, silentLogger);
    expect(await code(rpc.call(leaderId, 'conf', { type: ConfChangeType.AddVoter, node: n4.id, caller: { kind: 'self' } }))).toBe('FORBIDDEN');
    expect(await code(rpc.call(leaderId, 'conf', { type: ConfChangeType.AddVoter, node: n4.id, caller: { kind: 'admin', token: c.joinToken } }))).toBe('UNAUTHORIZED');
    expect(await code(rpc.call(leaderId, 'conf', { type: ConfChangeType.RemoveNode, node: leaderId, caller: { kind: 'self' } }))).toBe('FORBIDDEN');
    expect(await code(rpc.call(leaderId, 'conf', { type: ConfChangeType.AddVoter, node: n4.id }))).toBe('BAD_REQUEST');

    // Forged Raft messages from the learner: a heartbeat and an append of a far higher term,
    // vote and pre-vote requests, timeoutNow — to every voter.
    const refusedBefore = new Map<string, number>();
    for (const n of VOTERS) refusedBefore.set(n, (await status(c, n)).refusedRaftMessages ?? 0);
    const transport = new RaftTransport({ host: attacker, onMessage: () => undefined, isTrustedSender: () => true, log: silentLogger });
    const high = before.term + 101;
    for (const v of nodes.filter((x) => VOTERS.includes(x.name))) {
      transport.send([
        { ...emptyMessage(MessageType.Heartbeat, n4.id, v.id, high), commit: before.commitIndex },
        { ...emptyMessage(MessageType.App, n4.id, v.id, high), index: before.commitIndex, logTerm: before.term, commit: before.commitIndex + 1 },
        { ...emptyMessage(MessageType.PreVote, n4.id, v.id, high), index: 1_000_000, logTerm: high },
        { ...emptyMessage(MessageType.Vote, n4.id, v.id, high), index: 1_000_000, logTerm: high },
        emptyMessage(MessageType.TimeoutNow, n4.id, v.id, before.term),
      ]);
    }
    // Every voter received and refused them (so this is not a message that never arrived).
    for (const n of VOTERS) {
      await waitFor(`${n} to refuse the forged messages`, async () => ((await status(c, n)).refusedRaftMessages ?? 0) >= refusedBefore.get(n)! + 5, 15_000);
    }
    await transport.stop();
    // Give an election every chance to happen (a few election timeouts), then compare.
    await new Promise((r) => setTimeout(r, 4000));
    for (const n of VOTERS) {
      const s = await status(c, n);
      expect(s.term, `term on ${n}`).toBe(before.term);
      expect(s.leader, `leader on ${n}`).toBe(before.leader);
    }
    const after = await status(c, 'n1');
    expect(after.voters).toEqual(VOTERS);
    expect(after.nonVoters).toEqual(['n4']);
    // Each voter logged that the claimant is not a voter (its voters said so).
    const warned = VOTERS.some((n) => c.nodes.get(n)!.lines.some((l) => l.includes('refused leader messages from n4')));
    expect(warned).toBe(true);
  });
});
