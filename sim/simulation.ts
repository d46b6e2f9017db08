// The deterministic cluster simulator (TigerBeetle VOPR style): N real Raft cores with a
// replicated key-value store, driven by one seeded RNG under virtual time. A run has a
// safety phase (random faults: lossy/duplicating/reordering network, partitions of every
// shape, crashes that lose unsynced writes, clock drift, membership changes and leadership
// transfers) and a liveness phase (faults healed: a leader must be elected and a write must
// commit within a bound). Invariants are checked after every event; the client history is
// checked for linearizability at the end. Every run replays exactly from its seed.

import { decodeConfChange } from '../protocol/codec.js';
import { Raft, bootstrapState, emptyState, type RaftConfig } from '../protocol/raft/raft.js';
import { contextKey } from '../protocol/raft/readonly.js';
import {
  type BugName,
  ConfChangeType,
  EntryType,
  type Message,
  MessageType,
  type NodeId,
  type Ready,
  Role,
  EMPTY_BYTES,
} from '../protocol/raft/types.js';
import { seededRng, type Rng } from '../protocol/rng.js';
import { SimDisk } from './disk.js';
import { EventQueue } from './event-queue.js';
import { InvariantChecker, SafetyViolation, type ConfSets } from './invariants.js';
import { KvStateMachine, decodeCommand, encodeCommand } from './kv.js';
import { checkLinearizable, type HistoryOp, type KvOp, type KvResult } from './linearizability.js';
import { CALM_NETWORK, type NetworkKnobs, SimNetwork } from './network.js';
import { formatMessage } from './trace.js';

export interface SimOptions {
  seed: number;
  bugs?: ReadonlySet<BugName>;
  /** Lines of trace kept for a failure report. */
  traceLines?: number;
}

export interface SimKnobs {
  /** Swarm profile: the general fault mix, the leader-churn nemesis, or the config-churn one. */
  profile: 'general' | 'leader-churn' | 'config-churn' | 'stale-leader';
  nodes: number;
  tickMs: number;
  driftPct: number;
  electionTick: number;
  heartbeatTick: number;
  network: NetworkKnobs;
  diskLatencyMs: number;
  writebackMs: number;
  tornWrites: boolean;
  compactEvery: number;
  maxSizePerMsgBytes: number;
  maxInflightMsgs: number;
  faultEveryMs: number;
  safetyMs: number;
  livenessBudgetMs: number;
  clients: number;
  keys: number;
  clientTimeoutMs: number;
  clientAttempts: number;
  crashes: boolean;
  membership: boolean;
  transfers: boolean;
  partitions: boolean;
  /** Processes paused longer than an election timeout, then resumed. */
  pauses: boolean;
  /** A new learner is promoted right after it is added (config churn). */
  promoteSoon?: boolean;
  /**
   * Time to apply a Ready's committed entries (a slow state machine; on a real node any await
   * while handling a Ready lets messages in). 0 for most profiles.
   */
  applyLatencyMs?: number;
  /** Chance that an fsync fails (EIO): the node stops at once and is restarted. */
  fsyncErrorRate?: number;
  /** Time per applied entry (a restart replaying a long log takes a while). */
  applyPerEntryMs?: number;
  /** Nodes compact at different rates: each picks its own interval from compactEvery or 1000. */
  mixedCompaction?: boolean;
  /** Adversarial timing: chance that a leader crashes right after applying newly committed entries. */
  crashAfterCommitRate: number;
  /** Adversarial timing: chance that a new leader crashes right after persisting its first entry. */
  crashAfterElectionRate: number;
  /** Typical partition length. */
  partitionMs: number;
}

export interface SimResult {
  seed: number;
  ok: boolean;
  violation?: string;
  livenessFailure?: string;
  ops: number;
  virtualMs: number;
  checkTimedOut: boolean;
  knobs: SimKnobs;
  trace: string[];
  stats: { messages: number; dropped: number; crashes: number; confChanges: number; transfers: number; elections: number; pauses: number; clockSkews: number };
  /** What the seed exercised: summed over seeds, a counter that drops to 0 shows lost coverage. */
  coverage: Coverage;
}

export interface Coverage {
  snapshots_sent: number;
  snapshots_installed: number;
  /** A snapshot the core took in while the previous Ready was still being handled. */
  snapshots_racing_apply: number;
  /** ... and the Ready being handled held conf changes the snapshot already covers. */
  conf_changes_superseded_by_snapshot: number;
  leadership_transfers: number;
  learner_promotions: number;
  read_index_served: number;
  conf_changes_under_partition: number;
  pauses: number;
  crashes: number;
  fsync_errors: number;
}

export function emptyCoverage(): Coverage {
  return { snapshots_sent: 0, snapshots_installed: 0, snapshots_racing_apply: 0, conf_changes_superseded_by_snapshot: 0, leadership_transfers: 0, learner_promotions: 0, read_index_served: 0, conf_changes_under_partition: 0, pauses: 0, crashes: 0, fsync_errors: 0 };
}

const MAX_NODES = 7;
/** Share of the seeds that run the leader-churn nemesis (swarm testing); the rest run the general mix. */
const LEADER_CHURN_SHARE = 0.3;
/**
 * Share of the seeds that run the config-churn nemesis: membership changes in quick succession
 * (a learner promoted right after it is added), tiny compaction intervals and slow disks, with
 * nodes crashing and lagging — so that snapshots reach followers while they still apply older
 * conf changes.
 */
