// The deterministic cluster simulator (TigerBeetle VOPR style): N real nodes — the production
// Raft driver (node/raft/raft-node.ts: persist, early send, apply order) over simulated storage
// and timers, applying to the real cluster state machine (protocol/cluster/state.ts) — driven
// by one seeded RNG under virtual time. A run has a
// safety phase (random faults: lossy/duplicating/reordering network, partitions of every
// shape, crashes that lose unsynced writes, clock drift, membership changes and leadership
// transfers) and a liveness phase (faults healed: a leader must be elected and a write must
// commit within a bound). Invariants are checked after every event; the client history is
// checked for linearizability at the end. Every run replays exactly from its seed.

import { silentLogger } from '../node/logger.js';
import { decodeConfChange } from '../protocol/codec.js';
import { Raft, bootstrapState, emptyState } from '../protocol/raft/raft.js';
import { ALL_BUGS, type BugName, ConfChangeType, type Entry, EntryType, type Message, MessageType, type NodeId, type Ready, Role } from '../protocol/raft/types.js';
import { seededRng, type Rng } from '../protocol/rng.js';
import { MIN_MAX_STATE_BYTES, decodeCommand, encodeCommand, type ApplyResult, type Command } from '../protocol/cluster/state.js';
import { quotaBytes } from '../protocol/cluster/quota.js';
import { QUOTA_ALARM_SHARE, assessHealth } from '../protocol/cluster/health.js';
import { ALL_WRITES_BUGS, ClusterWrites, type WritesBug, type WritesRaft } from '../node/cluster/writes.js';
import { adminCaller } from '../node/cluster/caller.js';
import { OmniError } from '../node/errors.js';
import { RaftNode, guardSink } from '../node/raft/raft-node.js';
import { SimDisk } from './disk.js';
import { EventQueue } from './event-queue.js';
import { InvariantChecker, SafetyViolation } from './invariants.js';
import { checkLinearizable, type HistoryOp, type KvOp, type KvResult } from './linearizability.js';
import { CALM_NETWORK, type NetworkKnobs, SimNetwork } from './network.js';
import { SimStore } from './sim-store.js';
import { SimSnapshotStream } from './sim-snapshot-stream.js';
import type { StateView } from '../node/raft/state-storage.js';
import type { SnapshotSink } from '../node/raft/snapshot-stream.js';
import { SimClock } from './sim-timers.js';
import { ALL_APPS_BUGS, SimApps, type AppsBug } from './sim-apps.js';
import { formatMessage } from './trace.js';

/** A bug the simulator can inject: into the Raft core, the daemon's apps wiring, or the leader's write gate. */
export type SimBug = BugName | AppsBug | WritesBug;
export const ALL_SIM_BUGS: readonly SimBug[] = [...ALL_BUGS, ...ALL_APPS_BUGS, ...ALL_WRITES_BUGS];

export interface SimOptions {
  seed: number;
  bugs?: ReadonlySet<SimBug>;
  /** Lines of trace kept for a failure report. */
  traceLines?: number;
}

export interface SimKnobs {
  /** Swarm profile: the general fault mix, the leader-churn nemesis, or the config-churn one. */
  profile: 'general' | 'leader-churn' | 'config-churn' | 'stale-leader' | 'snapshot-race';
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
  /** Snapshots stream row by row into the follower's staged rows (else whole inside the message). */
  streamSnapshots?: boolean;
  /** Applied entries a compaction keeps in the log (the catch-up tail). */
  tailEntries?: number;
  /** Kv puts of the apps' records carry them in protobuf (command schema 4), else as JSON text. */
  recordsInCommands?: boolean;
  /** Log bytes a compaction keeps for followers that still need them (RaftNodeOptions.keepLogBytesForFollowers; undefined: the default). */
  keepLogBytesForFollowers?: number;
  /** Entry bytes in flight to one follower (RaftConfig.maxInflightBytes; undefined: the default). */
  maxInflightBytes?: number;
  /** Kv values longer than this live only in the stored rows (StateOptions); undefined: in memory. */
  spillValuesOverBytes?: number;
  /** kv pages kept parsed per node (StateOptions.kvMaxOpenPages): 1 or 3 close pages after nearly every operation. */
  kvMaxOpenPages?: number;
  /**
   * The state machine's byte limit (StateOptions.maxStateBytes) on some seeds without apps: room
   * for one large value beside small ones. A put that would pass it is refused on every replica
   * alike (RESOURCE_EXHAUSTED): it must have no effect anywhere, at once or after a restart, a
   * snapshot or a row reload.
   */
  stateLimitBytes?: number;
  /**
   * The replicated state quota (ClusterConfig.maxStateBytes, from a cluster.init entry in the
   * bootstrap log, as omnid init writes it) on half of the seeds with a state limit: client
   * writes then go through the leader's real gate (node/cluster/writes.ts ClusterWrites, with
   * forwarding from followers), which refuses QUOTA_EXCEEDED before proposing. Room for two
   * large values beside small ones (past the QUOTA_EXCEEDED alarm's share), never three; the
   * state machine's hard limit (stateLimitBytes) is 4x the quota there, so only the checker
   * stands behind the gate.
   */
  quotaBytes?: number;
  /**
   * On a quarter of the seeds with a quota: when an admin raises it (`omni quota set`: a config.set
   * carrying maxStateBytes, proposed through a node's gate like any write, retried until it
   * applied), and to what. Writes admitted past the old quota need the raise applied first.
   */
  quotaRaise?: { atMs: number; toBytes: number };
  /** Chance that an fsync fails (EIO): the node stops at once and is restarted. */
  fsyncErrorRate?: number;
  /** The apps path runs: orchestrator, agents (mock driver), an operator deploying through the API. */
  apps?: boolean;
  /** Chance that a crash also loses the disk's last synced term/vote write (a disk that lied about fsync). */
  lostWriteRate?: number;
  /** Time per applied entry (a restart replaying a long log takes a while). */
  applyPerEntryMs?: number;
  /**
   * One node with a slow disk (ms per write): it falls behind, flow control stops its appends,
   * the leader compacts past it and sends it a snapshot — often while it still persists a Ready
   * whose committed entries hold conf changes the snapshot already covers.
   */
  slowDisk?: { node: NodeId; writeMs: number };
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
  /** Snapshots sent row by row (sim-snapshot-stream.ts) rather than whole in the message. */
  snapshots_streamed: number;
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
  /** Clock jumps: wall clock stepped, timers fired in a burst. */
  clock_jumps: number;
  /** A restart found that a synced write was lost (the hard-state witness): the node refused to start. */
  lost_writes_detected: number;
  /** Fresh nodes joined in place of a node that refused to start. */
  nodes_replaced: number;
  /** Removed nodes added back (with their old disk). */
  removed_nodes_readded: number;
  /** Tasks agents started (apps path). */
  tasks_started: number;
  /** Tasks started to replace one lost with a node that is down. */
  tasks_rescheduled: number;
  /** App changes (deploy, scale, stop/start) the API acknowledged. */
  app_changes_acknowledged: number;
  /** Writes the state machine refused for the state limit (seeds with stateLimitBytes). */
  writes_refused_for_state_limit: number;
  /** Writes the leader's gate refused for the replicated quota (QUOTA_EXCEEDED; seeds with quotaBytes). */
  writes_refused_for_quota: number;
  /** Times a node's health report raised, and cleared, the QUOTA_EXCEEDED alarm. */
  quota_alarms_raised: number;
  quota_alarms_cleared: number;
  /** Nodes that applied an admin's raise of the quota (seeds with quotaRaise; counted again after a restart). */
  quota_raises_applied: number;
  /** Exclusive tasks stopped because their node's lease lapsed (by the agent or, omnid down, its supervisor). */
  exclusive_lease_stops: number;
  /** Exclusive tasks started to replace one whose node went silent (placed only after its lease lapsed). */
  exclusive_replacements: number;
  /** Job tasks (the 'batch' app, type job) that exited 0 / failed and were retried by the leader. */
  job_tasks_succeeded: number;
  job_tasks_failed: number;
  /** Job runs that ended succeeded or failed (seen on the leader). */
  job_runs_finished: number;
  /** Cron runs (the 'tick' app) whose first task started. */
  cron_runs_started: number;
}

export function emptyCoverage(): Coverage {
  return { snapshots_sent: 0, snapshots_streamed: 0, snapshots_installed: 0, snapshots_racing_apply: 0, conf_changes_superseded_by_snapshot: 0, leadership_transfers: 0, learner_promotions: 0, read_index_served: 0, conf_changes_under_partition: 0, pauses: 0, crashes: 0, fsync_errors: 0, clock_jumps: 0, lost_writes_detected: 0, nodes_replaced: 0, removed_nodes_readded: 0, tasks_started: 0, tasks_rescheduled: 0, app_changes_acknowledged: 0, writes_refused_for_state_limit: 0, writes_refused_for_quota: 0, quota_alarms_raised: 0, quota_alarms_cleared: 0, quota_raises_applied: 0, exclusive_lease_stops: 0, exclusive_replacements: 0, job_tasks_succeeded: 0, job_tasks_failed: 0, job_runs_finished: 0, cron_runs_started: 0 };
}

