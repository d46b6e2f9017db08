// RaftNode.peerDisconnected: when every connection to its leader closes, a follower forgets the
// leader and campaigns (pre-vote) within a fifth of the election timeout, instead of waiting a
// whole randomized election timeout. A disconnect of a peer that is not its leader changes nothing.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { MessageType, emptyMessage, type Message } from '../../protocol/raft/types.js';
import { waitFor } from '../../node/local-cluster.js';

const ID = 'self';
const LEADER = 'leader';
const OTHER = 'other';
// Ticks of 1 s and an election timeout of 10-20 ticks: no election by timeout within the test;
// the campaign after a lost leader comes within a fifth of 10 s.
const TIMING = { tickMs: 1000, electionTick: 10, heartbeatTick: 1 };
const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function follower(sent: Message[]): Promise<RaftNode> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-leader-lost-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState([ID, LEADER, OTHER]);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const n = await RaftNode.open({ id: ID, storage, send: (msgs) => sent.push(...msgs), log: silentLogger, timing: TIMING });
  nodes.push(n);
  n.start();
  n.step({ ...emptyMessage(MessageType.Heartbeat, LEADER, ID, 1) });
  await waitFor('the leader known', () => n.leader === LEADER, 5000, 5);
  return n;
}

describe('RaftNode.peerDisconnected', () => {
  it('a follower whose leader disconnected forgets it and sends pre-votes well before an election timeout', async () => {
    const sent: Message[] = [];
    const n = await follower(sent);
    n.peerDisconnected(OTHER); // not the leader: nothing changes
    expect(n.leader).toBe(LEADER);
    n.peerDisconnected(LEADER);
    expect(n.leader).toBe('');
    await waitFor('pre-votes sent', () => sent.some((m) => m.type === MessageType.PreVote && m.to === OTHER), 5000, 5);
    expect(n.raft.term).toBe(1); // a pre-vote does not raise the term
  });

  it('no campaign while the leader stays connected', async () => {
    const sent: Message[] = [];
    const n = await follower(sent);
    n.peerDisconnected(OTHER);
    await new Promise((r) => setTimeout(r, 2500)); // longer than the lost-leader delay (at most 2 s)
    expect(sent.some((m) => m.type === MessageType.PreVote || m.type === MessageType.Vote)).toBe(false);
    expect(n.leader).toBe(LEADER);
  });
});