const CONFIG_CHURN_SHARE = 0.2;
/**
 * Share of the seeds that run the stale-leader nemesis: the leader is cut off (often with a slow
 * clock, so it notices late) while clients keep reading from it and writing elsewhere — where a
 * leader that answers reads without a quorum round serves stale data.
 */
const STALE_LEADER_SHARE = 0.15;
const MAX_EVENTS = 5_000_000;

function chooseKnobs(rng: Rng): SimKnobs {
  const pick = <T>(xs: T[]): T => xs[rng.int(xs.length)];
  const between = (lo: number, hi: number): number => lo + rng.next() * (hi - lo);
  const lossy = rng.next() < 0.7;
  // Swarm testing: a share of the seeds runs a "leader churn" nemesis instead of the general
  // fault mix. Leaders are killed at the protocol's worst moments — most new leaders die right
  // after persisting their first entry, and leaders often die right after applying a commit —
  // and come back; appends carry one entry each and are not pipelined, so a new leader repairs
  // a follower's log one entry at a time. That is where the paper's Figure 8 lives: a leader
  // that commits an earlier term's entry by counting replicas, then dies before its own entry
  // reaches a majority.
  const roll = rng.next();
  const churn = roll < LEADER_CHURN_SHARE;
  const confChurn = !churn && roll < LEADER_CHURN_SHARE + CONFIG_CHURN_SHARE;
  const staleLeader = !churn && !confChurn && roll < LEADER_CHURN_SHARE + CONFIG_CHURN_SHARE + STALE_LEADER_SHARE;
  const knobs: SimKnobs = {
    profile: churn ? 'leader-churn' : confChurn ? 'config-churn' : staleLeader ? 'stale-leader' : 'general',
    nodes: pick([3, 5]),
    tickMs: 10,
    driftPct: pick([0, 5, 20, 40]),
    electionTick: 10,
    heartbeatTick: pick([1, 2, 3]),
    network: {
      dropRate: lossy ? rng.next() * 0.15 : 0,
      duplicateRate: lossy ? rng.next() * 0.05 : 0,
      minDelayMs: 1,
      maxDelayMs: pick([3, 10, 30]),
      longDelayRate: lossy ? rng.next() * 0.03 : 0,
      longDelayMs: 300,
    },
    diskLatencyMs: pick([0, 1, 5, 15]),
    writebackMs: pick([30, 300, 3000]),
    tornWrites: rng.next() < 0.5,
    compactEvery: pick([8, 30, 100, 1000]),
    // 1 byte: every append carries exactly one entry.
    maxSizePerMsgBytes: churn ? 1 : pick([1, 100, 1000, 64 * 1024]),
    maxInflightMsgs: churn ? 1 : pick([1, 4, 64]),
    faultEveryMs: churn ? pick([500, 1500]) : pick([150, 500, 1500]),
    // Churn needs time: a Figure 8 schedule takes several elections in a row.
    safetyMs: (churn ? 15_000 : 5000) + rng.int(20_000),
    livenessBudgetMs: 10_000,
    clients: 2 + rng.int(4),
    keys: 1 + rng.int(4),
    clientTimeoutMs: pick([150, 400]),
    clientAttempts: pick([2, 5]),
    crashes: churn || rng.next() < 0.8,
    membership: rng.next() < 0.5,
    transfers: rng.next() < 0.5,
    partitions: rng.next() < 0.8,
    pauses: rng.next() < 0.5,
    fsyncErrorRate: pick([0, 0, 0.002, 0.01]),
    crashAfterCommitRate: churn ? between(0.3, 0.7) : pick([0, 0.02]),
    // Below 1: some new leaders must survive long enough to repair logs (and to commit).
    crashAfterElectionRate: churn ? between(0.6, 0.9) : pick([0, 0.1]),
    partitionMs: pick([300, 1000, 2000]),
  };
  if (confChurn) {
    Object.assign(knobs, { nodes: 5, membership: true, crashes: true, compactEvery: pick([4, 8]), diskLatencyMs: pick([5, 15, 30]), faultEveryMs: pick([100, 200]), promoteSoon: true, applyLatencyMs: pick([10, 40, 80]), applyPerEntryMs: pick([0.5, 2]), mixedCompaction: true });
  }
  if (staleLeader) {
    Object.assign(knobs, { partitions: true, crashes: false, membership: false, transfers: false, clients: 5, keys: 1, faultEveryMs: 600, partitionMs: 2000 });
  }
  return knobs;
}

type SimEvent =
  | { kind: 'tick'; node: NodeId; inc: number }
  | { kind: 'deliver'; to: NodeId; msg: Message }
  | { kind: 'ready-done'; node: NodeId; inc: number; rd: Ready }
  | { kind: 'client-deliver'; node: NodeId; req: ClientRequest }
  | { kind: 'client-reply'; client: number; reply: ClientReply }
  | { kind: 'client-timeout'; client: number; reqId: number }
  | { kind: 'client-start'; client: number }
  | { kind: 'client-retry'; client: number; reqId: number }
  | { kind: 'restore-net' }
  | { kind: 'restart'; node: NodeId }
  | { kind: 'heal' }
  | { kind: 'resume'; node: NodeId }
  | { kind: 'promote'; node: NodeId }
  | { kind: 'fault' }
  | { kind: 'writeback' };

interface ClientRequest {
  client: number;
  reqId: number;
  seq: number;
  op: KvOp;
}

type ClientReply = { reqId: number; node: NodeId } & ({ ok: true; result: KvResult } | { ok: false; leader: NodeId });

