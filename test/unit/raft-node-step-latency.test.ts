// A message from a peer is handled as it arrives, not at the next tick. A regression (the guard
// around Raft.step returned before scheduling the Ready, since step returns nothing) made every
// acknowledgement wait for the next tick: each write took about one heartbeat interval (~100 ms
// instead of ~2 ms). Two real RaftNodes on disk with slow ticks (500 ms): five writes one after
// the other must span far fewer ticks than writes.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';
import type { Message } from '../../protocol/raft/types.js';

const dirs: string[] = [];
const nodes: RaftNode[] = [];
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('RaftNode handles peer messages at once', () => {
  it('five sequential writes on a 2-node cluster with 500 ms ticks take fewer than three ticks', async () => {
    const ids = ['a', 'b'];
    const byId = new Map<string, RaftNode>();
    const send = (ms: Message[]) => {
      for (const m of ms) setImmediate(() => byId.get(m.to)?.step(m));
    };
    for (const id of ids) {
      const dir = await mkdtemp(join(tmpdir(), 'omni-step-'));
      dirs.push(dir);
      const storage = await RaftStorage.open(dir);
      const boot = bootstrapState(ids);
      await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
      const n = await RaftNode.open({ id, storage, send, log: silentLogger, timing: { tickMs: 500, electionTick: 2, heartbeatTick: 1 } });
      nodes.push(n);
      byId.set(id, n);
      n.start();
    }
    await waitFor('a leader', () => nodes.some((n) => n.isLeader), 20_000, 10);
    const leader = nodes.find((n) => n.isLeader)!;
    // one write first: the new leader's first entries are committed and applied everywhere
    expect((await leader.propose(encodeCommand({ type: 'kv.put', key: 'warm', value: '0' }))).ok).toBe(true);
    const ticks = vi.spyOn(leader.raft, 'tick');
    for (let i = 0; i < 5; i++) expect((await leader.propose(encodeCommand({ type: 'kv.put', key: `k${i}`, value: String(i) }))).ok).toBe(true);
    expect(ticks.mock.calls.length).toBeLessThan(3);
  }, 60_000);
});
