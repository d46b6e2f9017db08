// A follower that needs a streamed snapshot while writes continue (issue 12: a 4th node joining
// a 1 GiB state under load never caught up). Three real RaftNodes over RaftStorage, messages
// passed in this process, the snapshot "stream" held open by the test while entries keep coming
// and the leader keeps compacting, then its rows copied into the follower's staging sink and the
// header stepped (as node/daemon.ts wires SnapshotStream). The leader must keep the entries after
// the view being sent, join the same transfer when its core sends the snapshot again, and say in
// the message where the view is (etcd's merged snapshot): one snapshot, then appends.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode, stagedSnapshotData } from '../../node/raft/raft-node.js';
import type { StateView } from '../../node/raft/state-storage.js';
import { silentLogger } from '../../node/logger.js';
import { waitFor } from '../../node/local-cluster.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { encodeCommand } from '../../protocol/cluster/state.js';
import { MessageType, type Message } from '../../protocol/raft/types.js';

const IDS = ['a', 'b', 'c'];
const dirs: string[] = [];
const running: { nodes: RaftNode[]; storages: RaftStorage[] }[] = [];

afterEach(async () => {
  for (const r of running.splice(0)) {
    for (const n of r.nodes) await n.stop();
    for (const s of r.storages) await s.close().catch(() => undefined);
  }
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

interface SnapCall {
  m: Message;
  viewId: string;
  viewIndex: number;
  leaderFirstIndex: number;
}

async function cluster(keepLogBytesForFollowers: number | undefined) {
  const nodes = new Map<string, RaftNode>();
  const storages = new Map<string, RaftStorage>();
  const cut = new Set<string>();
  const calls: SnapCall[] = [];
  let openGate!: () => void;
  const gate = new Promise<void>((r) => (openGate = r));
  const transfers = new Map<string, Promise<boolean>>();
  const installed: number[] = [];
  /** Views opened and not closed, per node. */
  const openViews = new Map<string, number>();

  /** As SnapshotStream + node/daemon.ts: rows into the follower's sink, then the header stepped. */
  const transfer = async (from: string, m: Message, view: StateView): Promise<boolean> => {
    await gate;
    const to = storages.get(m.to)!;
    const sink = to.snapshotSink();
    await sink.resumeAfter(from, view.id);
    let rows: [Uint8Array, Uint8Array][] = [];
    let count = 0;
    for await (const row of view.rows(undefined, new AbortController().signal)) {
      rows.push(row);
      count++;
      if (rows.length === 50) {
        await sink.write(from, view.id, rows);
        rows = [];
      }
    }
    if (rows.length > 0) await sink.write(from, view.id, rows);
    await sink.complete(from, view.id, count);
    nodes.get(m.to)!.step({ ...m, snapshot: { meta: m.snapshot!.meta, data: stagedSnapshotData(from, view.id) } });
    return true;
  };

  for (const id of IDS) {
    const dir = await mkdtemp(join(tmpdir(), `omni-catchup-${id}-`));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    const boot = bootstrapState(IDS);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    storages.set(id, storage);
    const open = storage.openStateView.bind(storage);
    storage.openStateView = async (viewId) => {
      const view = await open(viewId);
      openViews.set(id, (openViews.get(id) ?? 0) + 1);
      return { ...view, rows: view.rows.bind(view), close: () => (openViews.set(id, openViews.get(id)! - 1), view.close()) };
    };
    const node = await RaftNode.open({
      id,
      storage,
      send: (ms) => {
        for (const m of ms) {
          if (cut.has(m.to) || cut.has(m.from)) continue;
          setImmediate(() => nodes.get(m.to)?.step(m));
        }
      },
      log: silentLogger,
      timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
      snapshotEveryEntries: 20,
      snapshotTailEntries: 5,
      ...(keepLogBytesForFollowers !== undefined ? { keepLogBytesForFollowers } : {}),
      sendSnapshot: (m, view) => {
        const leader = nodes.get(id)!;
        calls.push({ m, viewId: view.id, viewIndex: view.appliedIndex, leaderFirstIndex: leader.raft.log.firstIndex() });
        // a resend of the view on its way joins it; one that failed is forgotten, so a resend
        // starts it again (as SnapshotStream: a transfer refused while the follower's sink held
        // another view's staged snapshot must not fail every resend of that view for good)
        const key = `${m.to}:${view.id}`;
        let p = transfers.get(key);
        if (!p) {
          transfers.set(key, (p = transfer(id, m, view)));
          p.catch(() => transfers.get(key) === p && transfers.delete(key));
        }
        return p;
      },
      observer: { persisted: (rd) => rd.snapshot && installed.push(rd.snapshot.meta.index) },
    });
    nodes.set(id, node);
  }
  running.push({ nodes: [...nodes.values()], storages: [...storages.values()] });
  for (const n of nodes.values()) n.start();
  const leader = await waitFor('a leader', () => [...nodes.values()].find((n) => n.isLeader), 10_000, 10);
  return { nodes, storages, cut, calls, openGate, leader, installed, openViews };
}

const put = (key: string, value: string) => encodeCommand({ type: 'kv.put', key, value });

async function writes(leader: RaftNode, prefix: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) expect((await leader.propose(put(`${prefix}${i % 7}`, `${prefix}-${i}`))).ok).toBe(true);
}

describe('a follower catching up by a streamed snapshot while writes continue', () => {
  it('gets one snapshot at the view it was sent, then appends: the leader keeps the entries after the view and joins the same transfer when it resends', async () => {
    const { nodes, cut, calls, openGate, leader, installed, openViews } = await cluster(undefined);
    const lagging = IDS.find((x) => x !== leader.id)!;
    cut.add(lagging);
    // The leader keeps the log for a follower it still counts as recently active (until its next
    // quorum check, one election timeout): wait for that to lapse, or on a fast host the 60 writes
    // and their compactions are all done inside it and the entries stay for the follower.
    await waitFor('the leader no longer counts the follower as active', () => leader.raft.prs.get(lagging)?.recentActive === false, 10_000, 5);
    await writes(leader, 'before', 60); // compacted past the follower: it needs a snapshot
    // The compaction follows the applies in the background: on a loaded host it may come a moment after the last write.
    await waitFor('the leader compacted past the follower', () => leader.raft.log.firstIndex() > nodes.get(lagging)!.raft.log.lastIndex() + 1, 10_000, 5);
    cut.delete(lagging);
    await waitFor('the snapshot is being sent', () => calls.length > 0, 10_000, 5);
    const first = calls[0];
    // While it "streams": more writes, several compactions due, and the core resending (its wait times out in 10 ticks).
    await writes(leader, 'during', 80);
    await new Promise((r) => setTimeout(r, 300));
    const viewIndex = first.viewIndex;
    expect(leader.raft.log.snapshot.meta.index).toBeGreaterThan(viewIndex); // compactions did happen meanwhile
    expect(leader.raft.log.firstIndex()).toBeLessThanOrEqual(viewIndex + 1); // but the entries after the view stayed
    openGate();
    await waitFor('the follower caught up', () => nodes.get(lagging)!.state.appliedIndex >= leader.raft.log.committed, 20_000, 10);
    await writes(leader, 'after', 5);
    await waitFor('and stays caught up', () => nodes.get(lagging)!.state.appliedIndex >= leader.raft.log.committed, 20_000, 10);

    // Every resend joined the transfer of the first view; its message said where that view is.
    expect(calls.length).toBeGreaterThan(1);
    expect(new Set(calls.map((c) => c.viewId))).toEqual(new Set([first.viewId]));
    for (const c of calls) {
      expect(c.m.type).toBe(MessageType.Snap);
      expect(c.m.snapshot!.meta.index).toBe(viewIndex);
      expect(c.m.snapshot!.meta.term).toBe(leader.raft.log.term(viewIndex) ?? c.m.snapshot!.meta.term);
      expect([...c.m.snapshot!.meta.conf.voters].sort()).toEqual(IDS);
    }
    expect(installed).toEqual([viewIndex]);
    const f = nodes.get(lagging)!;
    for (let i = 0; i < 7; i++) expect(f.state.kvGet(`after${i % 7}`)?.value ?? null).toBe(leader.state.kvGet(`after${i % 7}`)?.value ?? null);
    expect(f.state.snapshot()).toEqual(leader.state.snapshot());
    // Once the follower answered from the snapshot, the leader closes the view (a LevelDB
    // snapshot left open would keep every row it saw on disk).
    await writes(leader, 'later', 25);
    await waitFor('the view closed', () => openViews.get(leader.id) === 0, 10_000, 10);
  });

  it('without the entries kept for it (keepLogBytesForFollowers 0) the same follower is sent a newer view', async () => {
    const { nodes, cut, calls, openGate, leader } = await cluster(0);
    const lagging = IDS.find((x) => x !== leader.id)!;
    cut.add(lagging);
    await writes(leader, 'before', 60);
    cut.delete(lagging);
    await waitFor('the snapshot is being sent', () => calls.length > 0, 10_000, 5);
    await writes(leader, 'during', 80);
    await new Promise((r) => setTimeout(r, 300));
    expect(leader.raft.log.firstIndex()).toBeGreaterThan(calls[0].viewIndex + 1);
    expect(new Set(calls.map((c) => c.viewId)).size).toBeGreaterThan(1);
    openGate();
    await waitFor('the follower caught up anyway', () => nodes.get(lagging)!.state.appliedIndex >= leader.raft.log.committed, 20_000, 10);
  });
});