interface SimNode {
  id: NodeId;
  raft: Raft | undefined;
  disk: SimDisk;
  kv: KvStateMachine;
  inc: number;
  busy: boolean;
  tickMs: number;
  appliedIndex: number;
  removed: boolean;
  proposals: Map<number, { term: number; req: ClientRequest }>;
  reads: Map<string, ClientRequest>;
  waitingReads: { index: number; req: ClientRequest }[];
  readCounter: number;
  /** The configuration its snapshot plus its applied conf changes imply (checked against the core's). */
  conf: ConfSets;
  /** While set, the process is paused (SIGSTOP, a long GC pause): it handles nothing until then. */
  pausedUntilMs: number;
  compactEvery: number;
}

interface ClientState {
  id: number;
  seq: number;
  reqId: number;
  attempt: number;
  leaderHint: NodeId;
  current?: { op: KvOp; callMs: number; historyId: number };
  /** The liveness probe client records nothing and stops after one success. */
  probe: boolean;
  done: boolean;
}

export class Simulation {
  readonly knobs: SimKnobs;
  private readonly rng: Rng;
  private readonly queue = new EventQueue<SimEvent>();
  private readonly net: SimNetwork;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly clients: ClientState[] = [];
  private readonly history: HistoryOp[] = [];
  private readonly invariants = new InvariantChecker();
  private readonly traceBuf: (string | (() => string))[] = [];
  private readonly traceLines: number;
  private nowMs = 0;
  private nextReqId = 1;
  private nextNodeNum: number;
  private phase: 'safety' | 'liveness' = 'safety';
  private livenessOkAtMs: number | undefined;
  private stats = { messages: 0, dropped: 0, crashes: 0, confChanges: 0, transfers: 0, elections: 0, pauses: 0, clockSkews: 0 };
  private readonly coverage = emptyCoverage();
  private readonly skewed: (() => void)[] = [];

  constructor(private readonly opts: SimOptions) {
    this.rng = seededRng(opts.seed);
    this.knobs = chooseKnobs(this.rng);
    this.traceLines = opts.traceLines ?? 400;
    this.net = new SimNetwork(this.rng, this.knobs.network);
    const ids = Array.from({ length: this.knobs.nodes }, (_, i) => `n${i + 1}`);
    this.nextNodeNum = ids.length + 1;
    for (const id of ids) this.createNode(id, true, ids);
    for (let c = 0; c < this.knobs.clients; c++) this.addClient(false);
    this.queue.push(this.knobs.faultEveryMs, { kind: 'fault' });
    this.queue.push(50, { kind: 'writeback' });
  }

  run(): SimResult {
    let violation: string | undefined;
    let livenessFailure: string | undefined;
    let checkTimedOut = false;
    try {
      this.runUntil(this.knobs.safetyMs);
      this.startLiveness();
      this.runUntil(this.knobs.safetyMs + this.knobs.livenessBudgetMs, () => this.livenessOkAtMs !== undefined);
      if (this.livenessOkAtMs === undefined) {
        livenessFailure = `no write committed within ${this.knobs.livenessBudgetMs} ms after faults healed (${this.describeNodes()})`;
      }
      this.recordUnfinishedOps();
      const lin = checkLinearizable(this.history);
      checkTimedOut = lin.timedOut === true;
      if (!lin.ok) violation = `linearizability (key ${lin.key}): ${lin.explanation}`;
    } catch (err) {
      violation = err instanceof SafetyViolation ? err.message : `exception: ${(err as Error).stack ?? String(err)}`;
    }
    const ok = violation === undefined && livenessFailure === undefined;
    this.stats.messages = this.net.sent;
    this.stats.dropped = this.net.dropped;
    const result: SimResult = {
      seed: this.opts.seed,
      ok,
      ops: this.history.length,
      virtualMs: Math.round(this.nowMs),
      checkTimedOut,
      knobs: this.knobs,
      trace: ok && this.traceLines <= 400 ? [] : this.traceBuf.map((t) => (typeof t === 'string' ? t : t())),
      stats: this.stats,
      coverage: { ...this.coverage, pauses: this.stats.pauses, crashes: this.stats.crashes },
    };
    if (violation) result.violation = violation;
    if (livenessFailure) result.livenessFailure = livenessFailure;
    return result;
  }

  // ------------------------------------------------------------------ event loop

  private runUntil(endMs: number, stop?: () => boolean): void {
    let events = 0;
    for (;;) {
      const t = this.queue.peekTime();
      if (t === undefined || t > endMs) break;
      const next = this.queue.pop()!;
      this.nowMs = next.atMs;
      this.handle(next.event);
      if (++events > MAX_EVENTS) throw new Error(`event budget of ${MAX_EVENTS} exceeded`);
      if (stop?.()) return;
    }
    this.nowMs = endMs;
  }

