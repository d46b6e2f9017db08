// Linearizable reads are batched as etcd's server batches them: one ReadIndex request (one quorum
// round) at a time, shared by every read that arrived before it went out; reads arriving while it
// is out wait for the next one. A request that is never answered (lost in a leader change) does
// not hold back the reads queued behind it.
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

const ID = 'self';
const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function leader(): Promise<RaftNode> {
  const dir = await mkdtemp(join(tmpdir(), 'omni-reads-'));
  dirs.push(dir);
  const storage = await RaftStorage.open(dir);
  const boot = bootstrapState([ID]);
  await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
  const n = await RaftNode.open({ id: ID, storage, send: () => undefined, log: silentLogger, timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 } });
  nodes.push(n);
  n.start();
  await waitFor('a leader', () => n.isLeader, 5000, 5);
  return n;
}

describe('RaftNode read batching', () => {
  it('200 reads at once take two ReadIndex requests, and each sees every write acknowledged before it', async () => {
    const n = await leader();
    const r = await n.propose(encodeCommand({ type: 'kv.put', key: 'a', value: '1' }));
    expect(r.ok).toBe(true);
    const spy = vi.spyOn(n.raft, 'readIndex');
    const reads = Array.from({ length: 200 }, () => n.readBarrier(5000).then(() => n.state.kvGet('a')?.value));
    expect(await Promise.all(reads)).toEqual(Array(200).fill('1'));
    // The first read goes out alone; the 199 that arrived meanwhile share the next request.
    expect(spy.mock.calls.length).toBe(2);
  });

  it('a ReadIndex that is never answered does not hold back the reads queued behind it', async () => {
    const n = await leader();
    const real = n.raft.readIndex.bind(n.raft);
    let dropped = 0;
    vi.spyOn(n.raft, 'readIndex').mockImplementation((ctx) => {
      if (dropped === 0) {
        dropped++;
        return true; // accepted, never answered (as when a leader change loses it)
      }
      return real(ctx);
    });
    const lost = n.readBarrier(300);
    const behind = Array.from({ length: 5 }, () => n.readBarrier(5000));
    await expect(lost).rejects.toThrow(/timed out/);
    await expect(Promise.all(behind)).resolves.toBeDefined();
  });

  it('a read that times out leaves nothing behind, and reads keep working', async () => {
    const n = await leader();
    vi.spyOn(n.raft, 'readIndex').mockImplementationOnce(() => true);
    await expect(n.readBarrier(50)).rejects.toThrow(/timed out/);
    await expect(n.readBarrier(5000)).resolves.toBeUndefined();
    expect((n as unknown as { reads: Map<string, unknown> }).reads.size).toBe(0);
    expect((n as unknown as { readCallers: number }).readCallers).toBe(0);
  });
});
