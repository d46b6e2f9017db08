// RaftNode.peerDisconnected: when every connection to its leader closes, a follower forgets the
// leader and campaigns (pre-vote) within a fifth of the election timeout, instead of waiting a
// whole randomized election timeout. A disconnect of a peer that is not its leader changes nothing.
// The survivors take turns in the order of their ids (protocol/raft/lost-leader.ts): the first
// wins alone, in one term, instead of two campaigns at once splitting the vote.
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
import fc from 'fast-check';
import { lostLeaderCampaignDelayMs } from '../../protocol/raft/lost-leader.js';

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

/** A started RaftNode `id` of a fresh cluster of `voters`, its messages handed to `send`. */
async function openNode(id: string, voters: string[], send: (msgs: Message[]) => void): Promise<RaftNode> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-leader-lost-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState(voters);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const n = await RaftNode.open({ id, storage, send, log: silentLogger, timing: TIMING });
  nodes.push(n);
  n.start();
  return n;
}

async function follower(sent: Message[]): Promise<RaftNode> {
  const n = await openNode(ID, [ID, LEADER, OTHER], (msgs) => sent.push(...msgs));
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

describe('the survivors of a lost leader take turns', () => {
  it('in the order of their ids: each in the first half of its slot of the spread, a whole half-slot apart; not at all when not a voter', () => {
    fc.assert(
      fc.property(fc.uniqueArray(fc.string({ minLength: 1, maxLength: 6 }), { minLength: 2, maxLength: 9 }), fc.integer({ min: 1, max: 10_000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (voters, spreadMs, random) => {
        const lost = voters[0];
        const survivors = voters.slice(1).sort();
        const slot = spreadMs / survivors.length;
        const shuffled = [...voters].reverse();
        survivors.forEach((id, rank) => {
          const d = lostLeaderCampaignDelayMs(id, shuffled, lost, spreadMs, random)!;
          expect(d).toBeGreaterThanOrEqual(Math.floor(rank * slot));
          expect(d).toBeLessThanOrEqual(rank * slot + slot / 2);
          expect(d).toBeLessThan(spreadMs);
          // the latest the one before can fire is half a slot before the earliest this one can
          if (rank > 0) expect(Math.floor(rank * slot) - ((rank - 1) * slot + slot / 2)).toBeGreaterThanOrEqual(Math.floor(slot / 2) - 1);
        });
        expect(lostLeaderCampaignDelayMs('not-a-voter-id-xyz', voters, lost, spreadMs, random)).toBeUndefined();
        expect(lostLeaderCampaignDelayMs(lost, voters, lost, spreadMs, random)).toBeUndefined();
      }),
    );
  });

  it('three nodes, the leader gone, both survivors told at once: the first in id order wins, in the next term (no split vote)', async () => {
    for (let round = 0; round < 3; round++) {
      const ids = ['a', 'b', 'c'];
      const byId = new Map<string, RaftNode>();
      const dead = new Set<string>();
      // delivered a moment later, as a network would; nothing to or from a dead node
      const send = (msgs: Message[]) => {
        for (const m of msgs)
          setImmediate(() => {
            if (!dead.has(m.from) && !dead.has(m.to)) byId.get(m.to)?.step(m);
          });
      };
      for (const id of ids) byId.set(id, await openNode(id, ids, send));
      // a campaign waits for the bootstrap configuration to be applied
      await waitFor('the configuration applied', () => [...byId.values()].every((n) => n.raft.log.applied > 0 && n.raft.log.applied === n.raft.log.committed), 5000, 5);
      byId.get('c')!.campaign();
      await waitFor('c leads', () => byId.get('c')!.isLeader && byId.get('a')!.leader === 'c' && byId.get('b')!.leader === 'c', 5000, 5);
      const term = byId.get('c')!.raft.term;
      dead.add('c');
      await byId.get('c')!.stop();
      byId.get('a')!.peerDisconnected('c');
      byId.get('b')!.peerDisconnected('c');
      await waitFor('a new leader', () => byId.get('a')!.isLeader || byId.get('b')!.isLeader, 8000, 5);
      expect(byId.get('a')!.isLeader).toBe(true);
      expect(byId.get('a')!.raft.term).toBe(term + 1);
      await waitFor('b follows a', () => byId.get('b')!.leader === 'a', 5000, 5);
      expect(byId.get('b')!.raft.term).toBe(term + 1);
      for (const n of nodes.splice(0)) await n.stop();
    }
  }, 60_000);
});