  private handle(ev: SimEvent): void {
    // A paused process handles nothing: its timers, messages, disk completions and requests
    // wait (in order) until it resumes.
    const target = ev.kind === 'tick' || ev.kind === 'ready-done' || ev.kind === 'client-deliver' ? ev.node : ev.kind === 'deliver' ? ev.to : undefined;
    const paused = target !== undefined ? this.nodes.get(target) : undefined;
    if (paused && paused.pausedUntilMs > this.nowMs) {
      this.queue.push(paused.pausedUntilMs, ev);
      return;
    }
    switch (ev.kind) {
      case 'tick': {
        const n = this.nodes.get(ev.node)!;
        if (n.inc !== ev.inc || !n.raft) return;
        n.raft.tick();
        this.afterInput(n);
        this.queue.push(this.nowMs + n.tickMs, ev);
        return;
      }
      case 'deliver': {
        const n = this.nodes.get(ev.to);
        if (!n?.raft || this.net.isBlocked(ev.msg.from, ev.to)) return;
        this.trace(() => `deliver ${formatMessage(ev.msg)}`);
        const hadSnapshot = n.raft.log.pendingSnapshot !== undefined;
        n.raft.step(ev.msg);
        if (n.busy && !hadSnapshot && n.raft?.log.pendingSnapshot !== undefined) this.coverage.snapshots_racing_apply++;
        if (ev.msg.type === MessageType.TimeoutNow) this.coverage.leadership_transfers++;
        this.afterInput(n);
        return;
      }
      case 'ready-done': {
        const n = this.nodes.get(ev.node)!;
        if (n.inc !== ev.inc || !n.raft) return;
        this.finishReady(n, ev.rd);
        return;
      }
      case 'client-deliver':
        this.nodeHandleClient(ev.node, ev.req);
        return;
      case 'client-reply':
        this.clientHandleReply(ev.client, ev.reply);
        return;
      case 'client-timeout': {
        const c = this.clients[ev.client];
        if (c.reqId === ev.reqId && c.current) this.clientRetry(c, NONE_HINT, 'timeout');
        return;
      }
      case 'client-start':
        this.clientStartOp(this.clients[ev.client]);
        return;
      case 'client-retry': {
        const c = this.clients[ev.client];
        if (c.reqId === ev.reqId && c.current) this.clientSend(c);
        return;
      }
      case 'restore-net':
        if (this.phase === 'safety') this.net.knobs = this.knobs.network;
        return;
      case 'restart':
        this.restartNode(ev.node);
        return;
      case 'resume':
        this.trace(`${ev.node}: resumed`);
        return;
      case 'promote': {
        const leader = this.leader();
        if (this.phase !== 'safety' || !leader?.raft!.learners.has(ev.node)) return;
        const res = leader.raft!.proposeConfChange({ type: ConfChangeType.AddVoter, node: ev.node });
        this.trace(`fault: promote ${ev.node} soon after it was added, via ${leader.id}: ${res.ok ? 'proposed' : res.code}`);
        if (res.ok) this.stats.confChanges++;
        else this.queue.push(this.nowMs + 50, ev);
        this.afterInput(leader);
        return;
      }
      case 'heal':
        for (const undo of this.skewed.splice(0)) undo();
        this.net.heal();
        this.trace('heal: all partitions removed');
        return;
      case 'fault':
        if (this.phase === 'safety') {
          this.injectFault();
          this.queue.push(this.nowMs + this.knobs.faultEveryMs * (0.5 + this.rng.next()), ev);
        }
        return;
      case 'writeback':
        for (const n of this.nodes.values()) n.disk.writeback(this.nowMs);
        this.queue.push(this.nowMs + 50, ev);
        return;
    }
  }

  // ------------------------------------------------------------------ nodes

  private raftConfig(id: NodeId): RaftConfig {
    return {
      id,
      electionTick: this.knobs.electionTick,
      heartbeatTick: this.knobs.heartbeatTick,
      rng: seededRng(this.rng.int(2 ** 31)),
      maxSizePerMsgBytes: this.knobs.maxSizePerMsgBytes,
      maxInflightMsgs: this.knobs.maxInflightMsgs,
      bugs: this.opts.bugs ?? new Set(),
      trace: (line) => this.trace(line),
      observe: (o) => this.invariants.observeCore(id, o),
    };
  }

  private createNode(id: NodeId, bootstrap: boolean, voters: NodeId[]): SimNode {
    const drift = 1 + ((this.rng.next() * 2 - 1) * this.knobs.driftPct) / 100;
    const n: SimNode = {
      id,
      raft: undefined,
      disk: new SimDisk(this.knobs.writebackMs, this.knobs.tornWrites),
      kv: new KvStateMachine(),
      inc: 0,
      busy: false,
      tickMs: this.knobs.tickMs * drift,
      appliedIndex: 0,
      removed: false,
      proposals: new Map(),
      reads: new Map(),
      waitingReads: [],
      readCounter: 0,
      conf: { voters: new Set(), learners: new Set() },
      pausedUntilMs: 0,
      compactEvery: this.knobs.mixedCompaction && this.rng.next() < 0.5 ? 1000 : this.knobs.compactEvery,
    };
    this.nodes.set(id, n);
    const state = bootstrap ? bootstrapState(voters) : emptyState();
    // The bootstrap state is what `init` would write durably before starting.
    n.disk.write({ entries: state.entries, hardState: state.hardState }, true, this.nowMs);
    this.startNode(n);
    return n;
  }

  private startNode(n: SimNode): void {
    const state = n.disk.load();
    n.kv = new KvStateMachine();
    n.kv.restore(state.snapshot?.data ?? EMPTY_BYTES);
    n.appliedIndex = state.snapshot?.meta.index ?? 0;
    n.conf = confOf(state.snapshot?.meta.conf);
    n.pausedUntilMs = 0;
    n.inc++;
    n.busy = false;
    n.proposals.clear();
    n.reads.clear();
    n.waitingReads = [];
    n.raft = new Raft(this.raftConfig(n.id), state);
    this.trace(`${n.id}: started (term=${state.hardState.term} last=${(state.snapshot?.meta.index ?? 0) + state.entries.length})`);
    this.queue.push(this.nowMs + n.tickMs * this.rng.next(), { kind: 'tick', node: n.id, inc: n.inc });
    this.afterInput(n);
  }

