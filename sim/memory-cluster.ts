// A small synchronous in-memory cluster around the real Raft core, for unit tests, the demo and
// the throughput benchmark. Messages are delivered in FIFO order until the cluster is quiet;
// faults are explicit (partitions, crashes, a message filter). Storage is an in-memory copy of
// what a driver would persist, so crash + restart behaves like a real restart.

import { Raft, bootstrapState, emptyState, type PersistedState, type RaftConfig } from '../protocol/raft/raft.js';
import type { BugName, Entry, Message, NodeId, ReadState, Ready } from '../protocol/raft/types.js';
import { EntryType } from '../protocol/raft/types.js';
import { seededRng } from '../protocol/rng.js';

export interface MemoryNode {
  id: NodeId;
  raft: Raft | undefined;
  /** What is durably stored (what a restart reloads). */
  stored: PersistedState;
  /** Entries applied to the state machine, in order, since the last (re)start. */
  applied: Entry[];
  readStates: ReadState[];
}

export interface MemoryClusterOptions {
  electionTick?: number;
  heartbeatTick?: number;
  seed?: number;
  bugs?: ReadonlySet<BugName>;
  maxSizePerMsgBytes?: number;
  maxInflightMsgs?: number;
  maxInflightBytes?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  trace?: (line: string) => void;
}

export class MemoryCluster {
  readonly nodes = new Map<NodeId, MemoryNode>();
  private queue: Message[] = [];
  private blocked = new Set<string>();
  /** Return true to drop a message (targeted faults in tests). */
  dropIf: ((m: Message) => boolean) | undefined;
  delivered = 0;
  private seedCounter: number;

  constructor(
    ids: NodeId[],
    private readonly opts: MemoryClusterOptions = {},
  ) {
    this.seedCounter = opts.seed ?? 1;
    for (const id of ids) this.addNode(id, bootstrapState(ids));
  }

  addNode(id: NodeId, state: PersistedState = emptyState()): MemoryNode {
    const node: MemoryNode = { id, raft: undefined, stored: clone(state), applied: [], readStates: [] };
    this.nodes.set(id, node);
    this.start(node);
    return node;
  }

  private config(id: NodeId): RaftConfig {
    const o = this.opts;
    return {
      id,
      electionTick: o.electionTick ?? 10,
      heartbeatTick: o.heartbeatTick ?? 1,
      rng: seededRng(this.seedCounter++),
      ...(o.maxSizePerMsgBytes !== undefined ? { maxSizePerMsgBytes: o.maxSizePerMsgBytes } : {}),
      ...(o.maxInflightMsgs !== undefined ? { maxInflightMsgs: o.maxInflightMsgs } : {}),
      ...(o.maxInflightBytes !== undefined ? { maxInflightBytes: o.maxInflightBytes } : {}),
      ...(o.preVote !== undefined ? { preVote: o.preVote } : {}),
      ...(o.checkQuorum !== undefined ? { checkQuorum: o.checkQuorum } : {}),
      ...(o.bugs ? { bugs: o.bugs } : {}),
      ...(o.trace ? { trace: o.trace } : {}),
    };
  }

  private start(node: MemoryNode): void {
    node.raft = new Raft(this.config(node.id), clone(node.stored));
    node.applied = [];
    node.readStates = [];
  }

  get(id: NodeId): Raft {
    const r = this.nodes.get(id)?.raft;
    if (!r) throw new Error(`node ${id} is down`);
    return r;
  }

  leader(): Raft | undefined {
    let best: Raft | undefined;
    for (const n of this.nodes.values()) {
      if (n.raft?.role === 'leader' && (!best || n.raft.term > best.term)) best = n.raft;
    }
    return best;
  }

  leaders(): Raft[] {
    return [...this.nodes.values()].flatMap((n) => (n.raft?.role === 'leader' ? [n.raft] : []));
  }

  crash(id: NodeId): void {
    const n = this.nodes.get(id)!;
    n.raft = undefined;
  }

  restart(id: NodeId): void {
    const n = this.nodes.get(id)!;
    if (!n.raft) this.start(n);
  }