const MAX_NODES = 7;
/** With a state limit: a record of a small value counts at most this much (about 70 bytes), ... */
const STATE_LIMIT_SMALL_RECORD_BYTES = 80;
/** ... there is room for one large value beside them (it adds 300 bytes), never two. */
const STATE_LIMIT_ROOM_BYTES = 350;
const LARGE_VALUE_PAD = 'x'.repeat(300);
/**
 * With the quota gate (MIN_MAX_STATE_BYTES, 64 KiB): a large value's record counts ~31.4 KB, so
 * two of them pass the alarm's 95 % share and, with the small ones (at most 5 records of ~80
 * bytes), stay within the quota; a third never fits.
 */
const QUOTA_LARGE_VALUE_PAD = 'x'.repeat(31_300);
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
/**
 * Share of the seeds that run the snapshot-race nemesis: one member with a slow disk lags far
 * behind (appends carry one entry, several in flight) while the leader compacts every few
 * entries and learners are added and promoted in quick succession — so the lagging member is
 * sent snapshots while it still persists a Ready that commits conf changes the snapshot covers.
 */
const SNAPSHOT_RACE_SHARE = 0.15;
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
  const snapshotRace = !churn && !confChurn && !staleLeader && roll < LEADER_CHURN_SHARE + CONFIG_CHURN_SHARE + STALE_LEADER_SHARE + SNAPSHOT_RACE_SHARE;
  const knobs: SimKnobs = {
    profile: churn ? 'leader-churn' : confChurn ? 'config-churn' : staleLeader ? 'stale-leader' : snapshotRace ? 'snapshot-race' : 'general',
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
    lostWriteRate: pick([0, 0, 0, 0.1, 0.3]),
    apps: false,
    crashAfterCommitRate: churn ? between(0.3, 0.7) : pick([0, 0.02]),
    // Below 1: some new leaders must survive long enough to repair logs (and to commit).
    crashAfterElectionRate: churn ? between(0.6, 0.9) : pick([0, 0.1]),
    // Some partitions outlast many compactions (a node comes back to a log it cannot catch up from).
    partitionMs: pick([300, 1000, 2000, 6000]),
  };
  // The general profile runs the apps path too (the others stay focused on their nemesis).
  knobs.apps = knobs.profile === 'general';
  // The apps path makes the state larger (app records with their events, tasks, statuses):
  // snapshotting it every few entries would make those seeds slow; other seeds cover tiny intervals.
  if (knobs.apps) knobs.compactEvery = Math.max(knobs.compactEvery, 300);
  if (confChurn) {
    Object.assign(knobs, { nodes: 5, membership: true, crashes: true, compactEvery: pick([4, 8]), diskLatencyMs: pick([5, 15, 30]), faultEveryMs: pick([100, 200]), promoteSoon: true, applyLatencyMs: pick([10, 40, 80]), applyPerEntryMs: pick([0.5, 2]), mixedCompaction: true });
    if (rng.next() < 0.8) Object.assign(knobs, { slowDisk: { node: `n${1 + rng.int(5)}`, writeMs: pick([100, 200, 300]) }, maxInflightMsgs: pick([2, 4]), maxSizePerMsgBytes: 1, clients: 1 + rng.int(2), faultEveryMs: pick([60, 120]) });
  }
  if (snapshotRace) {
    Object.assign(knobs, {
      nodes: 4,
      slowDisk: { node: `n${1 + rng.int(4)}`, writeMs: pick([150, 300]) },
      diskLatencyMs: 2,
      applyLatencyMs: 0,
      maxInflightMsgs: 4,
      maxSizePerMsgBytes: 1,
      compactEvery: pick([2, 4]),
      clients: 1,
      keys: 1,
      membership: true,
      promoteSoon: true,
      crashes: false,
      partitions: false,
      pauses: false,
      transfers: false,
      fsyncErrorRate: 0,
      lostWriteRate: 0,
      crashAfterCommitRate: 0,
      crashAfterElectionRate: 0,
      faultEveryMs: 80,
      network: { ...knobs.network, dropRate: 0, duplicateRate: 0, longDelayRate: 0, maxDelayMs: pick([3, 10]) },
    });
  }
  if (staleLeader) {
    Object.assign(knobs, { partitions: true, crashes: false, membership: false, transfers: false, clients: 5, keys: 1, faultEveryMs: 600, partitionMs: 2000 });
  }
  return knobs;
}

type SimEvent =
  /** A node's own work: a timer of its driver, a disk write completing. */
  | { kind: 'call'; node: NodeId; inc: number; fn: () => void }
  | { kind: 'deliver'; to: NodeId; msg: Message }
  /** A request between daemons (a forwarded write and its answer): runs on `to` if it is up. */
  | { kind: 'rpc'; from: NodeId; to: NodeId; fn: () => void }
  | { kind: 'operate' }
  /** Something outside every daemon (a task's supervisor): runs whatever node is up or down. */
  | { kind: 'world'; fn: () => void }
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
  | { kind: 'join'; node: NodeId; inPlaceOf: NodeId }
  | { kind: 'replace'; node: NodeId }
  | { kind: 'fault' }
  | { kind: 'writeback' }
  /** An admin raises the quota (seeds with quotaRaise), again until some node applied it. */
  | { kind: 'quota-raise' };

/** The liveness probe's longest wait for one answer (clientAttemptTimeoutMs). */
const PROBE_MAX_TIMEOUT_MS = 2000;

interface ClientRequest {
  client: number;
  reqId: number;
  seq: number;
  op: KvOp;
}

/**
 * A node's answer. `retry`: the op surely did not take effect (refused before it was proposed,
 * or dropped by a leader change) and may be sent again; otherwise its outcome is unknown.
 */
/** A write the state machine refused for the state limit: it took effect nowhere (left out of the history). */
/** refused-for-limit: applied as a refusal by the state machine; refused-for-quota: refused by the leader's gate, never proposed. */
type RefusedForLimit = { kind: 'refused-for-limit' } | { kind: 'refused-for-quota' };
type ClientReply = { reqId: number; node: NodeId } & ({ ok: true; result: KvResult | RefusedForLimit } | { ok: false; leader: NodeId; retry: boolean; why: string });

interface SimNode {
  id: NodeId;
  /** The store over its disk (one per process start), and its guarded staging sink. */
  store?: SimStore;
  sink?: SnapshotSink;
  /** The real driver (node/raft/raft-node.ts); undefined while the process is down. */
  node: RaftNode | undefined;
  raft: Raft | undefined;
  disk: SimDisk;
  inc: number;
  /** Clock rate: 1 ticks on time, above 1 runs slow (drift, skew). */
  rate: number;
  removed: boolean;
  /** Its disk lost a synced write: it refuses to start and is replaced by a fresh node. */
  retired: boolean;
  /** Crashed with a lost synced write: it will be retired at its next start. */
  doomed: boolean;
  /** While set, the process is paused (SIGSTOP, a long GC pause): it handles nothing until then. */
  pausedUntilMs: number;
  compactEvery: number;
  /** A snapshot or conf change reached the core since its configuration was last checked. */
  confDirty: boolean;
  /** The node's virtual clock (timers die with the process). */
  clock: SimClock | undefined;
  /** How far its wall clock is off the simulation's time (clock jumps). */
  clockOffsetMs: number;
  /** Until then its timers fire 20× fast (a clock jump's burst). */
  burstUntilMs: number;
  /** Terms in which this node was seen leading after a write (the crash-after-election fault rolls once per term). */
  ledTerms: Set<number>;
  /** The leader's write gate of this process (seeds with quotaBytes). */
  writes?: ClusterWrites;
  /** Whether its health report carried the QUOTA_EXCEEDED alarm when last checked. */
  quotaAlarm: boolean;
  /** Whether this process has applied the admin's raise of the quota (seeds with quotaRaise). */
  quotaRaised: boolean;
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

/** The clients' caller on seeds with the quota gate: an admin (its writes stop at the quota itself). */
const SIM_ADMIN = adminCaller('sim-admin-token', 'sim-admin');
/** A forwarded write that got no answer in this long fails TIMEOUT (its outcome unknown). */
const FORWARD_TIMEOUT_MS = 1000;

/** Codes of refusals after which the op surely did not take effect. */
const NOT_APPLIED_CODES: ReadonlySet<string> = new Set(['NOT_LEADER', 'TRANSFERRING', 'CONF_CHANGE_PENDING', 'NO_LEADER', 'PROPOSAL_DROPPED', 'TOO_MANY_PENDING', 'NO_SPACE', 'LEADER_TRANSFER', 'LEADER_CATCHING_UP']);


export class Simulation {
  readonly knobs: SimKnobs;
  private readonly rng: Rng;
  private readonly queue = new EventQueue<SimEvent>();
  private readonly net: SimNetwork;
  private readonly nodes = new Map<NodeId, SimNode>();
  private readonly clients: ClientState[] = [];
  private readonly history: HistoryOp[] = [];
  private readonly invariants = new InvariantChecker();
  /** The last traceLines trace lines, a ring: traceNext is where the next one goes. */
  private readonly traceBuf: (string | (() => string))[] = [];
  private traceNext = 0;
  private readonly traceLines: number;
  private nowMs = 0;
  private nextReqId = 1;
  private nextNodeNum: number;
  private phase: 'safety' | 'liveness' = 'safety';
  private livenessOkAtMs: number | undefined;
  private stats = { messages: 0, dropped: 0, crashes: 0, confChanges: 0, transfers: 0, elections: 0, pauses: 0, clockSkews: 0 };
  private readonly coverage = emptyCoverage();
  private readonly skewed: (() => void)[] = [];
  /** `${to}<${from}` → when `to` last got a Raft message from `from`. */
  private readonly heard = new Map<string, number>();
  private readonly apps: SimApps | undefined;
  /** Voters as the cluster decided them (the first application of each conf change). */
  private readonly decidedVoters = new Set<NodeId>();
  /** The highest conf change index any node applied (membership as decided). */
  private confDecidedUpTo = 0;
  /** Set when a promise the driver awaits may have settled: its continuations must run. */
  private settled = false;