  private crashNode(n: SimNode): void {
    if (!n.raft) return;
    n.raft = undefined;
    n.inc++;
    n.disk.crash(this.rng);
    this.stats.crashes++;
    this.trace(`${n.id}: CRASH (unsynced writes lost)`);
  }

  private restartNode(id: NodeId): void {
    const n = this.nodes.get(id)!;
    if (n.raft) return;
    this.startNode(n);
  }

  /** After any input: check invariants, then hand the next Ready to the "disk". */
  private afterInput(n: SimNode): void {
    const raft = n.raft!;
    if (raft.role === Role.Leader) this.invariants.observeLeader(n.id, raft.term, raft);
    if (n.busy || !raft.hasReady()) return;
    const rd = raft.ready();
    if (rd.softState?.role === Role.Leader) this.stats.elections++;
    n.busy = true;
    const needsDisk = rd.entries.length > 0 || rd.hardState !== undefined || rd.snapshot !== undefined;
    const applying = rd.committedEntries.length > 0 ? (this.knobs.applyLatencyMs ?? 0) * this.rng.next() + rd.committedEntries.length * (this.knobs.applyPerEntryMs ?? 0) : 0;
    const latency = (needsDisk ? this.knobs.diskLatencyMs * this.rng.next() : 0) + applying;
    this.queue.push(this.nowMs + latency, { kind: 'ready-done', node: n.id, inc: n.inc, rd });
  }

  private finishReady(n: SimNode, rd: Ready): void {
    const raft = n.raft!;
    // 1. persist (fsync when the core says so) ...
    // An fsync that fails (EIO) leaves the write in the page cache, maybe to be dropped: the
    // driver stops at once (RaftNode treats it as fatal) and the node is restarted later.
    const fsyncFails = rd.mustSync && this.phase === 'safety' && this.rng.next() < (this.knobs.fsyncErrorRate ?? 0);
    if (rd.entries.length > 0 || rd.hardState || rd.snapshot) {
      n.disk.write(
        {
          ...(rd.snapshot ? { snapshot: { snapshot: rd.snapshot, replaceLog: true } } : {}),
          entries: rd.entries,
          ...(rd.hardState ? { hardState: rd.hardState } : {}),
        },
        rd.mustSync && !fsyncFails,
        this.nowMs,
      );
    }
    if (fsyncFails) {
      this.trace(`fault: ${n.id}: fsync failed (EIO); the node stops and restarts`);
      this.coverage.fsync_errors++;
      this.crashNode(n);
      this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
      return;
    }
    if (this.phase === 'safety' && rd.softState?.role === Role.Leader && this.rng.next() < this.knobs.crashAfterElectionRate) {
      this.trace(`fault: new leader ${n.id} crashes right after persisting its first entries`);
      this.crashNode(n);
      this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
      return;
    }
    // 2. ... only then send the messages that depend on it ...
    for (const m of rd.messages) this.sendRaft(n.id, m);
    // 3. ... apply.
    if (rd.snapshot) {
      n.kv.restore(rd.snapshot.data);
      n.appliedIndex = rd.snapshot.meta.index;
      n.conf = confOf(rd.snapshot.meta.conf);
      this.coverage.snapshots_installed++;
      this.trace(`${n.id}: applied snapshot at ${rd.snapshot.meta.index}`);
    }
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    for (const rs of rd.readStates) {
      const req = n.reads.get(contextKey(rs.context));
      if (req) {
        n.reads.delete(contextKey(rs.context));
        n.waitingReads.push({ index: rs.index, req });
      }
    }
    const racing = raft.log.pendingSnapshot;
    if (racing && rd.committedEntries.some((e) => e.type === EntryType.ConfChange && e.index <= racing.meta.index)) this.coverage.conf_changes_superseded_by_snapshot++;
    raft.advance(rd);
    n.busy = false;
    // A snapshot the core took in but has not handed out yet speaks for entries below it.
    if (!raft.log.pendingSnapshot) this.invariants.checkConf(n.id, n.conf, raft);
    if (
      this.phase === 'safety' &&
      rd.committedEntries.length > 0 &&
      raft.role === Role.Leader &&
      this.rng.next() < this.knobs.crashAfterCommitRate
    ) {
      this.trace(`fault: leader ${n.id} crashes right after applying up to ${rd.committedEntries[rd.committedEntries.length - 1].index}`);
      this.crashNode(n);
      this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
      return;
    }
    this.serveReads(n);
    this.maybeCompact(n);
    this.afterInput(n);
  }

  private applyEntry(n: SimNode, e: Ready['committedEntries'][number]): void {
    this.invariants.observeApply(n.id, e, n.raft!.log.committed);
    n.appliedIndex = e.index;
    if (e.type === EntryType.ConfChange) {
      const cc = decodeConfChange(e.data);
      if (n.raft!.role === Role.Leader) {
        if (cc.type === ConfChangeType.AddVoter && n.conf.learners.has(cc.node)) this.coverage.learner_promotions++;
        if (this.net.partitioned) this.coverage.conf_changes_under_partition++;
      }
      applyToConf(n.conf, cc);
      if (cc.type === ConfChangeType.RemoveNode) {
        const target = this.nodes.get(cc.node);
        if (target) target.removed = true;
      }
      return;
    }
    if (e.data.byteLength === 0) return;
    const cmd = decodeCommand(e.data);
    const res = n.kv.apply(cmd);
    const p = n.proposals.get(e.index);
    if (!p) return;
    n.proposals.delete(e.index);
    if (p.term === e.term && res.kind === 'result') this.reply(n.id, p.req, { ok: true, result: res.result });
    else this.reply(n.id, p.req, { ok: false, leader: n.raft!.lead });
  }

