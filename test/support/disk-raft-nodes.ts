// Real RaftNodes on real disks in one process, wired to each other through setImmediate: for
// tests of the driver (write paths, scheduling) that need real LevelDB storage but no network.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode, type RaftNodeOptions, type RaftTiming } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import type { Message } from '../../protocol/raft/types.js';

type MoreOptions = Partial<Omit<RaftNodeOptions, 'id' | 'storage' | 'send' | 'log' | 'timing'>>;

export class DiskRaftNodes {
  readonly nodes: RaftNode[] = [];
  private readonly dirs: string[] = [];
  private readonly byId = new Map<string, RaftNode>();
  private readonly send = (ms: Message[]) => {
    for (const m of ms) setImmediate(() => this.byId.get(m.to)?.step(m));
  };

  constructor(
    private readonly ids: string[],
    private readonly timing: RaftTiming,
    /** More options for every node (e.g. noSpaceRetryMs, onFatal), or for each node by its id. */
    private readonly more: MoreOptions | ((id: string) => MoreOptions) = {},
  ) {}

  private optionsFor(id: string): MoreOptions {
    return typeof this.more === 'function' ? this.more(id) : this.more;
  }

  /** Bootstraps node `id` of the cluster on a fresh data dir and starts it; `prepare` may wrap its storage first. */
  async open(id: string, prepare?: (storage: RaftStorage) => void): Promise<{ node: RaftNode; dir: string; storage: RaftStorage }> {
    const dir = await mkdtemp(join(tmpdir(), 'omni-raft-nodes-'));
    this.dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    const boot = bootstrapState(this.ids);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    prepare?.(storage);
    return { node: await this.start(id, storage), dir, storage };
  }

  /** Opens node `id` again from a data dir an earlier open() made (not started). */
  async reopen(id: string, dir: string): Promise<RaftNode> {
    const n = await RaftNode.open({ ...this.optionsFor(id), id, storage: await RaftStorage.open(dir), send: this.send, log: silentLogger, timing: this.timing });
    this.nodes.push(n);
    this.byId.set(id, n);
    return n;
  }

  /** Stops every node (from nodes) without removing the data dirs. */
  async stopAll(): Promise<void> {
    for (const n of this.nodes.splice(0)) await n.stop();
  }

  /** Stops every node and removes the data dirs. */
  async destroy(): Promise<void> {
    await this.stopAll();
    for (const d of this.dirs.splice(0)) await rm(d, { recursive: true, force: true });
  }

  private async start(id: string, storage: RaftStorage): Promise<RaftNode> {
    const n = await RaftNode.open({ ...this.optionsFor(id), id, storage, send: this.send, log: silentLogger, timing: this.timing });
    this.nodes.push(n);
    this.byId.set(id, n);
    n.start();
    return n;
  }
}
