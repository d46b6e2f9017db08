// RaftNode.silentForMs: the leader's count of how long it has not heard from a peer (what an
// exclusive task's replacement waits on). Counted in ticks from the last message, never from
// before this node took the lead; 0 for itself and on a follower.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { MessageType, emptyMessage } from '../../protocol/raft/types.js';
import { waitFor } from '../../node/local-cluster.js';

const ID = 'self';
const PEER = 'peer';
const TICK_MS = 10;
const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function open(voters: string[]): Promise<RaftNode> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-silence-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState(voters);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const n = await RaftNode.open({ id: ID, storage, send: () => undefined, log: silentLogger, timing: { tickMs: TICK_MS, electionTick: 10, heartbeatTick: 1 } });
  nodes.push(n);
  n.start();
  return n;
}

describe('RaftNode.silentForMs', () => {
  it('grows while a peer says nothing, from when this node took the lead, and drops when it speaks', async () => {
    const n = await open([ID]);
    await waitFor('a leader', () => n.isLeader, 5000, 5);
    expect(n.silentForMs(ID)).toBe(0);
    await waitFor('ten ticks of silence', () => n.silentForMs(PEER) >= 10 * TICK_MS, 5000, 5);
    const before = n.silentForMs(PEER);
    n.step({ ...emptyMessage(MessageType.HeartbeatResp, PEER, ID, n.raft.term) });
    expect(n.silentForMs(PEER)).toBeLessThan(before);
    expect(n.silentForMs(PEER)).toBeLessThanOrEqual(TICK_MS);
  });

  it('is 0 on a node that does not lead (it cannot vouch for anyone)', async () => {
    const n = await open([ID, PEER]); // the peer never answers: no leader
    await new Promise((r) => setTimeout(r, 30 * TICK_MS));
    expect(n.isLeader).toBe(false);
    expect(n.silentForMs(PEER)).toBe(0);
  });
});