  private serveReads(n: SimNode): void {
    if (n.waitingReads.length === 0) return;
    const still: typeof n.waitingReads = [];
    for (const w of n.waitingReads) {
      if (w.index > n.appliedIndex) {
        still.push(w);
        continue;
      }
      const op = w.req.op;
      this.coverage.read_index_served++;
      this.reply(n.id, w.req, { ok: true, result: { kind: 'get-ok', value: n.kv.get(op.key) } });
    }
    n.waitingReads = still;
  }

  private maybeCompact(n: SimNode): void {
    const raft = n.raft!;
    if (raft.log.applied - raft.log.snapshot.meta.index < n.compactEvery) return;
    const snap = raft.compact(n.kv.snapshot());
    n.disk.write({ snapshot: { snapshot: snap, replaceLog: false }, entries: [] }, true, this.nowMs);
    this.trace(`${n.id}: compacted log up to ${snap.meta.index}`);
  }

  private sendRaft(from: NodeId, m: Message): void {
    if (m.type === MessageType.Snap) this.coverage.snapshots_sent++;
    for (const delay of this.net.plan(from, m.to)) {
      this.queue.push(this.nowMs + delay, { kind: 'deliver', to: m.to, msg: m });
    }
  }

  // ------------------------------------------------------------------ client handling on nodes

  private nodeHandleClient(id: NodeId, req: ClientRequest): void {
    const n = this.nodes.get(id);
    if (!n?.raft) return;
    const raft = n.raft;
    if (req.op.kind === 'get' && this.rng.next() < 0.7) {
      const ctx = new TextEncoder().encode(`${id}/${n.inc}/${++n.readCounter}`);
      if (!raft.readIndex(ctx)) {
        this.reply(id, req, { ok: false, leader: raft.lead });
      } else {
        n.reads.set(contextKey(ctx), req);
      }
    } else {
      const res = raft.propose(encodeCommand({ client: req.client, seq: req.seq, op: req.op }));
      if (!res.ok) this.reply(id, req, { ok: false, leader: res.leader });
      else n.proposals.set(res.index, { term: res.term, req });
    }
    this.afterInput(n);
  }

  private reply(node: NodeId, req: ClientRequest, body: { ok: true; result: KvResult } | { ok: false; leader: NodeId }): void {
    for (const delay of this.net.plan(node, `c${req.client}`)) {
      this.queue.push(this.nowMs + delay, { kind: 'client-reply', client: req.client, reply: { reqId: req.reqId, node, ...body } });
    }
  }

  // ------------------------------------------------------------------ clients

  private addClient(probe: boolean): ClientState {
    const c: ClientState = { id: this.clients.length, seq: 0, reqId: 0, attempt: 0, leaderHint: NONE_HINT, probe, done: false };
    this.clients.push(c);
    this.queue.push(this.nowMs + this.rng.int(20), { kind: 'client-start', client: c.id });
    return c;
  }

  private clientStartOp(c: ClientState): void {
    if (c.done || (this.phase === 'liveness' && !c.probe)) return;
    const key = `k${this.rng.int(this.knobs.keys)}`;
    const value = `c${c.id}-${c.seq + 1}`;
    let op: KvOp;
    if (c.probe) op = { kind: 'put', key: 'liveness', value };
    else {
      const r = this.rng.next();
      if (r < 0.4) op = { kind: 'put', key, value };
      else if (r < 0.8) op = { kind: 'get', key };
      else {
        const expected = this.rng.next() < 0.3 ? null : `c${this.rng.int(this.knobs.clients)}-${1 + this.rng.int(Math.max(1, c.seq))}`;
        op = { kind: 'cas', key, expected, value };
      }
    }
    c.seq++;
    c.attempt = 0;
    c.current = { op, callMs: this.nowMs, historyId: this.history.length };
    this.clientSend(c);
  }

  private clientSend(c: ClientState): void {
    const members = [...this.nodes.values()].filter((n) => !n.removed);
    const target = c.leaderHint !== NONE_HINT && this.nodes.has(c.leaderHint) ? c.leaderHint : members[this.rng.int(members.length)].id;
    c.reqId = this.nextReqId++;
    c.attempt++;
    const req: ClientRequest = { client: c.id, reqId: c.reqId, seq: c.seq, op: c.current!.op };
    const attempt = c.attempt;
    this.trace(() => `client c${c.id} -> ${target}: ${JSON.stringify(req.op)} seq=${req.seq} attempt=${attempt}`);
    for (const delay of this.net.plan(`c${c.id}`, target)) {
      this.queue.push(this.nowMs + delay, { kind: 'client-deliver', node: target, req });
    }
    this.queue.push(this.nowMs + this.knobs.clientTimeoutMs, { kind: 'client-timeout', client: c.id, reqId: c.reqId });
  }

  private clientHandleReply(clientId: number, reply: ClientReply): void {
    const c = this.clients[clientId];
    if (reply.reqId !== c.reqId || !c.current) return;
    if (!reply.ok) {
      this.clientRetry(c, reply.leader, `refused by ${reply.node}`);
      return;
    }
    this.trace(() => `client c${c.id} <- ${reply.node}: ${JSON.stringify(reply.result)}`);
    c.leaderHint = reply.node;
    this.finishOp(c, reply.result);
  }