  constructor(private readonly opts: SimOptions) {
    this.rng = seededRng(opts.seed);
    this.knobs = chooseKnobs(this.rng);
    // Drawn from the seed itself so the rest of each seed's schedule stays as it was.
    this.knobs.spillValuesOverBytes = [0, 4, undefined][opts.seed % 3];
    this.knobs.tailEntries = [0, 3, 20, 200][Math.floor(opts.seed / 3) % 4];
    this.knobs.streamSnapshots = Math.floor(opts.seed / 12) % 2 === 0;
    this.knobs.kvMaxOpenPages = [1, 3, undefined][Math.floor(opts.seed / 24) % 3];
    this.knobs.recordsInCommands = Math.floor(opts.seed / 72) % 4 !== 3;
    if (!this.knobs.apps && opts.seed % 5 === 2) {
      if (Math.floor(opts.seed / 5) % 2 === 0) {
        this.knobs.quotaBytes = MIN_MAX_STATE_BYTES;
        this.knobs.stateLimitBytes = 4 * MIN_MAX_STATE_BYTES;
        // A quarter of them: the others keep the one quota through the run, so the gate's bugs show.
        if (Math.floor(opts.seed / 10) % 4 === 1) this.knobs.quotaRaise = { atMs: 2000 + (opts.seed % 7) * 1000, toBytes: 2 * MIN_MAX_STATE_BYTES };
      } else this.knobs.stateLimitBytes = (this.knobs.keys + 1) * STATE_LIMIT_SMALL_RECORD_BYTES + STATE_LIMIT_ROOM_BYTES;
    }
    this.knobs.keepLogBytesForFollowers = [undefined, 0, 2000][Math.floor(opts.seed / 24) % 3];
    this.knobs.maxInflightBytes = [undefined, 300][Math.floor(opts.seed / 72) % 2];
    this.traceLines = opts.traceLines ?? 400;
    this.net = new SimNetwork(this.rng, this.knobs.network);
    const ids = Array.from({ length: this.knobs.nodes }, (_, i) => `n${i + 1}`);
    this.nextNodeNum = ids.length + 1;
    for (let c = 0; c < this.knobs.clients; c++) this.addClient(false);
    this.queue.push(this.knobs.faultEveryMs, { kind: 'fault' });
    this.queue.push(50, { kind: 'writeback' });
    if (this.knobs.quotaRaise) this.queue.push(this.knobs.quotaRaise.atMs, { kind: 'quota-raise' });
    this.bootIds = ids;
    if (this.knobs.apps) {
      this.apps = new SimApps({
        nowMs: () => this.nowMs,
        rng: this.rng,
        trace: (line) => this.trace(line),
        violation: (message) => this.check(() => {
          throw new SafetyViolation(message);
        }),
        liveNode: (id) => this.nodes.get(id)?.node,
        clockOf: (id) => this.nodes.get(id)!.clock!,
        send: (from, to, fn) => {
          const delays = this.net.plan(from, to);
          if (delays.length === 0) return false;
          this.queue.push(this.nowMs + delays[0], { kind: 'rpc', from, to, fn });
          return true;
        },
        heardMs: (to, from) => this.heard.get(`${to}<${from}`) ?? 0,
        atMs: (ms, fn) => this.queue.push(Math.max(ms, this.nowMs), { kind: 'world', fn }),
        coverage: this.coverage,
        settled: () => (this.settled = true),
        recordsInCommands: this.knobs.recordsInCommands === true,
      }, new Set([...(opts.bugs ?? [])].filter((b): b is AppsBug => (ALL_APPS_BUGS as readonly string[]).includes(b))));
      this.queue.push(500, { kind: 'operate' });
    }
  }

  private readonly bootIds: NodeId[];
  private readonly snapshotStream = new SimSnapshotStream({
    rng: { next: () => this.rng.next(), int: (n: number) => this.rng.int(n) } as Rng,
    send: (from, to, fn) => {
      const delays = this.net.plan(from, to);
      if (delays.length === 0) return false;
      this.queue.push(this.nowMs + delays[0], { kind: 'rpc', from, to, fn });
      return true;
    },
    later: (from, ms, fn) => {
      const n = this.nodes.get(from);
      if (n) this.later(n, ms, fn);
    },
    peer: (id) => {
      const n = this.nodes.get(id);
      const node = n?.node;
      if (!n || !node || !n.store) return undefined;
      n.sink ??= guardSink(n.store.snapshotSink(), () => node.stagedSnapshotPending, () => this.nowMs);
      return { node, sink: n.sink };
    },
    trace: (line) => this.trace(line),
  });

  async run(): Promise<SimResult> {
    let violation: string | undefined;
    let livenessFailure: string | undefined;
    let checkTimedOut = false;
    try {
      for (const id of this.bootIds) await this.createNode(id, true, this.bootIds);
      await this.runUntil(this.knobs.safetyMs);
      await this.startLiveness();
      await this.runUntil(this.knobs.safetyMs + this.knobs.livenessBudgetMs, () => this.livenessOkAtMs !== undefined);
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
    // The abandoned drivers of crashed nodes hold nothing the next seed needs.
    for (const n of this.nodes.values()) n.inc++;
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
      trace: ok && this.traceLines <= 400 ? [] : [...this.traceBuf.slice(this.traceNext), ...this.traceBuf.slice(0, this.traceNext)].map((t) => (typeof t === 'string' ? t : t())),
      stats: this.stats,
      coverage: { ...this.coverage, pauses: this.stats.pauses, crashes: this.stats.crashes },
    };
    if (violation) result.violation = violation;
    if (livenessFailure) result.livenessFailure = livenessFailure;
    return result;
  }

  // ------------------------------------------------------------------ event loop

  private async runUntil(endMs: number, stop?: () => boolean): Promise<void> {
    let events = 0;
    for (;;) {
      const t = this.queue.peekTime();
      if (t === undefined || t > endMs) break;
      const next = this.queue.pop()!;
      this.nowMs = next.atMs;
      const pending = this.handle(next.event);
      if (pending) await pending;
      // The driver is async: what a settled write (or a fired timer) lets run happens now, in
      // order, before the next event. Nothing else runs in between (no real I/O or timers).
      if (this.settled) {
        this.settled = false;
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
      if (this.violation) throw this.violation;
      if (++events > MAX_EVENTS) throw new Error(`event budget of ${MAX_EVENTS} exceeded`);
      if (stop?.()) return;
    }
    this.nowMs = endMs;
  }

  /** A violation found inside a driver callback (thrown there, it would look like a driver failure). */
  private violation: SafetyViolation | undefined;

  private check(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      if (err instanceof SafetyViolation) this.violation ??= err;
      else throw err;
    }
  }

