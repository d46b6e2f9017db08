// The log is compacted while writes never stop (issue 12: under a sustained load of 1 MiB
// values a leader held every entry since the load began — 143 entries, 150 MB of its 190 MB of
// native memory — because the driver looked for a due compaction only once it had no Ready
// left to handle, which a busy leader never reaches). Three real RaftNodes whose disk writes
// take a few milliseconds, so that answers always arrive while a Ready is being handled.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { encodeCommand } from '../../protocol/cluster/state.js';

const IDS = ['a', 'b', 'c'];
const MAX_LOG_BYTES = 2 * 1024 * 1024;
const dirs: string[] = [];
const nodes: RaftNode[] = [];
const storages: RaftStorage[] = [];
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  // closed before the directories go: LevelDB's own compactions still write files until then
  for (const s of storages.splice(0)) await s.close();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('compaction under a load that never pauses', () => {
  it('keeps the leader\'s log within its byte bound while proposals keep coming', async () => {
    const byId = new Map<string, RaftNode>();
    for (const id of IDS) {
      const dir = await mkdtemp(join(tmpdir(), `omni-busy-${id}-`));
      dirs.push(dir);
      const storage = await RaftStorage.open(dir);
      storages.push(storage);
      const boot = bootstrapState(IDS);
      await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
      const save = storage.save.bind(storage);
      storage.save = async (part, sync) => {
        await new Promise((r) => setTimeout(r, 3)); // a disk that takes its time: the driver is always busy
        return save(part, sync);
      };
      const node = await RaftNode.open({
        id,
        storage,
        send: (ms) => {
          for (const m of ms) setImmediate(() => byId.get(m.to)?.step(m));
        },
        log: silentLogger,
        timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
        maxLogBytes: MAX_LOG_BYTES,
      });
      byId.set(id, node);
      nodes.push(node);
    }
    for (const n of byId.values()) n.start();
    const leader = await waitFor('a leader', () => [...byId.values()].find((n) => n.isLeader), 10_000, 10);
    const value = 'x'.repeat(64 * 1024);
    let most = 0;
    let busyAtMost = 0;
    const sample = setInterval(() => {
      most = Math.max(most, leader.raft.log.logBytes());
      if (leader.busy) busyAtMost = Math.max(busyAtMost, leader.raft.log.logBytes());
    }, 1);
    const inFlight = new Set<Promise<unknown>>();
    for (let i = 0; i < 600; i++) {
      const p = leader.propose(encodeCommand({ type: 'kv.put', key: `k${i % 50}`, value })).finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (inFlight.size >= 16) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
    clearInterval(sample);
    // 600 × 64 KiB = 38 MiB went through the log, the driver busy all along (busyAtMost: while a
    // Ready was being handled); the log never held much more than its bound.
    expect(leader.state.appliedIndex).toBeGreaterThan(600);
    expect(busyAtMost).toBeGreaterThan(MAX_LOG_BYTES / 2);
    expect(most).toBeLessThan(1.5 * MAX_LOG_BYTES);
  }, 120_000);
});