  private clientRetry(c: ClientState, hint: NodeId, why: string): void {
    const attempts = c.probe ? Number.POSITIVE_INFINITY : this.knobs.clientAttempts;
    if (c.attempt >= attempts) {
      this.trace(`client c${c.id}: gave up after ${c.attempt} attempts (${why})`);
      this.finishOp(c, null);
      return;
    }
    // Retries reuse the same seq so the state machine applies the command at most once.
    c.leaderHint = hint;
    c.reqId = -this.nextReqId++; // late answers to the previous attempt are ignored
    const backoffMs = hint === NONE_HINT ? 5 + this.rng.int(20) : 1;
    this.queue.push(this.nowMs + backoffMs, { kind: 'client-retry', client: c.id, reqId: c.reqId });
  }

  /** Operations still in flight when the run ends may or may not have taken effect. */
  private recordUnfinishedOps(): void {
    for (const c of this.clients) {
      if (c.probe || !c.current) continue;
      this.finishOp(c, null);
    }
  }

  private finishOp(c: ClientState, result: KvResult | null): void {
    const cur = c.current!;
    c.current = undefined;
    c.reqId = 0;
    if (c.probe) {
      if (result) {
        this.livenessOkAtMs = this.nowMs;
        c.done = true;
      }
      return;
    }
    if (!(result === null && cur.op.kind === 'get')) {
      this.history.push({
        id: this.history.length,
        clientId: c.id,
        op: cur.op,
        callTime: cur.callMs,
        returnTime: result === null ? Number.POSITIVE_INFINITY : this.nowMs,
        result,
      });
    }
    this.queue.push(this.nowMs + this.rng.int(30), { kind: 'client-start', client: c.id });
  }

  // ------------------------------------------------------------------ faults

  private liveNodes(): SimNode[] {
    return [...this.nodes.values()].filter((n) => n.raft !== undefined);
  }

  private leader(): SimNode | undefined {
    let best: SimNode | undefined;
    for (const n of this.liveNodes()) {
      if (n.raft!.role === Role.Leader && (!best || n.raft!.term > best.raft!.term)) best = n;
    }
    return best;
  }

  private injectFault(): void {
    const k = this.knobs;
    const choices: (() => void)[] = [() => {}];
    if (k.partitions) choices.push(() => this.partition(), () => this.partition(), () => this.healLater(0));
    if (k.crashes) choices.push(() => this.crashSome(), () => this.crashSome());
    if (k.membership) choices.push(() => this.changeMembership());
    if (k.transfers) choices.push(() => this.transferLeadership());
    if (k.pauses) choices.push(() => this.pauseSome());
    choices.push(() => this.shakeNetwork());
    // Config churn: every other fault is a membership change.
    if (k.profile === 'config-churn' && this.rng.next() < 0.5) return this.changeMembership();
    choices[this.rng.int(choices.length)]();
  }

  private partition(): void {
    const ids = [...this.nodes.keys()];
    const leader = this.leader();
    const kind = this.knobs.profile === 'stale-leader' ? 0 : this.rng.int(5);
    this.net.heal();
    if (kind === 0 && leader) {
      this.net.split([leader.id], ids.filter((i) => i !== leader.id));
      this.trace(`fault: leader ${leader.id} isolated`);
      // Often with a clock that runs slow (a VM stolen from, a clock step): it notices late
      // that it lost its quorum — exactly when a leader must not answer reads on its own.
      if (this.knobs.profile === 'stale-leader' || this.rng.next() < 0.5) this.skewClock(leader, 1.5 + this.rng.next() * 2);
    } else if (kind === 4 && leader) {
      // the leader keeps a minority: it can replicate but never commit (divergent suffixes)
      const others = this.shuffle(ids.filter((i) => i !== leader.id));
      const minority = [leader.id, ...others.slice(0, Math.floor((ids.length - 1) / 2) - 1 + this.rng.int(2))];
      const rest = ids.filter((i) => !minority.includes(i));
      this.net.split(minority, rest);
      this.trace(`fault: leader ${leader.id} in minority [${minority}] | [${rest}]`);
    } else if (kind === 1) {
      const shuffled = this.shuffle(ids);
      const cut = 1 + this.rng.int(ids.length - 1);
      this.net.split(shuffled.slice(0, cut), shuffled.slice(cut));
      this.trace(`fault: partition [${shuffled.slice(0, cut)}] | [${shuffled.slice(cut)}]`);
    } else if (kind === 2) {
      // asymmetric: some directed links fail
      for (const a of ids) for (const b of ids) if (a !== b && this.rng.next() < 0.3) this.net.block(a, b);
      this.trace(`fault: asymmetric links down: ${this.net.describePartition()}`);
    } else {
      // a bridge: two groups that only talk through one node
      const shuffled = this.shuffle(ids);
      const bridge = shuffled[0];
      const rest = shuffled.slice(1);
      const half = Math.floor(rest.length / 2);
      this.net.split(rest.slice(0, half), rest.slice(half));
      this.trace(`fault: bridge through ${bridge}: [${rest.slice(0, half)}] | [${rest.slice(half)}]`);
    }
    this.healLater(this.knobs.partitionMs * (0.2 + this.rng.next()));
  }

  /** The node's clock runs `factor` times slower (ticks further apart) until the next heal. */
  private skewClock(n: SimNode, factor: number): void {
    const normal = n.tickMs;
    n.tickMs = normal * factor;
    this.stats.clockSkews++;
    this.trace(`fault: ${n.id}'s clock runs ${factor.toFixed(1)}x slow`);
    this.skewed.push(() => (n.tickMs = normal));
  }

  private healLater(afterMs: number): void {
    this.queue.push(this.nowMs + afterMs, { kind: 'heal' });
  }