  /** Cuts all links between the groups; nodes not listed keep talking to everyone. */
  partition(...groups: NodeId[][]): void {
    for (let i = 0; i < groups.length; i++) {
      for (let j = 0; j < groups.length; j++) {
        if (i === j) continue;
        for (const a of groups[i]) for (const b of groups[j]) this.blocked.add(`${a}>${b}`);
      }
    }
  }

  isolate(id: NodeId): void {
    this.partition([id], [...this.nodes.keys()].filter((x) => x !== id));
  }

  heal(): void {
    this.blocked.clear();
  }

  /** Processes Readys and delivers messages until nothing is left to do. */
  stabilize(maxRounds = 100_000): void {
    for (let round = 0; round < maxRounds; round++) {
      let progressed = false;
      for (const n of this.nodes.values()) {
        if (n.raft?.hasReady()) {
          this.handleReady(n, n.raft.ready());
          progressed = true;
        }
      }
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) {
        progressed = true;
        const target = this.nodes.get(m.to)?.raft;
        if (!target || this.blocked.has(`${m.from}>${m.to}`) || this.dropIf?.(m)) continue;
        this.delivered++;
        target.step(m);
      }
      if (!progressed) return;
    }
    throw new Error('cluster did not stabilize');
  }

  /** Ticks every live node `n` times, stabilizing after each tick. */
  tick(n = 1): void {
    for (let i = 0; i < n; i++) {
      for (const node of this.nodes.values()) node.raft?.tick();
      this.stabilize();
    }
  }

  /** Ticks until a leader exists (or gives up). */
  electLeader(maxTicks = 1000): Raft {
    for (let i = 0; i < maxTicks; i++) {
      const l = this.leader();
      if (l && this.committedInTerm(l)) return l;
      this.tick();
    }
    throw new Error('no leader elected');
  }

  private committedInTerm(r: Raft): boolean {
    return r.log.term(r.log.committed) === r.term;
  }

  private handleReady(n: MemoryNode, rd: Ready): void {
    const s = n.stored;
    if (rd.snapshot) {
      s.snapshot = rd.snapshot;
      s.entries = [];
    }
    if (rd.entries.length > 0) {
      const first = rd.entries[0].index;
      const base = s.snapshot?.meta.index ?? 0;
      s.entries.length = Math.max(0, Math.min(s.entries.length, first - base - 1));
      for (const e of rd.entries) s.entries.push(e);
    }
    if (rd.hardState) s.hardState = { ...rd.hardState };
    for (const m of rd.messages) this.queue.push(m);
    for (const e of rd.committedEntries) n.applied.push(e);
    n.readStates.push(...rd.readStates);
    n.raft!.advance(rd);
  }

  /** Compacts a node's log at its applied index (the "state machine" is its applied list). */
  compact(id: NodeId): void {
    const n = this.nodes.get(id)!;
    const snap = n.raft!.compact(new TextEncoder().encode(`state@${n.raft!.log.applied}`));
    n.stored.snapshot = snap;
    n.stored.entries = n.stored.entries.filter((e) => e.index > snap.meta.index);
  }

  /** Proposes on the current leader and returns the entry index (throws when refused). */
  propose(data: string, via?: NodeId): number {
    const r = via ? this.get(via) : this.leader();
    if (!r) throw new Error('no leader');
    const res = r.propose(new TextEncoder().encode(data));
    if (!res.ok) throw new Error(`proposal refused: ${res.code}`);
    this.stabilize();
    return res.index;
  }

  /** Normal (non-empty) entries applied on a node, decoded as text. */
  appliedData(id: NodeId): string[] {
    return this.nodes
      .get(id)!
      .applied.filter((e) => e.type === EntryType.Normal && e.data.byteLength > 0)
      .map((e) => new TextDecoder().decode(e.data));
  }
}

function clone(s: PersistedState): PersistedState {
  const out: PersistedState = { hardState: { ...s.hardState }, entries: s.entries.slice() };
  if (s.snapshot) out.snapshot = s.snapshot;
  return out;
}
