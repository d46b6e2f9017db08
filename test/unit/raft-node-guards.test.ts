// Issue 11, part 1: what the Raft driver does when something cannot be trusted. A broken
// invariant on any path into the core is fatal (never blamed on a stream); transferLeader off
// the leader is NOT_LEADER (no message every transport would reject); a snapshot the state
// machine refuses is never written; an apply that shows a diverged applied index is fatal.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import type { OmniError } from '../../node/errors.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { RaftInvariantError } from '../../protocol/raft/errors.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { MessageType, emptyMessage, type Message } from '../../protocol/raft/types.js';
import { waitFor } from '../../node/local-cluster.js';

const ID = 'self';
const PEER = 'peer';
const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A node of a one-voter cluster (it leads), or of a two-voter one whose peer never answers (it cannot). */
async function node(voters: string[]): Promise<{ node: RaftNode; storage: RaftStorage; dir: string; fatal: Error[]; sent: Message[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-guards-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState(voters);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const fatal: Error[] = [];
  const sent: Message[] = [];
  const n = await RaftNode.open({
    id: ID,
    storage,
    send: (ms) => sent.push(...ms),
    log: silentLogger,
    timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
    onFatal: (err) => fatal.push(err),
  });
  nodes.push(n);
  n.start();
  if (voters.length === 1) await waitFor('a leader', () => n.isLeader, 5000, 10);
  return { node: n, storage, dir, fatal, sent };
}

const put = (key: string) => encodeCommand({ type: 'kv.put', key, value: 'v' });

describe('RaftNode guards', () => {
  it('a broken invariant from a message is fatal for the node, not an error for the transport', async () => {
    const { node: n, fatal } = await node([ID]);
    vi.spyOn(n.raft, 'step').mockImplementation(() => {
      throw new RaftInvariantError('log index went backwards');
    });
    expect(() => n.step({ ...emptyMessage(MessageType.Heartbeat, PEER, ID, 9) })).not.toThrow();
    expect(fatal.map((e) => (e as OmniError).code)).toEqual(['RAFT_INVARIANT']);
    expect(fatal[0].message).toMatch(/raft step: log index went backwards/);
    await expect(n.propose(put('after'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });

  it('a broken invariant in tick, propose or readIndex is fatal too', async () => {
    for (const path of ['tick', 'propose', 'readIndex'] as const) {
      const { node: n, fatal } = await node([ID]);
      vi.spyOn(n.raft, path).mockImplementation(() => {
        throw new RaftInvariantError(`${path} broke`);
      });
      if (path === 'propose') await expect(n.propose(put('x'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      if (path === 'readIndex') await expect(n.readBarrier(1000)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      await waitFor(`fatal after ${path}`, () => fatal.length > 0, 5000, 10);
      expect(fatal[0].message).toMatch(new RegExp(`raft ${path}: ${path} broke`));
    }
  });

  it('transferLeader on a node that does not lead is NOT_LEADER and sends nothing', async () => {
    const { node: n, sent } = await node([ID, PEER]);
    const before = sent.length;
    expect(() => n.transferLeader(PEER)).toThrow(expect.objectContaining({ code: 'NOT_LEADER' }));
    expect(sent.slice(before).filter((m) => m.type === MessageType.TransferLeader)).toEqual([]);
    expect(n.raft.transferLeader(PEER)).toBe(false);
    expect(n.raft.hasReady() ? n.raft.ready().messages.filter((m) => m.type === MessageType.TransferLeader) : []).toEqual([]);
  });

  it('a snapshot the state machine refuses is never written (no crash loop at the next start)', async () => {
    const { node: n, storage, dir, fatal } = await node([ID, PEER]);
    const snap = { meta: { index: 100, term: 5, conf: { voters: [ID, PEER], learners: [] } }, data: new TextEncoder().encode('not a cluster state') };
    n.step({ ...emptyMessage(MessageType.Snap, PEER, ID, 5), snapshot: snap });
    await waitFor('fatal', () => fatal.length > 0, 5000, 10);
    expect((fatal[0] as OmniError).code).toBe('SNAPSHOT_REFUSED');
    await n.stop();
    await storage.close();
    const reopened = await RaftStorage.open(dir);
    try {
      const loaded = await reopened.load();
      expect(loaded.snapshot).toBeUndefined();
    } finally {
      await reopened.close();
    }
  });

  it('an apply that shows the state machine and the log disagree is fatal (APPLY_DIVERGED)', async () => {
    const { node: n, fatal } = await node([ID]);
    expect((await n.propose(put('a'))).ok).toBe(true);
    // The state machine gets ahead of the log by one entry.
    n.state.apply(n.state.appliedIndex + 1, put('sneaked in'));
    await expect(n.propose(put('b'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((fatal[0] as OmniError).code).toBe('APPLY_DIVERGED');
  });
});