  private handle(ev: SimEvent): Promise<void> | void {
    // A paused process handles nothing: its timers, messages, disk completions and requests
    // wait (in order) until it resumes.
    const target = ev.kind === 'call' || ev.kind === 'client-deliver' ? ev.node : ev.kind === 'deliver' || ev.kind === 'rpc' ? ev.to : undefined;
    const paused = target !== undefined ? this.nodes.get(target) : undefined;
    if (paused && paused.pausedUntilMs > this.nowMs) {
      this.queue.push(paused.pausedUntilMs, ev);
      return;
    }
    switch (ev.kind) {
      case 'call': {
        const n = this.nodes.get(ev.node)!;
        if (n.inc !== ev.inc || !n.node) return;
        this.settled = true;
        ev.fn();
        this.afterInput(n);
        return;
      }
      case 'deliver': {
        const n = this.nodes.get(ev.to);
        if (!n?.node || !n.raft || this.net.isBlocked(ev.msg.from, ev.to)) return;
        this.trace(() => `deliver ${formatMessage(ev.msg)}`);
        const hadSnapshot = n.raft.log.pendingSnapshot !== undefined;
        this.heard.set(`${ev.to}<${ev.msg.from}`, this.nowMs);
        n.node.step(ev.msg);
        if (!hadSnapshot && n.raft.log.pendingSnapshot !== undefined) {
          n.confDirty = true;
          if (n.node.busy) this.coverage.snapshots_racing_apply++;
        }
        if (ev.msg.type === MessageType.TimeoutNow) this.coverage.leadership_transfers++;
        this.afterInput(n);
        return;
      }
      case 'rpc': {
        const n = this.nodes.get(ev.to);
        if (!n?.node || this.net.isBlocked(ev.from, ev.to)) return;
        this.settled = true;
        ev.fn();
        this.afterInput(n);
        return;
      }
      case 'world':
        this.settled = true;
        ev.fn();
        return;
      case 'operate':
        if (this.phase !== 'safety') return;
        this.apps!.operate(this.liveNodes().map((n) => n.id));
        this.queue.push(this.nowMs + 200 + this.rng.int(700), ev);
        return;
      case 'client-deliver':
        this.nodeHandleClient(ev.node, ev.req);
        return;
      case 'client-reply':
        this.clientHandleReply(ev.client, ev.reply);
        return;
      case 'client-timeout': {
        const c = this.clients[ev.client];
        if (c.reqId !== ev.reqId || !c.current) return;
        // No answer: the op may or may not have taken effect. Sending it again could apply it
        // twice (the state machine keeps no client sessions), so the client moves on.
        this.trace(`client c${c.id}: timed out; outcome unknown`);
        if (c.probe) this.clientRetry(c, NONE_HINT, 'timeout');
        else this.finishOp(c, null);
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
        return this.restartNode(ev.node);
      case 'resume':
        this.trace(`${ev.node}: resumed`);
        return;
      case 'promote': {
        const leader = this.leader();
        if (!leader?.raft!.learners.has(ev.node)) return;
        this.proposeConf(leader, { type: ConfChangeType.AddVoter, node: ev.node }, 'promote soon after it was added', () => this.queue.push(this.nowMs + 50, ev));
        return;
      }
      case 'replace':
        return this.replaceRetired(ev.node);
      case 'join':
        return this.joinFresh(ev.node, ev.inPlaceOf);
      case 'heal':
        for (const undo of this.skewed.splice(0)) undo();
        this.net.heal();
        this.trace('heal: all partitions removed');
        return;
      case 'fault':
        if (this.phase === 'safety') {
          const p = this.injectFault();
          this.queue.push(this.nowMs + this.knobs.faultEveryMs * (0.5 + this.rng.next()), ev);
          return p;
        }
        return;
      case 'writeback':
        for (const n of this.nodes.values()) n.disk.writeback(this.nowMs);
        this.queue.push(this.nowMs + 50, ev);
        return;
      case 'quota-raise':
        return this.raiseQuota();
    }
  }

  // ------------------------------------------------------------------ nodes

  private later(n: SimNode, delayMs: number, fn: () => void): void {
    this.queue.push(this.nowMs + delayMs, { kind: 'call', node: n.id, inc: n.inc, fn });
  }

  private async createNode(id: NodeId, bootstrap: boolean, voters: NodeId[]): Promise<SimNode> {
    const drift = 1 + ((this.rng.next() * 2 - 1) * this.knobs.driftPct) / 100;
    const n: SimNode = {
      id,
      node: undefined,
      raft: undefined,
      disk: new SimDisk(this.knobs.writebackMs, this.knobs.tornWrites),
      inc: 0,
      rate: drift,
      removed: false,
      retired: false,
      doomed: false,
      pausedUntilMs: 0,
      compactEvery: this.knobs.mixedCompaction && this.rng.next() < 0.5 ? 1000 : this.knobs.compactEvery,
      ledTerms: new Set(),
      quotaAlarm: false,
      quotaRaised: false,
      confDirty: true,
      clock: undefined,
      clockOffsetMs: 0,
      burstUntilMs: 0,
    };
    this.nodes.set(id, n);
    const state = bootstrap ? bootstrapState(voters) : emptyState();
    if (bootstrap && this.knobs.quotaBytes !== undefined) {
      // omnid init's first write: the cluster's config, with the state quota.
      const init: Command = { type: 'cluster.init', clusterId: 'sim', voterTarget: 3, rootNodeId: '', ephemeralRoot: false, maxStateBytes: this.knobs.quotaBytes };
      state.entries.push({ index: state.entries.length + 1, term: 1, type: EntryType.Normal, data: encodeCommand(init) });
      state.hardState.commit = state.entries.length;
    }
    // The bootstrap state is what `init` would write durably before starting.
    n.disk.write({ entries: state.entries, hardState: state.hardState }, true, this.nowMs);
    await this.startNode(n);
    return n;
  }

  private async startNode(n: SimNode): Promise<void> {
    n.inc++;
    n.pausedUntilMs = 0;
    n.confDirty = true;
    const inc = n.inc;
    const alive = (): boolean => n.inc === inc;
    const store = new SimStore(
      n.disk,
      {
        alive,
        later: (ms, fn) => this.later(n, ms, fn),
        nowMs: () => this.nowMs,
        writeLatencyMs: () =>
          this.knobs.diskLatencyMs * this.rng.next() + (this.knobs.applyLatencyMs ?? 0) * this.rng.next() + (this.knobs.slowDisk?.node === n.id && this.phase === 'safety' ? this.knobs.slowDisk.writeMs * (0.5 + this.rng.next() / 2) : 0),
        fsyncFails: () => this.phase === 'safety' && this.rng.next() < (this.knobs.fsyncErrorRate ?? 0),
      },
      n.id,
    );
    n.store = store;
    n.sink = undefined;
    let node: RaftNode;
    try {
      node = await RaftNode.open({
        id: n.id,
        storage: store,
        send: (msgs) => {
          if (alive()) for (const m of msgs) this.sendRaft(n.id, m);
        },
        log: silentLogger,
        timing: { tickMs: this.knobs.tickMs, electionTick: this.knobs.electionTick, heartbeatTick: this.knobs.heartbeatTick },
        snapshotEveryEntries: n.compactEvery,
        snapshotTailEntries: this.knobs.tailEntries,
        keepLogBytesForFollowers: this.knobs.keepLogBytesForFollowers,
        ...(this.knobs.streamSnapshots
          ? {
              sendSnapshot: (m: Message, view: StateView) => {
                this.coverage.snapshots_streamed++;
                return this.snapshotStream.send(n.id, m, view);
              },
            }
          : {}),
        timers: (n.clock = new SimClock((ms, fn) => this.later(n, ms, fn), () => (this.nowMs < n.burstUntilMs ? n.rate / 20 : n.rate), () => SIM_EPOCH_MS + this.nowMs + n.clockOffsetMs, () => this.nowMs)),
        rngSeed: this.rng.int(2 ** 31),
        readNonce: `${n.id}.${inc}`,
        state: { spillValuesOverBytes: this.knobs.spillValuesOverBytes, kvMaxOpenPages: this.knobs.kvMaxOpenPages, ...(this.knobs.stateLimitBytes !== undefined ? { maxStateBytes: this.knobs.stateLimitBytes } : {}) },
        core: {
          maxSizePerMsgBytes: this.knobs.maxSizePerMsgBytes,
          maxInflightMsgs: this.knobs.maxInflightMsgs,
          ...(this.knobs.maxInflightBytes !== undefined ? { maxInflightBytes: this.knobs.maxInflightBytes } : {}),
          bugs: new Set([...(this.opts.bugs ?? [])].filter((b): b is BugName => (ALL_BUGS as readonly string[]).includes(b))),
          trace: (line) => this.trace(line),
          observe: (o) => this.check(() => this.invariants.observeCore(n.id, o)),
        },
        observer: {
          persisted: (rd) => alive() && this.afterPersist(n, rd),
          applying: (e) => alive() && this.check(() => this.observeApply(n, e)),
          handled: (rd) => alive() && this.afterReady(n, rd),
        },
        onApplied: () => {
          if (alive()) this.apps?.applied(n.id);
        },
        onFatal: (err) => {
          if (!alive()) return;
          const eio = (err as { code?: string }).code === 'EIO';
          if (eio) this.coverage.fsync_errors++;
          this.trace(`fault: ${n.id}: driver stopped (${err.message.slice(0, 120)}); restarting`);
          if (!eio) this.check(() => { throw new SafetyViolation(`${n.id}: the driver stopped: ${err.message}`); });
          this.crashNode(n);
          this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
        },
      });
    } catch (err) {
      if ((err as { code?: string }).code !== 'STORAGE_CORRUPT') throw err;
      // The store proved a synced write was lost: the node does not start. The operator's
      // recovery (README, Durability): remove it, and join a fresh node in its place.
      this.trace(`${n.id}: refuses to start: ${(err as Error).message.slice(0, 100)}`);
      this.coverage.lost_writes_detected++;
      n.retired = true;
      this.queue.push(this.nowMs + 10, { kind: 'replace', node: n.id });
      return;
    }
    if (!alive()) return;
    n.node = node;
    n.raft = node.raft;
    n.quotaAlarm = false;
    n.quotaRaised = false;
    if (this.knobs.quotaBytes !== undefined) n.writes = this.writesFor(n, node, alive);
    const state = n.disk.load();
    this.trace(`${n.id}: started (term=${state.hardState.term} last=${state.entries.at(-1)?.index ?? state.snapshot?.meta.index ?? 0} state=${node.state.appliedIndex}/${node.state.kvCount()} keys)`);
    node.start();
    this.apps?.nodeStarted(n.id);
    this.afterInput(n);
  }

  private crashNode(n: SimNode, loseSyncedWrite = false): void {
    if (!n.node) return;
    this.apps?.nodeCrashed(n.id);
    n.node = undefined;
    n.raft = undefined;
    n.inc++;
    const lost = n.disk.crash(this.rng, loseSyncedWrite);
    if (lost) n.doomed = true;
    this.stats.crashes++;
    this.trace(`${n.id}: CRASH (unsynced writes lost${lost ? '; the disk also lost a synced write' : ''})`);
  }

  private restartNode(id: NodeId): Promise<void> | void {
    const n = this.nodes.get(id)!;
    if (n.node || n.retired) return;
    return this.startNode(n);
  }

  /**
   * Whether the victim may lose its disk's last synced write (and so be retired): once per seed,
   * and only while a majority of the voters stays healthy.
   * Beyond that Raft cannot go on without an operator rebuilding the cluster.
   */
  private canLoseANode(victim: SimNode): boolean {
    // One per seed: the replacement of one node is what this fault exercises; two at once can
    // leave a minority of healthy voters, which Raft cannot get past without an operator.
    if ([...this.nodes.values()].some((x) => x.retired || x.doomed)) return false;
    const healthy = [...this.decidedVoters].filter((v) => {
      const x = this.nodes.get(v);
      return x !== undefined && !x.retired && !x.doomed;
    });
    if (healthy.length < 3) return false;
    const left = this.decidedVoters.has(victim.id) ? healthy.length - 1 : healthy.length;
    if (left < Math.floor(this.decidedVoters.size / 2) + 1) return false;
    // A voter that lags may still act on an older configuration (one that has not applied a
    // removal yet counts the removed node, which will not vote for it): a majority of every
    // configuration a live voter holds must stay healthy too, or nobody can be elected again.
    const usable = (id: NodeId) => {
      const x = this.nodes.get(id);
      return id !== victim.id && x !== undefined && !x.retired && !x.doomed && !x.removed;
    };
    for (const x of this.nodes.values()) {
      if (x.removed || x.retired || x.id === victim.id) continue;
      if (!x.raft) return false; // down: the configuration it will restart with is not known here
      if (!x.raft.voters.has(x.id)) continue;
      const voters = [...x.raft.voters];
      if (voters.filter(usable).length < Math.floor(voters.length / 2) + 1) return false;
    }
    return true;
  }

  /** Removes a node whose disk lost a synced write, then joins a fresh node in its place. */
  private async replaceRetired(id: NodeId): Promise<void> {
    const n = this.nodes.get(id)!;
    const leader = this.leader();
    if (!n.removed && leader && (leader.raft!.voters.has(id) || leader.raft!.learners.has(id))) {
      this.proposeConf(leader, { type: ConfChangeType.RemoveNode, node: id }, 'remove the node whose disk lost a write');
      this.queue.push(this.nowMs + 200, { kind: 'replace', node: id });
      return;
    }
    if (!n.removed) {
      this.queue.push(this.nowMs + 50, { kind: 'replace', node: id });
      return;
    }
    if (this.nodes.size >= MAX_NODES + 2) return;
    if (!leader) {
      this.queue.push(this.nowMs + 100, { kind: 'replace', node: id });
      return;
    }
    const fresh = `n${this.nextNodeNum++}`;
    await this.createNode(fresh, false, []);
    this.coverage.nodes_replaced++;
    this.joinFresh(fresh, id);
  }

  /** Adds a fresh node as a learner through the leader there is now (the one before may have crashed meanwhile), then promotes it. */
  private joinFresh(fresh: NodeId, inPlaceOf: NodeId): void {
    const leader = this.leader();
    if (!leader?.node) {
      this.queue.push(this.nowMs + 100, { kind: 'join', node: fresh, inPlaceOf });
      return;
    }
    this.proposeConf(leader, { type: ConfChangeType.AddLearner, node: fresh }, `join a fresh node in place of ${inPlaceOf}`);
    this.queue.push(this.nowMs + 100 + this.rng.int(300), { kind: 'promote', node: fresh });
  }

  /** Proposes a conf change on the leader; onRefused runs when the core did not take it. */
  private proposeConf(leader: SimNode, cc: { type: ConfChangeType; node: NodeId }, why: string, onRefused?: () => void): void {
    this.trace(`fault: membership ${ConfChangeType[cc.type]} ${cc.node} via ${leader.id} (${why})`);
    this.stats.confChanges++;
    leader.node!.proposeConfChange(cc, 2000).catch((e: { code?: string }) => {
      if (onRefused && e.code !== 'TIMEOUT' && e.code !== 'UNAVAILABLE' && e.code !== 'PROPOSAL_DROPPED') onRefused();
    });
    this.settled = true;
    this.afterInput(leader);
  }

  // ------------------------------------------------------------------ the leader's write gate (quota)

  /**
   * The daemon's write path for this process (node/cluster/writes.ts, as node/daemon.ts builds
   * it) on its virtual clock: the leader authorizes and checks the quota before proposing; a
   * follower forwards over the simulated network to the leader's gate (in omnid the admin
   * token travels with it and the leader verifies it against the replicated hashes: the sim's
   * state holds no tokens, so the leader takes the sim admin's principal as given).
   */
  private writesFor(n: SimNode, node: RaftNode, alive: () => boolean): ClusterWrites {
    const timeoutMs = this.knobs.clientTimeoutMs * 4;
    const raft: WritesRaft = {
      raft: node.raft,
      get state() {
        return node.state;
      },
      get isLeader() {
        return node.isLeader;
      },
      get leader() {
        return node.leader;
      },
      propose: (data) => node.propose(data, timeoutMs),
      proposeConfChange: (cc) => node.proposeConfChange(cc, timeoutMs),
      readBarrier: (ms) => node.readBarrier(ms),
    };
    const forward = (leaderId: NodeId, data: Uint8Array): Promise<ApplyResult> =>
      new Promise<ApplyResult>((resolve, reject) => {
        let done = false;
        const finish = (f: () => void): void => {
          if (done || !alive()) return;
          done = true;
          f();
        };
        n.clock!.setTimeout(() => finish(() => reject(new OmniError('TIMEOUT', 'forwarded write timed out; it may still commit'))), FORWARD_TIMEOUT_MS);
        const sent = this.rpc(n.id, leaderId, () => {
          const l = this.nodes.get(leaderId);
          const lw = l?.writes;
          if (!l?.node || !lw) return;
          const decoded = decodeCommand(data);
          if (!decoded.ok) return void this.rpc(leaderId, n.id, () => finish(() => resolve(decoded)));
          const offLeader = () => new OmniError('NOT_LEADER', 'not the leader', { leader: l.node?.leader ?? '' });
          lw.proposeAsOnLeader({ kind: 'admin', tokenId: SIM_ADMIN.kind === 'admin' ? SIM_ADMIN.tokenId : '' }, decoded.command, offLeader).then(
            (r) => this.rpc(leaderId, n.id, () => finish(() => resolve(r))),
            (e: unknown) => this.rpc(leaderId, n.id, () => finish(() => reject(e))),
          );
        });
        if (!sent) return;
      });
    const inc = n.inc;
    return new ClusterWrites({
      id: n.id,
      raft,
      link: {
        forwardCommand: (leader, data) => forward(leader, data),
        forwardConf: () => Promise.reject(new OmniError('BAD_REQUEST', 'the simulator forwards no membership changes')),
      },
      isStopping: () => n.inc !== inc,
      clock: n.clock!,
      bugs: new Set([...(this.opts.bugs ?? [])].filter((b): b is WritesBug => (ALL_WRITES_BUGS as readonly string[]).includes(b))),
      recordsInCommands: () => this.knobs.recordsInCommands === true,
    });
  }

  /** A message from one node's process to another's over the simulated network (false: dropped). */
  private rpc(from: NodeId, to: NodeId, fn: () => void): boolean {
    const delays = this.net.plan(from, to);
    if (delays.length === 0) return false;
    this.queue.push(this.nowMs + delays[0], { kind: 'rpc', from, to, fn });
    return true;
  }

  /**
   * An admin's `omni quota set` (seeds with quotaRaise): a config.set with the raised quota
   * through a live node's gate, as the API proposes it. Tried again every 300 ms until some node
   * applied it (a timed-out attempt may still commit; a second one changes nothing).
   */
  private raiseQuota(): void {
    const raise = this.knobs.quotaRaise!;
    if ([...this.nodes.values()].some((x) => x.node && quotaBytes(x.node.state.config()) === raise.toBytes)) return;
    this.queue.push(this.nowMs + 300, { kind: 'quota-raise' });
    const live = [...this.nodes.values()].filter((x) => x.node && x.writes && !x.retired && !x.removed);
    if (live.length === 0) return;
    const n = live[this.rng.int(live.length)];
    this.trace(`${n.id}: an admin raises the quota to ${raise.toBytes} bytes`);
    n.writes!.propose({ type: 'config.set', voterTarget: 3, maxStateBytes: raise.toBytes }, SIM_ADMIN).then(
      (r) => {
        if (!r.ok) this.check(() => { throw new SafetyViolation(`${n.id}: the quota raise was refused by the state machine: ${r.error.code} ${r.error.message}`); });
      },
      (e: unknown) => this.trace(`${n.id}: the quota raise did not go through: ${(e as Error).message.slice(0, 100)}`),
    );
    this.settled = true;
    this.afterInput(n);
  }

  /** Values of kv writes the gate refused, and of kv writes some node applied (seeds with quotaBytes). */
  private readonly quotaRefusedValues = new Set<string>();
  private readonly appliedValues = new Set<string>();

  /** A write the gate refused must never have been applied anywhere, nor be later. */
  private quotaRefused(node: NodeId, cmd: Command, message: string, check: boolean): void {
    this.trace(`${node}: ${cmd.type} refused by the leader's gate: ${message.slice(0, 140)}`);
    if (!check) return;
    for (const v of kvValues(cmd)) {
      this.quotaRefusedValues.add(v);
      if (this.appliedValues.has(v)) this.check(() => { throw new SafetyViolation(`${node}: a write refused QUOTA_EXCEEDED was applied (value ${v.slice(0, 40)}…)`); });
    }
  }

  /** On an entry applied (seeds with quotaBytes): it was no refused write. */
  private observeQuotaApply(n: SimNode, e: Entry): void {
    if (e.type !== EntryType.Normal || e.data.byteLength === 0) return;
    const d = decodeCommand(e.data);
    if (!d.ok) return;
    for (const v of kvValues(d.command)) {
      this.appliedValues.add(v);
      if (this.quotaRefusedValues.has(v)) throw new SafetyViolation(`${n.id}: applied ${e.index}, a write the leader's gate refused QUOTA_EXCEEDED (value ${v.slice(0, 40)}…): a refused write entered the log`);
    }
  }

  /**
   * After a Ready applied something (seeds with quotaBytes): no write admitted past the quota
   * (every kv write here went through the gate as an admin, so the applied state never passes
   * it), the replicated quota is the one omnid init set, and the node's health report (the
   * real assessHealth, fed as the API's health() feeds it) carries the QUOTA_EXCEEDED alarm
   * exactly while its state is at or past the alarm's share of the quota with a leader known.
   */
  private checkQuota(n: SimNode): void {
    const node = n.node!;
    const state = node.state;
    const cfg = state.config();
    if (cfg.clusterId === '') return; // a joining node that has not caught up to cluster.init yet
    const quota = quotaBytes(cfg);
    const raised = this.knobs.quotaRaise?.toBytes;
    if (quota === raised) {
      if (!n.quotaRaised) this.coverage.quota_raises_applied++;
      n.quotaRaised = true;
    } else if (quota !== this.knobs.quotaBytes || n.quotaRaised) {
      // The quota is the one omnid init set until the raise applies, then the raised one (a
      // process applies in log order and never goes back, short of a restart from older rows).
      throw new SafetyViolation(`${n.id}: the replicated quota is ${quota} bytes; omnid init set ${this.knobs.quotaBytes}${raised !== undefined ? `, the admin raised it to ${raised}${n.quotaRaised ? ' and this process had applied that' : ''}` : ''}`);
    }
    if (state.sizeBytes > quota) throw new SafetyViolation(`${n.id}: the state holds ${state.sizeBytes} bytes at applied index ${state.appliedIndex}, past the quota of ${quota}: the leader's gate admitted a write past it`);
    const raft = node.raft;
    const health = assessHealth({
      selfId: n.id,
      leader: raft.lead,
      voters: [...raft.voters],
      voterTarget: cfg.voterTarget,
      nodes: state.nodes(),
      silentMs: () => undefined,
      silentAfterMs: Number.MAX_SAFE_INTEGER,
      stateBytes: state.sizeBytes,
      quotaBytes: quota,
    });
    const alarm = health.reasons.some((r) => r.startsWith('QUOTA_EXCEEDED'));
    const due = health.quorum && state.sizeBytes >= quota * QUOTA_ALARM_SHARE;
    if (alarm !== due) throw new SafetyViolation(`${n.id}: QUOTA_EXCEEDED alarm ${alarm ? 'raised' : 'not raised'} with ${state.sizeBytes} of ${quota} bytes (leader ${raft.lead || 'none'})`);
    if (alarm && !n.quotaAlarm) {
      this.coverage.quota_alarms_raised++;
      this.trace(`${n.id}: QUOTA_EXCEEDED alarm raised (${state.sizeBytes} of ${quota} bytes)`);
    } else if (!alarm && n.quotaAlarm && state.sizeBytes < quota * QUOTA_ALARM_SHARE) {
      this.coverage.quota_alarms_cleared++;
      this.trace(`${n.id}: QUOTA_EXCEEDED alarm cleared (${state.sizeBytes} of ${quota} bytes)`);
    }
    if (alarm || state.sizeBytes < quota * QUOTA_ALARM_SHARE) n.quotaAlarm = alarm;
  }

  /** After any input: election safety for a leader. */
  private afterInput(n: SimNode): void {
    const raft = n.raft;
    if (raft && n.node && raft.role === Role.Leader) this.check(() => this.invariants.observeLeader(n.id, raft.term, raft));
  }

  private afterPersist(n: SimNode, rd: Ready): void {
    const raft = n.raft!;
    if (rd.softState?.role === Role.Leader) this.stats.elections++;
    if (this.phase !== 'safety' || raft.role !== Role.Leader || n.ledTerms.has(raft.term) || rd.entries.length === 0) return;
    n.ledTerms.add(raft.term);
    if (this.rng.next() >= this.knobs.crashAfterElectionRate) return;
    this.trace(`fault: new leader ${n.id} crashes right after persisting its first entries`);
    this.crashNode(n);
    this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
  }

  private observeApply(n: SimNode, e: Entry): void {
    const raft = n.raft!;
    this.invariants.observeApply(n.id, e, raft.log.committed);
    if (this.knobs.quotaBytes !== undefined) this.observeQuotaApply(n, e);
    this.trace(() => `${n.id}: apply ${e.index}@${e.term} ${describeEntryData(e)}`);
    if (e.type !== EntryType.ConfChange) return;
    const cc = decodeConfChange(e.data);
    const racing = raft.log.pendingSnapshot;
    if (racing && e.index <= racing.meta.index) this.coverage.conf_changes_superseded_by_snapshot++;
    if (raft.role === Role.Leader) {
      if (cc.type === ConfChangeType.AddVoter && n.node!.state.memberRoles().learners.includes(cc.node)) this.coverage.learner_promotions++;
      if (this.net.partitioned) this.coverage.conf_changes_under_partition++;
    }
    // Membership as the cluster decided it: the first time any node applies this index.
    if (e.index <= this.confDecidedUpTo) return;
    this.confDecidedUpTo = e.index;
    const target = this.nodes.get(cc.node);
    if (target) target.removed = cc.type === ConfChangeType.RemoveNode;
    if (cc.type === ConfChangeType.AddVoter) this.decidedVoters.add(cc.node);
    else this.decidedVoters.delete(cc.node);
  }

  private afterReady(n: SimNode, rd: Ready): void {
    const raft = n.raft!;
    if (n.writes && (rd.snapshot || rd.committedEntries.length > 0)) this.check(() => this.checkQuota(n));
    if (rd.snapshot) {
      this.coverage.snapshots_installed++;
      this.trace(`${n.id}: applied snapshot at ${rd.snapshot.meta.index}`);
    }
    // The configuration the core acts on is the one the state machine's snapshot and applied
    // conf changes imply (a snapshot the core took in but has not handed out speaks for later).
    if (rd.snapshot || rd.committedEntries.some((e) => e.type === EntryType.ConfChange)) n.confDirty = true;
    // (A state loaded from its rows or a snapshot may run ahead of the core: checked once the core catches up.)
    if (n.confDirty && !raft.log.pendingSnapshot && n.node!.state.appliedIndex === raft.log.applied) {
      n.confDirty = false;
      const roles = n.node!.state.memberRoles();
      this.check(() => this.invariants.checkConf(n.id, { voters: new Set(roles.voters), learners: new Set(roles.learners) }, raft));
    }
    if (this.phase === 'safety' && rd.committedEntries.length > 0 && raft.role === Role.Leader && this.rng.next() < this.knobs.crashAfterCommitRate) {
      this.trace(`fault: leader ${n.id} crashes right after applying up to ${rd.committedEntries[rd.committedEntries.length - 1].index}`);
      this.crashNode(n);
      this.queue.push(this.nowMs + 50 + this.rng.int(1000), { kind: 'restart', node: n.id });
    }
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
    const node = n?.node;
    if (!n || !node) return;
    const inc = n.inc;
    const answer = (body: { ok: true; result: KvResult | RefusedForLimit } | { ok: false; leader: NodeId; retry: boolean; why: string }): void => {
      // A crashed process answers nothing.
      if (n.inc === inc) this.reply(id, req, body);
    };
    const refused = (err: unknown): void => {
      const e = err as { code?: string; message?: string; detail?: { leader?: unknown } };
      const leader = typeof e.detail?.leader === 'string' ? e.detail.leader : node.leader;
      answer({ ok: false, leader, retry: NOT_APPLIED_CODES.has(e.code ?? ''), why: e.code ?? String(e.message) });
    };
    const op = req.op;
    const timeoutMs = this.knobs.clientTimeoutMs * 4;
    if (op.kind === 'get') {
      node.readBarrier(timeoutMs).then(async () => {
        this.coverage.read_index_served++;
        const rec = await node.kvGet(op.key);
        answer({ ok: true, result: { kind: 'get-ok', value: rec?.value ?? null } });
      }, refused).catch(refused);
    } else {
      const cmd: Command =
        op.kind === 'put'
          ? { type: 'kv.put', key: op.key, value: op.value }
          : { type: 'kv.txn', compares: [op.expected === null ? { key: op.key, version: 0 } : { key: op.key, value: op.expected }], ops: [{ op: 'put', key: op.key, value: op.value }] };
      const proposed = n.writes
        ? n.writes.propose(cmd, SIM_ADMIN).catch((err: unknown) => {
            if ((err as { code?: string }).code !== 'QUOTA_EXCEEDED') throw err;
            this.coverage.writes_refused_for_quota++;
            // The liveness probe sends its value again whatever the outcome (even after a
            // timeout that may still commit): only other clients' refused values must never apply.
            this.quotaRefused(id, cmd, (err as Error).message, this.clients[req.client]?.probe !== true);
            answer({ ok: true, result: { kind: 'refused-for-quota' } });
            return undefined;
          })
        : node.propose(encodeCommand(cmd), timeoutMs);
      proposed.then((r) => {
        if (r === undefined) return;
        if (r.ok) answer({ ok: true, result: op.kind === 'put' ? { kind: 'put-ok' } : { kind: 'cas-ok', swapped: true } });
        else if (op.kind === 'cas' && r.error.code === 'CONFLICT') answer({ ok: true, result: { kind: 'cas-ok', swapped: false } });
        else if (r.error.code === 'RESOURCE_EXHAUSTED' && this.knobs.stateLimitBytes !== undefined) {
          this.coverage.writes_refused_for_state_limit++;
          this.trace(`${id}: ${op.kind} ${op.key} refused for the state limit: ${r.error.message}`);
          answer({ ok: true, result: { kind: 'refused-for-limit' } });
        }
        else this.check(() => { throw new SafetyViolation(`${id}: ${op.kind} refused by the state machine: ${r.error.code} ${r.error.message}`); });
      }, refused);
    }
    this.afterInput(n);
  }

  private reply(node: NodeId, req: ClientRequest, body: { ok: true; result: KvResult | RefusedForLimit } | { ok: false; leader: NodeId; retry: boolean; why: string }): void {
    // Client requests and answers go over TCP (HTTP): lost or late, never duplicated.
    for (const delay of this.net.plan(node, `c${req.client}`).slice(0, 1)) {
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
    let value = `c${c.id}-${c.seq + 1}`;
    // Under a state limit, a quarter of the writes carry a large value: two of them never fit.
    // With the quota gate, half of them: a third large value is asked for often enough.
    if (this.knobs.stateLimitBytes !== undefined && !c.probe && this.rng.next() < (this.knobs.quotaBytes !== undefined ? 0.5 : 0.25)) value += this.knobs.quotaBytes !== undefined ? QUOTA_LARGE_VALUE_PAD : LARGE_VALUE_PAD;
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
    let members = [...this.nodes.values()].filter((n) => !n.removed);
    // The liveness probe asks the configuration's members, as the omni CLI fails over among the
    // members /v1/nodes lists: a node started but never added has no leader and holds a write
    // until its 10 s deadline, and a probe that kept picking such nodes reported a cluster that
    // had committed its write as stuck (seed 1022: six attempts in a row at n6 and n7).
    if (c.probe) {
      const configured = members.filter((n) => [...this.nodes.values()].some((x) => x.raft && (x.raft.voters.has(n.id) || x.raft.learners.has(n.id))));
      if (configured.length > 0) members = configured;
    }
    const target = c.leaderHint !== NONE_HINT && this.nodes.has(c.leaderHint) ? c.leaderHint : members[this.rng.int(members.length)].id;
    c.reqId = this.nextReqId++;
    c.attempt++;
    const req: ClientRequest = { client: c.id, reqId: c.reqId, seq: c.seq, op: c.current!.op };
    const attempt = c.attempt;
    this.trace(() => `client c${c.id} -> ${target}: ${JSON.stringify(req.op)} seq=${req.seq} attempt=${attempt}`);
    for (const delay of this.net.plan(`c${c.id}`, target).slice(0, 1)) {
      this.queue.push(this.nowMs + delay, { kind: 'client-deliver', node: target, req });
    }
    this.queue.push(this.nowMs + this.clientAttemptTimeoutMs(c), { kind: 'client-timeout', client: c.id, reqId: c.reqId });
  }

  /**
   * How long a client waits for an answer. The liveness probe backs off as a real client does
   * (doubling up to 2 s): on a cluster whose disks and applies are slow, the answer to a
   * forwarded write can take longer than a short fixed timeout every time (seed 7752: writes
   * committed again and again after the heal, but each answer came after the client gave up).
   */
  private clientAttemptTimeoutMs(c: ClientState): number {
    const base = this.knobs.clientTimeoutMs;
    return c.probe ? Math.min(base * 2 ** Math.min(c.attempt - 1, 4), Math.max(base, PROBE_MAX_TIMEOUT_MS)) : base;
  }

  private clientHandleReply(clientId: number, reply: ClientReply): void {
    const c = this.clients[clientId];
    if (reply.reqId !== c.reqId || !c.current) return;
    if (!reply.ok) {
      if (reply.retry || c.probe) this.clientRetry(c, reply.leader, `refused by ${reply.node}: ${reply.why}`);
      else {
        this.trace(`client c${c.id} <- ${reply.node}: ${reply.why}; outcome unknown`);
        this.finishOp(c, null);
      }
      return;
    }
    this.trace(() => `client c${c.id} <- ${reply.node}: ${JSON.stringify(reply.result)}`);
    c.leaderHint = reply.node;
    // The probe's write is applied on the node that answered, and so is everything committed
    // before it: every app change acknowledged earlier must show there.
    if (c.probe) this.apps?.checkAcknowledged(reply.node);
    this.finishOp(c, reply.result);
  }

  private clientRetry(c: ClientState, hint: NodeId, why: string): void {
    const attempts = c.probe ? Number.POSITIVE_INFINITY : this.knobs.clientAttempts;
    if (c.attempt >= attempts) {
      this.trace(`client c${c.id}: gave up after ${c.attempt} attempts (${why})`);
      this.finishOp(c, null);
      return;
    }
    // Only ops that surely did not take effect are sent again (see ClientReply).
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

  private finishOp(c: ClientState, result: KvResult | RefusedForLimit | null): void {
    const cur = c.current!;
    c.current = undefined;
    c.reqId = 0;
    if (result?.kind === 'refused-for-quota') {
      // Refused by the leader's gate before it proposed: no effect, not part of the history
      // (quotaRefused and observeApply check it never reaches a log). The probe asks again.
      if (c.probe) {
        c.current = cur;
        this.clientRetry(c, NONE_HINT, 'refused for the quota');
        return;
      }
      this.queue.push(this.nowMs + this.rng.int(30), { kind: 'client-start', client: c.id });
      return;
    }
    if (result?.kind === 'refused-for-limit') {
      // Refused by the applied state machine: the write committed, which is what the probe asks.
      if (c.probe) {
        this.livenessOkAtMs = this.nowMs;
        c.done = true;
        return;
      }
      // Refused by the state machine on every replica: no effect, so not part of the history
      // (were it applied anywhere after all, a read would see a value no op in the history wrote).
      this.queue.push(this.nowMs + this.rng.int(30), { kind: 'client-start', client: c.id });
      return;
    }
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

  private injectFault(): Promise<void> | void {
    const k = this.knobs;
    const choices: (() => Promise<void> | void)[] = [() => {}];
    if (k.partitions) choices.push(() => this.partition(), () => this.partition(), () => this.healLater(0));
    if (k.crashes) choices.push(() => this.crashSome(), () => this.crashSome());
    if (k.membership) choices.push(() => this.changeMembership());
    if (k.transfers) choices.push(() => this.transferLeadership());
    if (k.pauses) choices.push(() => this.pauseSome(), () => this.jumpClock());
    choices.push(() => this.shakeNetwork());
    // Config churn: every other fault is a membership change.
    if (k.profile === 'config-churn' && this.rng.next() < 0.5) return this.changeMembership();
    if (k.profile === 'snapshot-race') return this.changeMembership();
    return choices[this.rng.int(choices.length)]();
  }

  private partition(): void {
    const ids = [...this.nodes.keys()];
    const leader = this.leader();
    const kind = this.knobs.profile === 'stale-leader' ? 0 : this.rng.int(5);
    this.net.heal();
    const exclusiveHost = this.apps && this.rng.next() < 0.4 ? this.apps.exclusiveHost() : undefined;
    if (exclusiveHost) {
      // The node running the exclusive task, cut off for longer than two leases: its task must
      // stop there before the leader's replacement starts elsewhere.
      this.net.split([exclusiveHost], ids.filter((i) => i !== exclusiveHost));
      this.trace(`fault: ${exclusiveHost} (runs the exclusive task) isolated`);
      this.healLater(3000 + this.rng.int(7000));
      return;
    }
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

  /**
   * A clock jump on one node (NTP stepping it, a VM resumed): its wall clock moves by up to a
   * minute either way for good, and its timers fire in a burst — 20× fast for 30–80 ms, as
   * when a host's monotonic time leaps forward.
   */
  private jumpClock(): void {
    const live = this.liveNodes();
    if (live.length === 0) return;
    const n = live[this.rng.int(live.length)];
    const stepMs = Math.round((this.rng.next() * 2 - 1) * 60_000);
    n.clockOffsetMs += stepMs;
    const burstMs = 30 + this.rng.int(50);
    n.burstUntilMs = this.nowMs + burstMs;
    this.stats.clockSkews++;
    this.coverage.clock_jumps++;
    this.trace(`fault: ${n.id}'s clock jumps ${stepMs} ms; its timers fire in a burst for ${burstMs} ms`);
  }

  /** The node's clock runs `factor` times slower (ticks further apart) until the next heal. */
  private skewClock(n: SimNode, factor: number): void {
    const normal = n.rate;
    n.rate = normal * factor;
    this.stats.clockSkews++;
    this.trace(`fault: ${n.id}'s clock runs ${factor.toFixed(1)}x slow`);
    this.skewed.push(() => (n.rate = normal));
  }

  private healLater(afterMs: number): void {
    this.queue.push(this.nowMs + afterMs, { kind: 'heal' });
  }

  private crashSome(): void {
    const live = this.liveNodes();
    if (live.length === 0) return;
    const leader = this.leader();
    const victim = leader && this.rng.next() < 0.5 ? leader : live[this.rng.int(live.length)];
    this.crashNode(victim, this.rng.next() < (this.knobs.lostWriteRate ?? 0) && this.canLoseANode(victim));
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

  private async changeMembership(): Promise<void> {
    const leader = this.leader();
    if (!leader) return;
    const raft = leader.raft!;
    const voters = [...raft.voters];
    const learners = [...raft.learners];
    const r = this.rng.next();
    // A node removed earlier whose process still runs with its old disk joins again.
    const readd = [...this.nodes.values()].filter((x) => x.removed && !x.retired && x.node && !raft.voters.has(x.id) && !raft.learners.has(x.id));
    let cc: { type: ConfChangeType; node: NodeId } | undefined;
    if (learners.length > 0 && r < 0.5) {
      cc = { type: ConfChangeType.AddVoter, node: learners[this.rng.int(learners.length)] };
    } else if (voters.length > 3 && r < 0.8) {
      // The snapshot-race nemesis keeps its lagging member.
      const removable = voters.filter((v) => this.knobs.profile !== 'snapshot-race' || v !== this.knobs.slowDisk?.node);
      cc = { type: ConfChangeType.RemoveNode, node: removable[this.rng.int(removable.length)] };
    } else if (readd.length > 0 && r < 0.9) {
      cc = { type: ConfChangeType.AddLearner, node: readd[this.rng.int(readd.length)].id };
      this.coverage.removed_nodes_readded++;
    } else if (this.nodes.size < MAX_NODES) {
      const id = `n${this.nextNodeNum++}`;
      await this.createNode(id, false, []);
      cc = { type: ConfChangeType.AddLearner, node: id };
      if (this.knobs.promoteSoon) this.queue.push(this.nowMs + 20 + this.rng.int(200), { kind: 'promote', node: id });
    }
    if (!cc || !leader.node) return;
    this.proposeConf(leader, cc, 'membership fault');
  }

  private transferLeadership(): void {
    const leader = this.leader();
    if (!leader) return;
    const others = [...leader.raft!.voters].filter((v) => v !== leader.id);
    if (others.length === 0) return;
    const to = others[this.rng.int(others.length)];
    this.trace(`fault: transfer leadership ${leader.id} -> ${to}`);
    this.stats.transfers++;
    leader.node!.transferLeader(to);
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

  private async startLiveness(): Promise<void> {
    this.phase = 'liveness';
    this.net.heal();
    this.net.knobs = CALM_NETWORK;
    for (const n of this.nodes.values()) if (!n.node && !n.removed && !n.retired) await this.startNode(n);
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
      .map((n) => (n.raft ? `${n.id}:${n.raft.role}@${n.raft.term} commit=${n.raft.log.committed}${n.removed ? ' removed' : ''}` : `${n.id}:${n.retired ? 'retired' : 'down'}`))
      .join(', ');
  }

  private trace(line: string | (() => string)): void {
    const t = Math.round(this.nowMs * 10) / 10;
    const entry = typeof line === 'string' ? `[${t}ms] ${line}` : () => `[${t}ms] ${line()}`;
    if (this.traceBuf.length < this.traceLines) this.traceBuf.push(entry);
    else {
      this.traceBuf[this.traceNext] = entry;
      this.traceNext = (this.traceNext + 1) % this.traceLines;
    }
  }
}

const NONE_HINT: NodeId = '';
/** Virtual wall-clock time at the start of every run (2026-01-01), so clock jumps stay positive. */
const SIM_EPOCH_MS = 1_767_225_600_000;

export function runSeed(seed: number, bugs?: ReadonlySet<SimBug>, traceLines?: number): Promise<SimResult> {
  return new Simulation({ seed, ...(bugs ? { bugs } : {}), ...(traceLines ? { traceLines } : {}) }).run();
}

/** A normal entry's command for the trace (commands are protobuf: printed as their JSON). */
function describeEntryData(e: Entry): string {
  if (e.data.byteLength === 0) return '(no-op)';
  if (e.type === EntryType.Normal) {
    const d = decodeCommand(e.data);
    if (d.ok) return JSON.stringify(d.command).slice(0, 120);
  }
  return new TextDecoder().decode(e.data).slice(0, 120);
}

/** The values a kv command writes (each client write's value is unique in a seed). */
function kvValues(c: Command): string[] {
  if (c.type === 'kv.put') return [c.value];
  if (c.type === 'kv.txn') return c.ops.flatMap((op) => (op.op === 'put' ? [op.value] : []));
  return [];
}
