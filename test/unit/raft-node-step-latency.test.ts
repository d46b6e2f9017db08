// A message from a peer is handled as it arrives, not at the next tick. A regression (the guard
// around Raft.step returned before scheduling the Ready, since step returns nothing) made every
// acknowledgement wait for the next tick: each write took about one heartbeat interval (~100 ms
// instead of ~2 ms). Two real RaftNodes on disk with slow ticks (500 ms): five writes one after
// the other must span far fewer ticks than writes.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';
import { DiskRaftNodes } from '../support/disk-raft-nodes.js';

let cluster: DiskRaftNodes | undefined;
afterEach(async () => {
  await cluster?.destroy();
  cluster = undefined;
});

describe('RaftNode handles peer messages at once', () => {
  it('five sequential writes on a 2-node cluster with 500 ms ticks take fewer than three ticks', async () => {
    cluster = new DiskRaftNodes(['a', 'b'], { tickMs: 500, electionTick: 2, heartbeatTick: 1 });
    for (const id of ['a', 'b']) await cluster.open(id);
    const nodes = cluster.nodes;
    await waitFor('a leader', () => nodes.some((n) => n.isLeader), 20_000, 10);
    const leader = nodes.find((n) => n.isLeader)!;
    // one write first: the new leader's first entries are committed and applied everywhere
    expect((await leader.propose(encodeCommand({ type: 'kv.put', key: 'warm', value: '0' }))).ok).toBe(true);
    const ticks = vi.spyOn(leader.raft, 'tick');
    for (let i = 0; i < 5; i++) expect((await leader.propose(encodeCommand({ type: 'kv.put', key: `k${i}`, value: String(i) }))).ok).toBe(true);
    expect(ticks.mock.calls.length).toBeLessThan(3);
  }, 60_000);
});