  private crashSome(): void {
    const live = this.liveNodes();
    if (live.length === 0) return;
    const leader = this.leader();
    const victim = leader && this.rng.next() < 0.5 ? leader : live[this.rng.int(live.length)];
    this.crashNode(victim);
    this.queue.push(this.nowMs + 50 + this.rng.int(2000), { kind: 'restart', node: victim.id });
  }

  /** A process stops (SIGSTOP, a GC pause) for longer than an election timeout, then resumes. */
  private pauseSome(): void {
    const live = this.liveNodes().filter((n) => n.pausedUntilMs <= this.nowMs);
    if (live.length === 0) return;
    const leader = this.leader();
    const victim = leader && this.rng.next() < 0.6 ? leader : live[this.rng.int(live.length)];
    const ms = this.knobs.electionTick * this.knobs.tickMs * (1.5 + this.rng.next() * 3);
    victim.pausedUntilMs = this.nowMs + ms;
    this.stats.pauses++;
    this.trace(`fault: ${victim.id} paused for ${Math.round(ms)} ms`);
    this.queue.push(victim.pausedUntilMs, { kind: 'resume', node: victim.id });
  }

  private changeMembership(): void {
    const leader = this.leader();
    if (!leader) return;
    const raft = leader.raft!;
    const voters = [...raft.voters];
    const learners = [...raft.learners];
    const r = this.rng.next();
    let cc: { type: ConfChangeType; node: NodeId } | undefined;
    if (learners.length > 0 && r < 0.5) {
      cc = { type: ConfChangeType.AddVoter, node: learners[this.rng.int(learners.length)] };
    } else if (voters.length > 3 && r < 0.8) {
      cc = { type: ConfChangeType.RemoveNode, node: voters[this.rng.int(voters.length)] };
    } else if (this.nodes.size < MAX_NODES) {
      const id = `n${this.nextNodeNum++}`;
      this.createNode(id, false, []);
      cc = { type: ConfChangeType.AddLearner, node: id };
      if (this.knobs.promoteSoon) this.queue.push(this.nowMs + 20 + this.rng.int(200), { kind: 'promote', node: id });
    }
    if (!cc) return;
    const res = raft.proposeConfChange(cc);
    this.trace(`fault: membership ${ConfChangeType[cc.type]} ${cc.node} via ${leader.id}: ${res.ok ? 'proposed' : res.code}`);
    if (res.ok) this.stats.confChanges++;
    this.afterInput(leader);
  }

  private transferLeadership(): void {
    const leader = this.leader();
    if (!leader) return;
    const others = [...leader.raft!.voters].filter((v) => v !== leader.id);
    if (others.length === 0) return;
    const to = others[this.rng.int(others.length)];
    this.trace(`fault: transfer leadership ${leader.id} -> ${to}`);
    this.stats.transfers++;
    leader.raft!.transferLeader(to);
    this.afterInput(leader);
  }

  private shakeNetwork(): void {
    const base = this.knobs.network;
    this.net.knobs = {
      ...base,
      dropRate: Math.min(0.5, base.dropRate + this.rng.next() * 0.3),
      maxDelayMs: base.maxDelayMs * (1 + this.rng.int(4)),
    };
    this.trace(`fault: network degraded drop=${this.net.knobs.dropRate.toFixed(2)} maxDelay=${this.net.knobs.maxDelayMs}ms`);
    this.queue.push(this.nowMs + 300 + this.rng.int(1500), { kind: 'restore-net' });
  }

  private startLiveness(): void {
    this.phase = 'liveness';
    this.net.heal();
    this.net.knobs = CALM_NETWORK;
    for (const n of this.nodes.values()) if (!n.raft && !n.removed) this.startNode(n);
    this.trace(`=== liveness phase: faults healed at ${Math.round(this.nowMs)} ms ===`);
    this.addClient(true);
  }

  private shuffle<T>(xs: T[]): T[] {
    const out = xs.slice();
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.rng.int(i + 1);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }

  private describeNodes(): string {
    return [...this.nodes.values()]
      .map((n) => (n.raft ? `${n.id}:${n.raft.role}@${n.raft.term} commit=${n.raft.log.committed}${n.removed ? ' removed' : ''}` : `${n.id}:down`))
      .join(', ');
  }

  private trace(line: string | (() => string)): void {
    const t = Math.round(this.nowMs * 10) / 10;
    this.traceBuf.push(typeof line === 'string' ? `[${t}ms] ${line}` : () => `[${t}ms] ${line()}`);
    if (this.traceBuf.length > this.traceLines) this.traceBuf.shift();
  }
}

const NONE_HINT: NodeId = '';

function confOf(conf: { voters: NodeId[]; learners: NodeId[] } | undefined): ConfSets {
  return { voters: new Set(conf?.voters ?? []), learners: new Set(conf?.learners ?? []) };
}

/** The same rules as the core's applyConfChange (promote, demote, remove). */
function applyToConf(conf: ConfSets, cc: { type: ConfChangeType; node: NodeId }): void {
  if (cc.type === ConfChangeType.AddVoter) {
    conf.learners.delete(cc.node);
    conf.voters.add(cc.node);
  } else if (cc.type === ConfChangeType.AddLearner) {
    conf.voters.delete(cc.node);
    conf.learners.add(cc.node);
  } else {
    conf.voters.delete(cc.node);
    conf.learners.delete(cc.node);
  }
}

export function runSeed(seed: number, bugs?: ReadonlySet<BugName>, traceLines?: number): SimResult {
  return new Simulation({ seed, ...(bugs ? { bugs } : {}), ...(traceLines ? { traceLines } : {}) }).run();
}
