// A lone voter leads without waiting an election timeout (node/raft/raft-node.ts
// campaignIfLoneVoter): at a fresh init its configuration is known only once the bootstrap
// entries are applied, and after a restart of a one-node cluster it is known at once. The ticks
// here are a minute apart, so a node that waited for its election timeout would never lead.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { waitFor } from '../../node/local-cluster.js';

const dirs: string[] = [];
const nodes: RaftNode[] = [];

afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function open(storage: RaftStorage): Promise<RaftNode> {
  const n = await RaftNode.open({ id: 'self', storage, send: () => undefined, log: silentLogger, timing: { tickMs: 60_000, electionTick: 10, heartbeatTick: 1 } });
  nodes.push(n);
  n.start();
  return n;
}

describe('a lone voter', () => {
  it('leads at once after a fresh bootstrap and after a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-lone-'));
    dirs.push(dir);
    let storage = await RaftStorage.open(dir);
    const boot = bootstrapState(['self']);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    let n = await open(storage);
    await waitFor('the fresh node leads', () => n.isLeader, 5000, 10);
    await n.propose(encodeCommand({ type: 'kv.put', key: 'k', value: 'v' }));
    await nodes.pop()!.stop();
    await storage.close();
    storage = await RaftStorage.open(dir);
    n = await open(storage);
    await waitFor('the restarted node leads', () => n.isLeader, 5000, 10);
    expect(n.state.kvCount()).toBe(1);
    await nodes.pop()!.stop();
    await storage.close();
  });

  it('a member of a two-voter configuration does not campaign on its own', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-lone-'));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    const boot = bootstrapState(['self', 'peer']);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    const n = await open(storage);
    await new Promise((r) => setTimeout(r, 300));
    expect(n.raft.role).toBe('follower');
    await nodes.pop()!.stop();
    await storage.close();
  });
});
