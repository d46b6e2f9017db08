// Drives the pure Raft core against real time, durable storage and the libp2p transport,
// and applies committed entries to the cluster state machine. One Ready at a time, in etcd's
// order: persist (fsync) → send → apply → advance — except that a leader's Ready which writes
// its log and also applies entries (committed, so already in its log) applies them first and
// writes the rows they change in the same batch as its log. Proposals and linearizable reads
// wait here for their entries to be applied.
//
// A full disk (ENOSPC) is not fatal: the Ready that could not be written is kept, none of its
// new entries is acknowledged (committed ones it applied before its write stay applied, their
// rows kept to write), new proposals and reads are refused with NO_SPACE (HTTP 507),
// and the write is retried every NO_SPACE_RETRY_MS (reopening the store, since LevelDB refuses
// every write after a failed one) until space is freed. Meanwhile the node sends nothing, so a
// leader loses its followers' acknowledgements and steps down: another node leads.
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { randomInt, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { Raft, type ProposeResult, type RaftConfig } from '../../protocol/raft/raft.js';
import { NONE, ConfChangeType, EntryType, MessageType, Role, type ConfChange, type Entry, type HardState, type Message, type NodeId, type Ready, type Snapshot, type SnapshotMeta } from '../../protocol/raft/types.js';
import { decodeConfChange } from '../../protocol/codec.js';
import { seededRng } from '../../protocol/rng.js';
import { DEFAULT_TAIL_ENTRIES } from '../../protocol/raft/compaction.js';
import { lostLeaderCampaignDelayMs } from '../../protocol/raft/lost-leader.js';
import { RaftRestoreError } from '../../protocol/raft/errors.js';
import { ClusterState, StateRestoreError, needsValues, valueRow, type ApplyResult, type KvRecord, type StateOptions } from '../../protocol/cluster/state.js';
import type { RaftStore, StreamedState } from './raft-store.js';
import type { StateView } from './state-storage.js';
import type { SnapshotSink } from './snapshot-stream.js';
import { REAL_TIMERS, type Timers, type TimerHandle } from '../timers.js';
import { OmniError } from '../errors.js';
import { StorageCorruptError } from './storage-integrity.js';
import type { Logger } from '../logger.js';
import { mark } from '../timeline.js';

/** Bytes of values read back from the stored rows kept for the next reads (RaftNode.valueCache). */
const VALUE_CACHE_BYTES = 4 * 1024 * 1024;
/** Values longer than this are not kept there (a few large values would push out every small one). */
const VALUE_CACHE_MAX_VALUE_CHARS = 64 * 1024;

export interface RaftTiming {
  tickMs: number;
  electionTick: number;
  heartbeatTick: number;
}
export const DEFAULT_TIMING: RaftTiming = { tickMs: 100, electionTick: 10, heartbeatTick: 1 };
/** Compact the log into a snapshot once this many entries were applied since the last one. */
export const DEFAULT_SNAPSHOT_EVERY_ENTRIES = 10_000;
export const DEFAULT_PROPOSAL_TIMEOUT_MS = 10_000;
/**
 * After a snapshot reached a follower, the entries after its index stay (within the log's byte
 * bound) until the follower answers from there or this many ticks passed (60 s at 100 ms).
 */
export const KEEP_AFTER_SNAPSHOT_TICKS = 600;
/** In-memory log bytes that trigger a compaction (the tail is shortened to stay under half of it). */
export const DEFAULT_MAX_LOG_BYTES = 64 * 1024 * 1024;
/** Kv values longer than this live on disk only, not in memory (ClusterState StateOptions). */
export const DEFAULT_SPILL_VALUES_OVER_BYTES = 64;
/** The state's options in production: values over DEFAULT_SPILL_VALUES_OVER_BYTES spill. */
export const DEFAULT_STATE_OPTIONS: StateOptions = {
  spillValuesOverBytes: DEFAULT_SPILL_VALUES_OVER_BYTES,
};
/**
 * Rows applied and not written with a log write (a commit-only Ready's, a follower's) wait for
 * the next log write (or the next tick) while they hold at most this many UTF-16 code units of
 * keys and values and reflect at most this many entries; past either they are written at once.
 */
const ROWS_HELD_MAX_CHARS = 256 * 1024;
const ROWS_HELD_MAX_ENTRIES = 1024;

/** What a held row costs in memory: UTF-16 code units of its key and value (null: deleted). */
const rowChars = (row: string, value: RowValue | null): number => row.length + (value?.length ?? 0);

/** Messages a leader may send before its own write of the same Ready completes. */
const LEADER_EARLY_TYPES: ReadonlySet<MessageType> = new Set([MessageType.App, MessageType.Heartbeat, MessageType.ReadIndexResp]);
/** Proposals and reads waiting at once; beyond this callers get TOO_MANY_PENDING. */
const MAX_WAITERS = 20_000;
/** How often a write that failed for lack of disk space is tried again. */
export const NO_SPACE_RETRY_MS = 1000;

/** Core options a driver may pass through (the simulator injects bugs and observers). */
export type CoreOptions = Pick<RaftConfig, 'maxSizePerMsgBytes' | 'maxInflightMsgs' | 'maxInflightBytes' | 'maxUncommittedBytes' | 'maxCommittedBytesPerReady' | 'preVote' | 'checkQuorum' | 'bugs' | 'trace' | 'observe'>;

/** Sees what the driver does, for the simulator's checkers; never changes behaviour. */
export interface DriverObserver {
  /** A Ready's write completed (before the messages that had to wait for it are sent). */
  persisted?(rd: Ready): void;
  /** A committed entry is about to reach the state machine. */
  applying?(e: Entry): void;
  /** A Ready was handled to the end (applied and advanced). */
  handled?(rd: Ready): void;
}

export interface RaftNodeOptions {
  id: NodeId;
  storage: RaftStore;
  send: (messages: Message[]) => void;
  log: Logger;
  timing?: RaftTiming;
  snapshotEveryEntries?: number;
  /** Applied entries kept in the log after a compaction (default DEFAULT_TAIL_ENTRIES, 5,000 as etcd). */
  snapshotTailEntries?: number;
  /** Bytes of log held in memory that make a compaction due before snapshotEveryEntries (default DEFAULT_MAX_LOG_BYTES). */
  maxLogBytes?: number;
  /**
   * Bytes of log a compaction keeps for followers that still need the entries — one catching up
   * from the log, or one being sent a snapshot, which needs the entries after it (default
   * maxLogBytes; 0: none). Beyond it such a follower gets a (new) snapshot instead.
   */
  keepLogBytesForFollowers?: number;
  /** Called after a Ready that applied entries, installed a snapshot or changed the role or leader (for watchers: leadership, membership). */
  onApplied?: () => void;
  /** Called once if the node can no longer participate safely (storage or apply failure). */
  onFatal?: (err: Error) => void;
  /** Overrides NO_SPACE_RETRY_MS (tests). */
  noSpaceRetryMs?: number;
  /** Timers (default: the process's); the simulator passes virtual ones. */
  timers?: Timers;
  /** Seed of the core's election jitter (default: random). */
  rngSeed?: number;
  /** Makes ReadIndex contexts unique across restarts (default: random). */
  readNonce?: string;
  /** Passed to the Raft core as is. */
  core?: CoreOptions;
  /** How the state keeps kv values (default DEFAULT_STATE_OPTIONS). */
  state?: StateOptions;
  /**
   * Streams a snapshot to a follower (node/raft/snapshot-stream.ts): `m` is the Raft Snap message
   * (meta only), `view` the rows to send. Resolves true once the follower holds them all. Without
   * it, a snapshot travels whole inside the message (the simulator; states up to 64 MiB).
   */
  sendSnapshot?: (m: Message, view: StateView) => Promise<boolean>;
  observer?: DriverObserver;
}

interface HeldView {
  view: StateView;
  /** Transfers using it now. */
  users: number;
  /** Where its rows are in the Raft log (undefined: unknown, the core's snapshot meta is sent). */
  meta: SnapshotMeta | undefined;
}

interface FollowerTransfer {
  /** The view streamed to the follower (undefined while it is opened). */
  held: HeldView | undefined;
  /** The index the follower's state will be at: it needs the entries after it. */
  index: number;
  /** Kept until this tick after the transfer completed (Infinity while it runs). */
  untilTick: number;
}

interface Waiter {
  term: number;
  resolve: (r: ApplyResult) => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
}

/** One caller of readBarrier. */
interface ReadCaller {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: TimerHandle;
}

/** One ReadIndex request to the core, shared by the callers that arrived before it was issued. */
interface ReadWaiter {
  callers: Set<ReadCaller>;
  index?: number;
}

/**
 * A ReadIndex that gets no answer for this many ticks (lost with a leader change) no longer holds
 * back the reads queued behind it: they go out in a new request.
 */
const READ_REISSUE_TICKS = 5;

export class RaftNode {
  readonly id: NodeId;
  readonly raft: Raft;
  state: ClusterState;
  private readonly opts: RaftNodeOptions;
  private readonly timing: RaftTiming;
  private readonly waiters = new Map<number, Waiter>();
  private readonly reads = new Map<string, ReadWaiter>();
  private readSeq = 0;
  /**
   * Reads are batched as etcd's server does: one ReadIndex request (one quorum round) at a time;
   * callers that arrive while it is out wait for the next one, which they all share (they could
   * not join the one in flight: it was asked before they arrived).
   */
  private readQueue: ReadCaller[] = [];
  private readInFlight: { ctx: string; tick: number } | undefined;
  private readCallers = 0;
  /** Makes ReadIndex contexts unique across restarts (the leader drops duplicate contexts). */
  private readonly readNonce: string;
  private readonly timers: Timers;
  private ticker: TimerHandle | undefined;
  /** Ticks so far: the leader's clock for how long a peer has been silent (a late timer only makes it count longer). */
  private ticks = 0;
  /** The tick at which this node was first seen leading in its current term of office (-1: not leading). */
  private leaderSinceTick = -1;
  /** The tick at which a message from each peer last arrived. */
  private readonly heardAtTick = new Map<NodeId, number>();
  private processing = false;
  private again = false;
  private stopped = false;
  private snapshotIndex: number;
  private fatal: Error | undefined;
  /** Term and vote as last written to disk (messages that depend on them wait for the write). */
  private persistedTermVote: { term: number; vote: NodeId };
  /**
   * A hard state that only moved the commit index, not written yet: it goes into the same batch
   * as the state rows its committed entries change (one write instead of two per Ready that
   * commits; see handleReady), or into the next log write if that batch failed.
   */
  private unsavedCommit: HardState | undefined;
  /** The Ready being handled, kept when its write failed for lack of space (retried as is). */
  private unwritten: Ready | undefined;
  /** UTF-16 code units of the rows in unsavedRows (keys and values): what held rows cost in memory. */
  private unsavedRowChars = 0;
  /** The tick since which applied rows wait for a log write to carry them (undefined: none wait). */
  private rowsHeldSinceTick: number | undefined;
  /** Set by the ticker when held rows waited a whole tick: the next drain writes them. */
  private rowsDue = false;
  /** The unwritten Ready whose committed entries were applied before its write (not applied again when it is retried). */
  private appliedUnwritten: Ready | undefined;
  /** Set while the disk is full (ENOSPC): nothing is persisted, proposals get NO_SPACE. */
  private noSpace: Error | undefined;
  private noSpaceTimer: TimerHandle | undefined;
  /** A campaign due because the leader's connection closed (peerDisconnected). */
  private lostLeaderTimer: TimerHandle | undefined;
  /** A compaction whose write failed (full disk): its snapshot and the index the log was compacted to. */
  private unsavedCompaction: { snap: Snapshot; compactedTo: number } | undefined;
  /** State rows changed by applied entries and not written yet (null: deleted). */
  private unsavedRows = new Map<string, RowValue | null>();
  /** The state's applied index as last written to the store. */
  private savedStateIndex: number;
  /**
   * Entries up to this index are already in the state (loaded from the store, or installed
   * from a snapshot taken later than its Raft index): the core hands them out again, and the
   * state machine skips them, as etcd does with its consistent index.
   */
  private skipThrough: number;
  /** Rows being written now (readers look here between unsavedRows and the store). */
  private savingRows: ReadonlyMap<string, RowValue | null> | undefined;
  /** The last whole-state snapshot built for a follower, and the index it is at. */
  private sentSnapshot: { index: number; data: Uint8Array } | undefined;
  /**
   * Values read back from the stored rows, by key, with the index that last changed them: a read of
   * a key whose metadata still names that index is answered from here, not from LevelDB (a
   * linearizable GET of a hot key read the store every time: ~0.4 ms of CPU each). Bounded in bytes;
   * cleared when a snapshot replaces the state.
   */
  private readonly valueCache = new LRUCache<string, { modIndex: number; value: string }>({
    maxSize: VALUE_CACHE_BYTES,
    sizeCalculation: (v, k) => 2 * (v.value.length + k.length) + 64,
  });
  /** Views being streamed to followers (the newest is reused while it is recent enough). */
  private views: HeldView[] = [];
  private viewSeq = 0;
  /**
   * Per follower being sent a snapshot (or sent one a moment ago): the view it gets and its
   * index. Compaction keeps the entries after that index (within keepLogBytesForFollowers), or
   * the follower would need another snapshot as soon as it installed this one; and the core
   * sending the snapshot again (its wait timed out, or a probe found the follower still behind)
   * joins this transfer instead of starting over from a newer view, while the entries after it
   * are still held.
   */
  private readonly transfers = new Map<NodeId, FollowerTransfer>();

  private constructor(opts: RaftNodeOptions, raft: Raft, state: ClusterState, snapshotIndex: number) {
    this.opts = opts;
    this.id = opts.id;
    this.raft = raft;
    this.state = state;
    this.timing = opts.timing ?? DEFAULT_TIMING;
    this.timers = opts.timers ?? REAL_TIMERS;
    this.readNonce = opts.readNonce ?? randomBytes(6).toString('hex');
    this.snapshotIndex = snapshotIndex;
    this.persistedTermVote = { term: raft.term, vote: raft.vote };
    this.savedStateIndex = state.appliedIndex;
    this.skipThrough = state.appliedIndex;
  }

  static async open(opts: RaftNodeOptions): Promise<RaftNode> {
    // The log and the state rows are read at the same time (two LevelDB reads, decoded as they come).
    const t0 = performance.now();
    let logMs = 0;
    const loading = opts.storage.load().then((p) => ((logMs = performance.now() - t0), p));
    loading.catch(() => undefined);
    const state = await loadState(opts.storage, loading.then((p) => p.snapshot), opts.state ?? DEFAULT_STATE_OPTIONS);
    const persisted = await loading;
    if (state.appliedIndex > 0) {
      opts.log.info(`raft: read the state at index ${state.appliedIndex} (${state.kvCount()} kv records) and ${persisted.entries.length} log entries in ${Math.round(performance.now() - t0)} ms (the log alone: ${Math.round(logMs)} ms)`);
    }
    const timing = opts.timing ?? DEFAULT_TIMING;
    let raft: Raft;
    try {
      raft = new Raft(
        { ...opts.core, id: opts.id, electionTick: timing.electionTick, heartbeatTick: timing.heartbeatTick, rng: seededRng(opts.rngSeed ?? randomInt(2 ** 31)) },
        persisted,
      );
    } catch (err) {
      // A stored log that does not hold together (a tail whose term disagrees with the snapshot,
      // a commit past the last entry) is damaged storage, said as such, not a crash.
      if (err instanceof RaftRestoreError) throw new StorageCorruptError(`the stored log does not hold together: ${err.message}`, opts.storage.dir);
      throw err;
    }
    return new RaftNode(opts, raft, state, persisted.snapshot?.meta.index ?? 0);
  }

  start(): void {
    this.ticker = this.timers.setInterval(() => {
      this.ticks++;
      if (this.readQueue.length > 0) this.issueReads(); // behind a ReadIndex that got lost
      if (this.raft.role !== Role.Leader) this.leaderSinceTick = -1;
      else if (this.leaderSinceTick < 0) this.leaderSinceTick = this.ticks;
      if (this.core('tick', () => this.raft.tick()) === undefined && this.fatal) return;
      if (this.rowsHeldSinceTick !== undefined && this.ticks > this.rowsHeldSinceTick) this.rowsDue = true;
      this.schedule();
    }, this.timing.tickMs);
    this.campaignIfLoneVoter();
    this.schedule();
  }

  /**
   * A lone voter (a fresh init, a restart of a one-node cluster) need not wait an election
   * timeout. At a fresh init its configuration comes from the bootstrap entries, known only once
   * they are applied (after the first Ready), so this is checked again after each Ready.
   */
  private campaignIfLoneVoter(): void {
    const r = this.raft;
    if (r.role === Role.Follower && r.lead === NONE && r.voters.size === 1 && r.voters.has(this.id)) this.campaign();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.clearInterval(this.ticker);
    this.timers.clearTimeout(this.noSpaceTimer);
    this.timers.clearTimeout(this.lostLeaderTimer);
    const err = new OmniError('UNAVAILABLE', 'node is shutting down; the outcome of pending writes is unknown');
    for (const w of this.waiters.values()) (this.timers.clearTimeout(w.timer), w.reject(err));
    this.waiters.clear();
    this.rejectReads(err);
    while (this.processing) await new Promise<void>((r) => this.timers.setTimeout(r, 5));
    for (const v of this.views.splice(0)) await v.view.close().catch(() => undefined);
    // A clean stop leaves the rows complete and durable: the next start replays nothing.
    if (!this.fatal && !this.noSpace) await this.saveState(true).catch((err: Error) => this.opts.log.warn(`raft: could not write the state rows at stop: ${err.message}`));
  }

  /**
   * A message from the transport. A broken invariant in the core is fatal for this node (it
   * stops participating); it is never blamed on the stream the message came on.
   */
  step(m: Message): void {
    if (m.type === MessageType.AppResp) mark('recv-appresp');
    else if (m.type === MessageType.App && m.entries.length > 0) mark('recv-app');
    if (this.stopped || this.fatal) return;
    if (this.heardAtTick.size < 4096 || this.heardAtTick.has(m.from)) this.heardAtTick.set(m.from, this.ticks);
    // Raft.step returns nothing: core() answers undefined whether or not it threw, so only a
    // fatal error stops here (testing its result for truth skipped the schedule below, and every
    // message then waited for the next tick: ~one heartbeat per write).
    if (this.core('step', () => this.raft.step(m)) === undefined && this.fatal) return;
    this.schedule();
  }

  /**
   * Runs one input into the core (step, tick, propose, readIndex, transferLeader). Anything it
   * throws means a broken Raft invariant: the node stops participating rather than go on with
   * a state it cannot trust, and the daemon exits for its supervisor. Returns fn's result, or
   * undefined when it threw.
   */
  private core<T>(what: string, fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      const e = err as Error;
      this.goFatal(new OmniError('RAFT_INVARIANT', `raft ${what}: ${e.message}`, { cause: e.name }));
      return undefined;
    }
  }

  /** Stops participating for good (storage failure, broken invariant, refused snapshot, diverged apply). */
  private goFatal(err: Error): void {
    if (this.fatal) return;
    this.fatal = err;
    this.timers.clearInterval(this.ticker);
    this.opts.log.error(`raft: fatal, node stops participating: ${err.message}`);
    const dead = new OmniError('UNAVAILABLE', `raft stopped: ${err.message}`);
    for (const w of this.waiters.values()) (this.timers.clearTimeout(w.timer), w.reject(dead));
    this.waiters.clear();
    this.rejectReads(dead);
    this.opts.onFatal?.(err);
  }

  get leader(): NodeId {
    return this.raft.lead;
  }

  /**
   * On the leader: how long it is sure it has not heard from `id` — since its last message, and
   * at most since this node took the lead (counted in ticks, so a stalled event loop only makes
   * the figure smaller). 0 on a follower and for this node itself. An exclusive task's node
   * that is silent for twice its lease has stopped it (protocol/apps/spec.ts EXCLUSIVE_LEASE_MS).
   */
  silentForMs(id: NodeId): number {
    if (id === this.id || this.raft.role !== Role.Leader || this.leaderSinceTick < 0) return 0;
    const since = Math.max(this.heardAtTick.get(id) ?? -1, this.leaderSinceTick);
    return Math.max(0, this.ticks - since) * this.timing.tickMs;
  }

  get isLeader(): boolean {
    return this.raft.role === Role.Leader;
  }

  /** Proposes a command on this node (it must be the leader) and resolves once applied. */
  propose(data: Uint8Array, timeoutMs = DEFAULT_PROPOSAL_TIMEOUT_MS): Promise<ApplyResult> {
    mark('propose');
    return this.submit(() => this.raft.propose(data), timeoutMs);
  }

  proposeConfChange(cc: ConfChange, timeoutMs = DEFAULT_PROPOSAL_TIMEOUT_MS): Promise<ApplyResult> {
    return this.submit(() => this.raft.proposeConfChange(cc), timeoutMs);
  }

  /** Resolves once this node's state reflects every write committed before the call (§6.4). */
  readBarrier(timeoutMs = DEFAULT_PROPOSAL_TIMEOUT_MS): Promise<void> {
    const unusable = this.unusable();
    if (unusable) return Promise.reject(unusable);
    if (this.readCallers >= MAX_WAITERS) return Promise.reject(new OmniError('TOO_MANY_PENDING', 'too many reads in flight'));
    return new Promise<void>((resolve, reject) => {
      const caller: ReadCaller = { resolve, reject, timer: undefined };
      this.readCallers++;
      caller.timer = this.timers.setTimeout(() => {
        if (!this.forgetRead(caller)) return;
        reject(new OmniError('TIMEOUT', `linearizable read timed out after ${timeoutMs} ms (no quorum?)`));
      }, timeoutMs);
      this.readQueue.push(caller);
      this.issueReads();
    });
  }

  /** Sends the queued reads out as one ReadIndex request, unless one is still out (then they wait for it). */
  private issueReads(): void {
    if (this.readQueue.length === 0 || this.stopped || this.fatal) return;
    if (this.readInFlight && this.reads.has(this.readInFlight.ctx) && this.ticks - this.readInFlight.tick < READ_REISSUE_TICKS) return;
    const callers = new Set(this.readQueue);
    this.readQueue = [];
    const ctx = `${this.readNonce}:${++this.readSeq}`;
    this.reads.set(ctx, { callers });
    this.readInFlight = { ctx, tick: this.ticks };
    const accepted = this.core('readIndex', () => this.raft.readIndex(new TextEncoder().encode(ctx)));
    if (accepted === undefined) return; // fatal: every read was rejected
    if (!accepted) {
      this.reads.delete(ctx);
      this.readInFlight = undefined;
      this.settleReads(callers, new OmniError('NO_LEADER', 'no leader is known; the cluster may have lost quorum'));
      return;
    }
    this.schedule();
  }

  /** A caller gave up (timeout): out of its batch or the queue. False if it was settled already. */
  private forgetRead(caller: ReadCaller): boolean {
    const queued = this.readQueue.indexOf(caller);
    if (queued >= 0) this.readQueue.splice(queued, 1);
    else {
      const entry = [...this.reads].find(([, w]) => w.callers.has(caller));
      if (!entry) return false;
      entry[1].callers.delete(caller);
      if (entry[1].callers.size === 0) {
        this.reads.delete(entry[0]);
        if (this.readInFlight?.ctx === entry[0]) this.readInFlight = undefined;
      }
    }
    this.readCallers--;
    return true;
  }

  /** Settles callers: resolved (no error) or rejected. */
  private settleReads(callers: Iterable<ReadCaller>, err?: Error): void {
    for (const c of callers) {
      this.timers.clearTimeout(c.timer);
      this.readCallers--;
      if (err) c.reject(err);
      else c.resolve();
    }
  }

  /** Rejects every read, issued or queued. */
  private rejectReads(err: Error): void {
    const all = [...this.readQueue, ...[...this.reads.values()].flatMap((w) => [...w.callers])];
    this.readQueue = [];
    this.reads.clear();
    this.readInFlight = undefined;
    this.settleReads(all, err);
  }

  /** Hands leadership to voter `to`; only the leader can (NOT_LEADER with the leader's id otherwise). */
  transferLeader(to: NodeId): void {
    if (!this.isLeader) throw new OmniError('NOT_LEADER', 'only the leader can transfer leadership', { leader: this.raft.lead });
    const unusable = this.unusable();
    if (unusable) throw unusable;
    this.core('transferLeader', () => this.raft.transferLeader(to));
    this.schedule();
  }

  /** The transport could not reach `id` (etcd's ReportUnreachable): the leader stops pipelining to it. */
  reportUnreachable(id: NodeId): void {
    if (this.stopped || this.fatal) return;
    if (this.core('reportUnreachable', () => this.raft.reportUnreachable(id)) === undefined && this.fatal) return;
    this.schedule();
  }

  campaign(): void {
    if (this.core('campaign', () => this.raft.campaign()) === undefined && this.fatal) return;
    this.schedule();
  }

  /**
   * Every connection to `id` closed (a killed process closes its sockets at once). If `id` was
   * this follower's leader, the follower forgets it (it then grants votes without waiting out
   * the leader's lease) and campaigns — pre-vote first — within a fifth of the election timeout,
   * unless a leader shows up meanwhile: a failover in a few hundred milliseconds instead of a
   * whole randomized election timeout (1-2 s by default). The other followers see the same close;
   * they take turns in the order of their ids (protocol/raft/lost-leader.ts: independent random
   * delays split the vote when two campaigns started within a message's flight), and a leader
   * that is in fact alive keeps its followers (they refuse the pre-vote while in its lease) and is
   * followed again on its next heartbeat.
   */
  peerDisconnected(id: NodeId): void {
    if (this.stopped || this.fatal || id === this.id) return;
    if (!this.core('forgetLeader', () => this.raft.forgetLeader(id))) return;
    this.timers.clearTimeout(this.lostLeaderTimer);
    const spreadMs = Math.max(1, Math.floor((this.timing.electionTick * this.timing.tickMs) / 5));
    const delayMs = lostLeaderCampaignDelayMs(this.id, this.raft.voters, id, spreadMs, randomInt(2 ** 30) / 2 ** 30);
    if (delayMs !== undefined) {
      this.lostLeaderTimer = this.timers.setTimeout(() => {
        this.lostLeaderTimer = undefined;
        if (this.stopped || this.fatal || this.raft.lead !== NONE || this.raft.role !== Role.Follower) return;
        this.campaign();
      }, delayMs);
    }
    this.schedule();
  }

  /** A majority of this node's voters say `id` is a voter: take its leader messages (Raft.vouch). */
  vouch(id: NodeId): void {
    if (this.core('vouch', () => this.raft.vouch(id)) === undefined && this.fatal) return;
    this.schedule();
  }

  /**
   * A streamed snapshot was handed to the core and is not installed yet: its staged rows must
   * stay, so the sink refuses to stage another one meanwhile (see guardSink).
   */
  get stagedSnapshotPending(): boolean {
    const p = this.raft.log.pendingSnapshot;
    return p !== undefined && stagedSnapshotOf(p.data) !== undefined;
  }

  /** Whether a Ready is being handled now (written, sent, applied). */
  get busy(): boolean {
    return this.processing;
  }

  /** Whether writes are paused because the disk is full (see NO_SPACE). */
  get outOfSpace(): boolean {
    return this.noSpace !== undefined;
  }

  /** Entries applied since the last snapshot (for status output). */
  get appliedIndex(): number {
    return this.raft.log.applied;
  }

  private submit(propose: () => ProposeResult, timeoutMs: number): Promise<ApplyResult> {
    const unusable = this.unusable();
    if (unusable) return Promise.reject(unusable);
    if (this.waiters.size >= MAX_WAITERS) return Promise.reject(new OmniError('TOO_MANY_PENDING', 'too many proposals in flight'));
    const r = this.core('propose', propose);
    if (r === undefined) return Promise.reject(this.unusable()!);
    if (!r.ok) return Promise.reject(new OmniError(r.code, r.message, { leader: r.leader }));
    this.schedule();
    return new Promise<ApplyResult>((resolve, reject) => {
      const waiter: Waiter = { term: r.term, resolve, reject, timer: undefined! };
      waiter.timer = this.timers.setTimeout(() => {
        if (this.waiters.get(r.index) === waiter) this.waiters.delete(r.index);
        reject(new OmniError('TIMEOUT', `proposal not applied within ${timeoutMs} ms; it may still commit`));
      }, timeoutMs);
      // An older proposal at this index was truncated away by a new leader: it is dropped.
      const old = this.waiters.get(r.index);
      if (old) {
        this.timers.clearTimeout(old.timer);
        old.reject(new OmniError('PROPOSAL_DROPPED', 'leadership changed before the write committed; it was not applied'));
      }
      this.waiters.set(r.index, waiter);
    });
  }

  /** Why this node takes no proposal or read now (undefined: it does). */
  private unusable(): OmniError | undefined {
    if (this.fatal) return new OmniError('UNAVAILABLE', `raft stopped after a storage failure: ${this.fatal.message}`);
    if (this.stopped) return new OmniError('UNAVAILABLE', 'node is shutting down');
    if (this.noSpace) return new OmniError('NO_SPACE', `the disk of node ${this.id.slice(-8)} is full (${this.noSpace.message.slice(0, 200)}); writes resume once space is freed`);
    return undefined;
  }

  private schedule(): void {
    if (this.processing) {
      this.again = true;
      return;
    }
    if (this.stopped || this.fatal || this.noSpace || (!this.raft.hasReady() && !this.rowsDue)) return;
    this.processing = true;
    void this.drain();
  }

  private async drain(): Promise<void> {
    try {
      do {
        this.again = false;
        if (this.unwritten && !this.stopped) await this.handleReady(this.unwritten);
        while (!this.stopped && this.raft.hasReady()) {
          await this.handleReady(this.raft.ready());
          // Between Readys too: under a load that never pauses this loop never ends, and the
          // log (in memory and on disk) would grow until the load stops.
          await this.maybeCompact();
        }
      } while (this.again && !this.stopped);
      // Rows held for a log write that did not come within a tick: written on their own.
      if (this.rowsDue && !this.stopped) {
        this.rowsDue = false;
        if (this.rowsHeldSinceTick !== undefined) await this.saveState(false);
      }
      await this.maybeCompact();
    } catch (err) {
      if (isNoSpace(err) && !this.stopped) {
        this.pauseForSpace(err as Error);
        return;
      }
      // A failed fsync (or a snapshot we cannot install) leaves us unsure of our own state:
      // stop participating rather than lie, and let the daemon exit for its supervisor.
      this.goFatal(err as Error);
    } finally {
      this.processing = false;
    }
    if (this.again) this.schedule();
  }

  private async handleReady(rd: Ready): Promise<void> {
    const marked = rd.entries.length > 0 || rd.committedEntries.length > 0;
    if (marked) mark(rd.entries.length > 0 ? 'ready-entries' : 'ready-commit');
    // A leader may send its appends while it writes them to its own disk (Raft thesis §10.2.1):
    // it counts its own copy only after advance(), i.e. after the write. Anything else, and any
    // Ready that changes term or vote, is sent strictly after the write.
    // A snapshot the state machine cannot restore is refused before anything of it is written:
    // persisted, it would stop this node again at every start (a crash loop).
    let restored: ClusterState | undefined;
    // The rows first (synced): once the log is replaced by the snapshot, the entries the old
    // rows would need are gone.
    if (rd.snapshot) restored = await this.installSnapshotRows(rd.snapshot);
    // Kept until written: a write that fails for lack of space (here or in withState's save of
    // the rows) is retried with the same Ready.
    this.unwritten = rd;
    const early = this.canSendBeforePersist(rd);
    let messages = rd.messages;
    let streamed: Message[] = [];
    if (messages.some((m) => m.type === MessageType.Snap)) {
      if (this.opts.sendSnapshot) {
        streamed = messages.filter((m) => m.type === MessageType.Snap);
        messages = messages.filter((m) => m.type !== MessageType.Snap);
      } else {
        messages = await this.withState(messages);
      }
    }
    if (early && messages.length > 0) this.opts.send(messages);
    // A Ready that only commits (no entries, no snapshot, the same term and vote, nothing that
    // must be synced) is no log write of its own: its hard state is held with the rows its
    // entries change (below) for the next write: the entries are already in this node's log
    // (earlier Readys), and a commit index is never needed durable (Raft recovers it; etcd does
    // not sync it either). Both land in one batch, so a stored commit index is never behind the
    // stored applied index.
    const commitOnly = !rd.snapshot && rd.entries.length === 0 && !rd.mustSync && rd.committedEntries.length > 0 && rd.hardState !== undefined && rd.hardState.term === this.persistedTermVote.term && rd.hardState.vote === this.persistedTermVote.vote;
    // A leader's Ready that writes its log and also applies entries (under load most do: new
    // entries, and the commit of earlier ones) applies them first and writes the rows they change
    // in its log's batch — one write instead of two. Its committed entries are already durable here
    // (the core hands out only persisted ones), so nothing they depend on waits for this write; the
    // stored applied index stays at or below the stored commit index (the same batch carries the
    // hard state, or the stored one already covers them). Only when its messages went out before
    // the write (a leader's appends): a follower's acknowledgement waits for its write, and
    // applying first would delay it — a follower applies after, and its rows wait for its next
    // log write (below).
    // A Ready with nothing of its own to write (messages, reads) writes nothing: held rows and a
    // held commit index never make it a write, which would hold back its messages.
    const writesLog = rd.entries.length > 0 || rd.hardState !== undefined || rd.snapshot !== undefined;
    const rowsWithLog = early && writesLog && !commitOnly && !rd.snapshot && rd.committedEntries.length > 0;
    if (rowsWithLog && this.appliedUnwritten !== rd) {
      await this.applyCommitted(rd);
      // A write that fails for lack of space is retried with this Ready: not applied twice.
      this.appliedUnwritten = rd;
    }
    if (commitOnly || !writesLog) {
      if (commitOnly) this.unsavedCommit = rd.hardState;
      this.unwritten = undefined;
    } else {
      // The stored snapshot only marks where the log starts: the state itself is in the rows.
      const snapshot = rd.snapshot && { meta: rd.snapshot.meta, data: STATE_IN_ROWS };
      const hardState = rd.hardState ?? this.unsavedCommit;
      // Rows applied before (a commit-only Ready's, kept back) ride along too.
      const state = !rd.snapshot && this.hasUnsavedRows() ? this.takeRowsToSave() : undefined;
      try {
        if (marked) mark('save-start');
        await this.opts.storage.save({ hardState, entries: rd.entries, snapshot, ...(state ? { state } : {}) }, rd.mustSync);
        if (marked) mark('save-end');
      } catch (err) {
        if (state) this.keepUnsavedRows(state.rows);
        throw err;
      } finally {
        if (state) this.savingRows = undefined;
      }
      if (state) this.savedStateIndex = state.appliedIndex;
      this.unwritten = undefined;
      this.appliedUnwritten = undefined;
      // written, or superseded by this Ready's newer hard state
      this.unsavedCommit = undefined;
    }
    if (rd.hardState) this.persistedTermVote = { term: rd.hardState.term, vote: rd.hardState.vote };
    this.opts.observer?.persisted?.(rd);
    if (!early && messages.length > 0) this.opts.send(messages);
    for (const m of streamed) void this.streamSnapshot(m);
    if (rd.snapshot && restored) {
      this.state = restored;
      this.valueCache.clear();
      this.skipThrough = restored.appliedIndex;
      this.snapshotIndex = rd.snapshot.meta.index;
      this.opts.log.info(`raft: installed snapshot at index ${rd.snapshot.meta.index}`);
    }
    if (!rowsWithLog) await this.applyCommitted(rd);
    if (marked) mark('applied');
    this.raft.advance(rd);
    this.campaignIfLoneVoter();
    for (const rs of rd.readStates) {
      const ctx = new TextDecoder().decode(rs.context);
      const w = this.reads.get(ctx);
      if (w) w.index = rs.index;
      if (this.readInFlight?.ctx === ctx) this.readInFlight = undefined;
    }
    this.releaseReads();
    this.issueReads();
    // The rows this Ready changed, unsynced: the next synced log write makes them durable, and
    // a crash before that only sends the node back to entries its log still holds. They (with a
    // commit-only Ready's commit index) wait for the next log write, which carries them in its
    // batch — at one write at a time every write has one (the next proposal's entries) — or are
    // written on their own at the next tick, or at once past ROWS_HELD_MAX_CHARS / _ENTRIES.
    if (rd.committedEntries.length > 0 && !rowsWithLog) {
      if (this.canHoldRows()) this.rowsHeldSinceTick ??= this.ticks;
      else await this.saveState(false);
    }
    this.opts.observer?.handled?.(rd);
    // Watchers care about applied state and leadership; a Ready of heartbeats changes neither.
    if (rd.committedEntries.length > 0 || rd.snapshot || rd.softState) this.opts.onApplied?.();
  }

  /** Applies a Ready's committed entries to the state machine, in order. */
  private async applyCommitted(rd: Ready): Promise<void> {
    for (const e of rd.committedEntries) {
      this.opts.observer?.applying?.(e);
      const keys = this.applyEntry(e.index, e.term, e.type, e.data);
      // A transaction compares values kept on disk only: read them (nothing applies meanwhile).
      if (keys) this.applyEntry(e.index, e.term, e.type, e.data, await this.currentValues(keys));
    }
  }

  /** Where to compact the log now (keeping a tail, etcd style), or undefined when not due. */
  private compactionPoint(): number | undefined {
    const maxLogBytes = this.opts.maxLogBytes ?? DEFAULT_MAX_LOG_BYTES;
    return this.raft.compactionPoint({
      everyEntries: this.opts.snapshotEveryEntries ?? DEFAULT_SNAPSHOT_EVERY_ENTRIES,
      tailEntries: this.opts.snapshotTailEntries ?? DEFAULT_TAIL_ENTRIES,
      maxLogBytes,
      keepBytes: this.opts.keepLogBytesForFollowers ?? maxLogBytes,
      keepAfter: this.snapshotFloor(),
    });
  }

  /** The lowest index a follower's snapshot is at while it still needs the entries after it. */
  private snapshotFloor(): number | undefined {
    let floor: number | undefined;
    for (const [id, t] of this.transfers) {
      const pr = this.raft.prs.get(id);
      if (!this.isLeader || !pr || this.ticks > t.untilTick || pr.match >= t.index) {
        // Once the follower answered from the snapshot, the core keeps what it needs (its match).
        this.endTransfer(id, t);
        continue;
      }
      floor = floor === undefined ? t.index : Math.min(floor, t.index);
    }
    return floor;
  }

  private endTransfer(id: NodeId, t: FollowerTransfer): void {
    if (this.transfers.get(id) !== t) return;
    this.transfers.delete(id);
    if (t.held) t.held.users--;
    void this.closeUnusedViews();
  }

  /**
   * Makes the snapshot's state this node's rows (streamed and staged, or whole in the message)
   * and returns it as a state; SNAPSHOT_REFUSED when it cannot be (nothing of it is used).
   */
  private async installSnapshotRows(snap: Snapshot): Promise<ClusterState> {
    const refused = (why: string) => new OmniError('SNAPSHOT_REFUSED', `the snapshot at index ${snap.meta.index} from the leader cannot be restored (${why})`);
    const staged = stagedSnapshotOf(snap.data);
    let restored: ClusterState;
    if (staged) {
      // Storage errors pass as they are (an fsync error is not the leader's fault).
      try {
        await this.opts.storage.installStagedState(staged.from, staged.id);
      } catch (err) {
        if ((err as { code?: unknown }).code !== undefined) throw err;
        throw refused((err as Error).message);
      }
      const stored = await this.opts.storage.streamState();
      if (!stored) throw refused('no rows after installing it');
      try {
        restored = await readRows(stored, this.stateOptions);
      } catch (err) {
        if (!(err instanceof StateRestoreError)) throw err;
        throw refused(err.message);
      }
      if (restored.appliedIndex < snap.meta.index) throw refused(`its state is at index ${restored.appliedIndex}, before the snapshot's index`);
    } else {
      let rows: [string, RowValue][];
      try {
        const whole = ClusterState.restore(snap.data);
        rows = [...whole.rows(this.stateOptions.spillValuesOverBytes)];
        restored = ClusterState.fromRows(whole.appliedIndex, rows, this.stateOptions);
      } catch (err) {
        throw refused((err as Error).message);
      }
      // Refused before anything of it is written: persisted, it would stop this node at every start.
      if (restored.appliedIndex < snap.meta.index) throw refused(`its state is at index ${restored.appliedIndex}, before the snapshot's index`);
      await this.opts.storage.replaceState(rows, restored.appliedIndex);
    }
    this.unsavedRows.clear();
    this.unsavedRowChars = 0;
    this.rowsHeldSinceTick = undefined;
    this.savedStateIndex = restored.appliedIndex;
    this.sentSnapshot = undefined;
    return restored;
  }

  /** Streams the state to m.to and reports the outcome to the core (etcd's ReportSnapshot). */
  private async streamSnapshot(m: Message): Promise<void> {
    let ok = false;
    let held: HeldView | undefined;
    let t = this.transfers.get(m.to);
    try {
      if (t?.held?.meta && t.held.meta.index >= this.raft.log.firstIndex() - 1) {
        // The view this follower is getting (or just got) still serves: the entries after it
        // are held. Joined, the transfer goes on where it is (or is answered done at once).
        t.untilTick = Infinity;
        held = t.held;
        held.users++;
      } else {
        if (t) this.endTransfer(m.to, t);
        const mine: FollowerTransfer = { held: undefined, index: m.snapshot?.meta.index ?? 0, untilTick: Infinity };
        this.transfers.set(m.to, (t = mine));
        held = await this.viewAtLeast(mine.index);
        if (this.transfers.get(m.to) === mine) {
          mine.held = held;
          held.users++; // for the transfer record, until endTransfer
          if (held.meta) mine.index = held.meta.index;
        }
      }
      // As etcd's merged snapshot: the message says where the view's rows are (its applied
      // index, that index's term and configuration), so the follower needs the entries after
      // the view, not after the older compaction the core's snapshot marks.
      const meta = held.meta && m.snapshot && held.meta.index >= m.snapshot.meta.index ? held.meta : undefined;
      const reused = t.held === held && held.meta !== undefined;
      const msg = m.snapshot && (meta || reused) ? { ...m, snapshot: { ...m.snapshot, meta: held.meta! } } : m;
      ok = await this.opts.sendSnapshot!(msg, held.view);
    } catch (err) {
      this.opts.log.warn(`raft: snapshot to ${m.to.slice(-8)} failed: ${(err as Error).message}`);
    } finally {
      if (held) held.users--;
      void this.closeUnusedViews();
    }
    if (t && this.transfers.get(m.to) === t) {
      if (ok) t.untilTick = this.ticks + KEEP_AFTER_SNAPSHOT_TICKS;
      else this.endTransfer(m.to, t);
    }
    if (this.stopped || this.fatal) return;
    this.core('reportSnapshot', () => this.raft.reportSnapshot(m.to, ok));
    this.schedule();
  }

  /**
   * The newest view if it is at `index` or later, else a new one (rows saved up to now), with one
   * user counted for the caller (who releases it). The
   * view's Raft position (index, term, configuration) is taken with it, when it is the applied
   * index the core is at (the configuration is the one of the applied entries).
   */
  private async viewAtLeast(index: number): Promise<HeldView> {
    const newest = this.views[this.views.length - 1];
    if (newest && newest.view.appliedIndex >= index) {
      newest.users++;
      return newest;
    }
    const applied = this.raft.log.applied;
    const at = { index: applied, term: this.raft.log.term(applied), conf: this.raft.confState() };
    const view = await this.opts.storage.openStateView(`${this.id.slice(-8)}.${this.readNonce}.${++this.viewSeq}`);
    const meta = view.appliedIndex === at.index && at.term !== undefined ? { index: at.index, term: at.term, conf: at.conf } : undefined;
    // Counted before anything else can run: closeUnusedViews closes views nobody uses.
    const held: HeldView = { view, users: 1, meta };
    this.views.push(held);
    return held;
  }

  /**
   * Closes the views no transfer uses any more (a follower's transfer record holds its view
   * while a resend may still join it): an open LevelDB snapshot keeps every row it saw on disk.
   */
  private async closeUnusedViews(): Promise<void> {
    const keep = this.views.filter((v) => v.users > 0);
    const drop = this.views.filter((v) => !keep.includes(v));
    this.views = keep;
    for (const v of drop) await v.view.close().catch(() => undefined);
  }

  /**
   * A snapshot message carries the state as it is now: applied at or past the snapshot's
   * index (the core's snapshot only marks where its log starts); the follower skips the
   * entries its state already holds.
   */
  private async withState(messages: Message[]): Promise<Message[]> {
    const out: Message[] = [];
    for (const m of messages) {
      if (m.type !== MessageType.Snap || !m.snapshot) {
        out.push(m);
        continue;
      }
      const data = await this.wholeState(m.snapshot.meta.index);
      out.push({ ...m, snapshot: { meta: m.snapshot.meta, data } });
    }
    return out;
  }

  /**
   * The whole state's snapshot bytes, at `atLeast` or later: its rows, spilled values included,
   * as stored once everything applied is written. Kept for the next follower that needs one.
   */
  private async wholeState(atLeast: number): Promise<Uint8Array> {
    if (this.sentSnapshot && this.sentSnapshot.index >= atLeast) return this.sentSnapshot.data;
    await this.saveState(false);
    const stored = await this.opts.storage.loadState(true);
    if (!stored) throw new OmniError('INTERNAL', 'no state rows are stored to send as a snapshot');
    const data = ClusterState.fromRows(stored.appliedIndex, stored.rows).snapshot();
    this.sentSnapshot = { index: stored.appliedIndex, data };
    return data;
  }

  private get stateOptions(): StateOptions {
    return this.opts.state ?? DEFAULT_STATE_OPTIONS;
  }

  /**
   * The kv record at key with its value, from memory or (a spilled value) from the stored rows.
   * As linearizable as the state it is read from: call after readBarrier() for a linearizable read.
   */
  async kvGet(key: string): Promise<KvRecord | undefined> {
    return (await this.kvGetMany([key]))[0];
  }

  /** Up to limit records whose key starts with prefix, by key, values included. */
  async kvList(prefix: string, limit: number): Promise<KvRecord[]> {
    const keys = this.state.kvListMeta(prefix, limit).map((m) => m.key);
    return (await this.kvGetMany(keys)).filter((r): r is KvRecord => r !== undefined);
  }

  private async kvGetMany(keys: readonly string[]): Promise<(KvRecord | undefined)[]> {
    const out: (KvRecord | undefined)[] = new Array(keys.length);
    let todo = keys.map((_, i) => i);
    // A value read from the store may be newer than the metadata read before it (an apply in
    // between): read again until metadata and value agree (bounded; an apply is rare between).
    for (let attempt = 0; todo.length > 0; attempt++) {
      const state = this.state;
      const wanted: { i: number; modIndex: number }[] = [];
      for (const i of todo) {
        const meta = state.kvMeta(keys[i]);
        if (!meta) {
          out[i] = undefined;
          continue;
        }
        const inMemory = state.kvInMemory(keys[i]);
        const pending = inMemory ? undefined : (state.changedKvValue(keys[i]) ?? this.pendingValue(keys[i]));
        const cached = inMemory || pending ? undefined : this.valueCache.get(keys[i]);
        if (inMemory) out[i] = inMemory;
        else if (pending && pending.value !== null) out[i] = { key: meta.key, value: pending.value, version: meta.version, createIndex: meta.createIndex, modIndex: meta.modIndex };
        else if (cached && cached.modIndex === meta.modIndex) out[i] = { key: meta.key, value: cached.value, version: meta.version, createIndex: meta.createIndex, modIndex: meta.modIndex };
        else wanted.push({ i, modIndex: meta.modIndex });
      }
      if (wanted.length === 0) break;
      const values = await this.opts.storage.readStateRows(wanted.map((w) => valueRow(keys[w.i])));
      todo = [];
      wanted.forEach((w, j) => {
        const meta = this.state.kvMeta(keys[w.i]);
        const value = values[j];
        if (meta && meta.modIndex === w.modIndex && this.state === state && value !== undefined) {
          out[w.i] = { key: meta.key, value, version: meta.version, createIndex: meta.createIndex, modIndex: meta.modIndex };
          if (value.length <= VALUE_CACHE_MAX_VALUE_CHARS) this.valueCache.set(meta.key, { modIndex: meta.modIndex, value });
        } else if (attempt < 20) {
          todo.push(w.i);
        } else {
          throw new OmniError('UNAVAILABLE', `kv key ${keys[w.i].slice(0, 200)} keeps changing while it is read; try again`);
        }
      });
    }
    return out;
  }

  /** A spilled value taken from the state but not yet in the store (or being written). */
  private pendingValue(key: string): { value: string | null } | undefined {
    for (const rows of [this.unsavedRows, this.savingRows]) {
      if (!rows) continue;
      const v = rows.get(valueRow(key));
      // A deleted record's value row is deleted with it (null).
      if (v !== undefined) return { value: v as string | null };
    }
    return undefined;
  }

  /** Writes the rows applied entries changed (with the applied index) to the store. */
  private async saveState(sync: boolean): Promise<void> {
    // The rows of a Ready applied before its log write (which failed for lack of space) go with
    // that write when it is retried: written now, without its hard state, the stored applied
    // index could pass the stored commit index.
    if (this.appliedUnwritten) return;
    this.collectChangedRows();
    const applied = this.state.appliedIndex;
    const commit = this.unsavedCommit;
    if (this.unsavedRows.size === 0 && applied === this.savedStateIndex && !sync && !commit) return;
    const { rows } = this.takeRowsToSave();
    try {
      await this.opts.storage.saveState(rows, applied, sync, commit);
      if (this.unsavedCommit === commit) this.unsavedCommit = undefined;
    } catch (err) {
      this.keepUnsavedRows(rows);
      throw err;
    } finally {
      this.savingRows = undefined;
    }
    this.savedStateIndex = applied;
  }

  private collectChangedRows(): void {
    if (!this.state.hasChangedRows) return;
    for (const [row, value] of this.state.takeChangedRows()) {
      // a row changed again replaces its earlier unsaved value (counted once)
      if (this.unsavedRows.has(row)) this.unsavedRowChars -= rowChars(row, this.unsavedRows.get(row)!);
      this.unsavedRows.set(row, value);
      this.unsavedRowChars += rowChars(row, value);
    }
  }

  /** Whether applied entries changed rows (or the applied index) that are not written yet. */
  private hasUnsavedRows(): boolean {
    return this.unsavedRows.size > 0 || this.state.hasChangedRows || this.state.appliedIndex !== this.savedStateIndex;
  }

  /** Whether the rows not written yet may wait for the next log write (they are few and small). */
  private canHoldRows(): boolean {
    this.collectChangedRows();
    return this.unsavedRowChars <= ROWS_HELD_MAX_CHARS && this.state.appliedIndex - this.savedStateIndex <= ROWS_HELD_MAX_ENTRIES;
  }

  /** The rows not written yet and the applied index they reflect, now being written (savingRows until the caller clears it). */
  private takeRowsToSave(): { rows: Map<string, RowValue | null>; appliedIndex: number } {
    this.collectChangedRows();
    const rows = this.unsavedRows;
    this.unsavedRows = new Map();
    this.unsavedRowChars = 0;
    this.rowsHeldSinceTick = undefined;
    this.savingRows = rows;
    return { rows, appliedIndex: this.state.appliedIndex };
  }

  /** Rows whose write failed, kept for the next try; rows changed meanwhile are newer and win. */
  private keepUnsavedRows(rows: Map<string, RowValue | null>): void {
    for (const [row, value] of this.unsavedRows) rows.set(row, value);
    this.unsavedRows = rows;
    this.unsavedRowChars = 0;
    for (const [row, value] of rows) this.unsavedRowChars += rowChars(row, value);
    // still due at the next tick (the write that failed had taken them from their wait)
    this.rowsHeldSinceTick ??= this.ticks;
  }

  private canSendBeforePersist(rd: Ready): boolean {
    if (this.raft.role !== Role.Leader || rd.snapshot) return false;
    if (rd.hardState && (rd.hardState.term !== this.persistedTermVote.term || rd.hardState.vote !== this.persistedTermVote.vote)) return false;
    return rd.messages.every((m) => LEADER_EARLY_TYPES.has(m.type));
  }

  /**
   * Applies one committed entry; returns the keys whose current values it needs when it
   * compares values kept on disk only (call again with them), else undefined.
   */
  private applyEntry(index: number, term: number, type: EntryType, data: Uint8Array, values?: ReadonlyMap<string, string>): string[] | undefined {
    if (index <= this.skipThrough && index <= this.state.appliedIndex) return undefined;
    // Entries reach the state machine once each, in order: anything else means this node's
    // state and its log disagree, and going on would serve (and snapshot) a wrong state.
    if (index !== this.state.appliedIndex + 1) {
      throw new OmniError('APPLY_DIVERGED', `entry ${index} handed to a state machine at applied index ${this.state.appliedIndex} (expected ${this.state.appliedIndex + 1})`);
    }
    let result: ApplyResult = { ok: true };
    if (type === EntryType.ConfChange) {
      const cc = decodeConfChange(data);
      const kind = cc.type === ConfChangeType.AddVoter ? 'addVoter' : cc.type === ConfChangeType.AddLearner ? 'addLearner' : 'remove';
      result = this.state.applyConfChange(index, { type: kind, node: cc.node });
    } else {
      result = this.state.apply(index, data, values);
      if (needsValues(result) && !values) return result.needsValues;
    }
    if (this.state.appliedIndex !== index) {
      throw new OmniError('APPLY_DIVERGED', `applying index ${index} left the state machine at applied index ${this.state.appliedIndex}${result.ok ? '' : ` (${result.error.message})`}`);
    }
    if (type === EntryType.ConfChange) result = { ok: true };
    const w = this.waiters.get(index);
    if (!w) return undefined;
    this.waiters.delete(index);
    this.timers.clearTimeout(w.timer);
    if (w.term === term) {
      mark('resolve');
      w.resolve(result);
    } else w.reject(new OmniError('PROPOSAL_DROPPED', 'leadership changed before the write committed; it was not applied'));
    return undefined;
  }

  /**
   * The current values of kv keys whose values are on disk only, as the state machine is now:
   * changed by entries applied but not written yet, being written, or stored. A key the state
   * holds without any of them means the store lost a row (STORAGE_CORRUPT).
   */
  private async currentValues(keys: readonly string[]): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    const fromDisk: string[] = [];
    for (const key of keys) {
      const v = this.state.changedKvValue(key) ?? this.pendingValue(key);
      if (v?.value != null) out.set(key, v.value);
      else if (this.state.kvMeta(key)) fromDisk.push(key);
    }
    const stored = fromDisk.length === 0 ? [] : await this.opts.storage.readStateRows(fromDisk.map(valueRow));
    fromDisk.forEach((key, i) => {
      const v = stored[i];
      if (v === undefined) throw new StorageCorruptError(`the value of kv key ${key.slice(0, 200)} is missing from the state rows`, this.opts.storage.dir, { key: valueRow(key).slice(0, 200) });
      out.set(key, v);
    });
    return out;
  }

  private releaseReads(): void {
    const applied = this.raft.log.applied;
    for (const [ctx, w] of this.reads) {
      if (w.index === undefined || w.index > applied) continue;
      this.reads.delete(ctx);
      this.settleReads(w.callers);
    }
  }

  /** The disk is full: keep the unwritten Ready, refuse new work, and try again later. */
  private pauseForSpace(err: Error): void {
    this.processing = false;
    if (!this.noSpace) this.opts.log.error(`raft: NO_SPACE: cannot write to ${this.opts.storage.dir} (${err.message.slice(0, 200)}); writes are refused (507) and retried every ${this.retryMs / 1000} s until space is freed`);
    this.noSpace = err;
    this.rejectReads(new OmniError('NO_SPACE', `the disk of this node is full; the read cannot be served here`));
    this.noSpaceTimer = this.timers.setTimeout(() => void this.retryAfterNoSpace(), this.retryMs);
  }

  private get retryMs(): number {
    return this.opts.noSpaceRetryMs ?? NO_SPACE_RETRY_MS;
  }

  private async retryAfterNoSpace(): Promise<void> {
    if (this.stopped || this.fatal || !this.noSpace) return;
    try {
      // LevelDB refuses every write after a failed one until it is opened again.
      await this.opts.storage.reopen();
    } catch (err) {
      if (!isNoSpace(err)) {
        this.fatal = err as Error;
        this.timers.clearInterval(this.ticker);
        this.opts.log.error(`raft: fatal, cannot reopen storage after a full disk: ${(err as Error).message}`);
        this.opts.onFatal?.(err as Error);
        return;
      }
      this.noSpaceTimer = this.timers.setTimeout(() => void this.retryAfterNoSpace(), this.retryMs);
      return;
    }
    const was = this.noSpace;
    this.noSpace = undefined;
    this.processing = true;
    await this.drain();
    if (!this.noSpace) this.opts.log.info(`raft: the disk has space again (after ${was.message.slice(0, 80)}); writes resumed`);
  }

  private async maybeCompact(): Promise<void> {
    // A compaction whose write failed (full disk) is written as it is, unless a snapshot from
    // the leader has replaced it since.
    if (this.unsavedCompaction && this.unsavedCompaction.snap.meta.index <= this.snapshotIndex) this.unsavedCompaction = undefined;
    if (!this.unsavedCompaction) {
      if (this.stopped || this.compactionPoint() === undefined) return;
      // The rows must be durable up to the compaction point before the log before it goes.
      await this.saveState(true);
      // A snapshot may have reached the core meanwhile: compact only what still holds.
      const point = this.compactionPoint();
      const now = this.raft.log.applied;
      if (this.stopped || point === undefined || now <= this.snapshotIndex || now > this.savedStateIndex) return;
      const snap = this.raft.compact(point, STATE_IN_ROWS);
      // The tail the core keeps in memory (entries after the point) stays on disk too.
      this.unsavedCompaction = { snap, compactedTo: this.raft.log.firstIndex() - 1 };
    }
    const { snap, compactedTo } = this.unsavedCompaction;
    await this.opts.storage.saveSnapshot(snap, compactedTo);
    this.unsavedCompaction = undefined;
    this.snapshotIndex = snap.meta.index;
    this.opts.log.info(`raft: compacted the log up to index ${compactedTo}, snapshot at ${snap.meta.index} (the state is in its rows, applied up to ${this.savedStateIndex}; the entries after ${compactedTo} are kept)`);
  }
}

/** The data of a Snap message whose state was streamed and staged: who sent it, which view. */
export function stagedSnapshotData(from: string, id: string): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ format: 'omni.state-staged', from, id }));
}

function stagedSnapshotOf(data: Uint8Array): { from: string; id: string } | undefined {
  if (data.length > 2048 || data[0] !== 0x7b) return undefined;
  try {
    const o = JSON.parse(new TextDecoder().decode(data)) as { format?: unknown; from?: unknown; id?: unknown };
    return o.format === 'omni.state-staged' && typeof o.from === 'string' && typeof o.id === 'string' ? { from: o.from, id: o.id } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The staging sink, refusing to start another transfer while a staged snapshot waits for the
 * driver to install it (starting one would drop the rows the core is about to install).
 */
export function guardSink(sink: SnapshotSink, pending: () => boolean, nowMs: () => number): SnapshotSink {
  // Between a transfer's completion and its message reaching the core, nothing shows it pending
  // yet: a transfer completed moments ago is protected too.
  let completedAtMs = -Infinity;
  let completing = 0;
  return {
    ...sink,
    resumeAfter: async (from, id) => {
      if (pending() || completing > 0 || nowMs() - completedAtMs < SNAPSHOT_HANDOFF_MS) throw new OmniError('BUSY', 'a snapshot is being installed; try again shortly');
      return sink.resumeAfter(from, id);
    },
    complete: async (from, id, rowCount) => {
      completing++;
      try {
        await sink.complete(from, id, rowCount);
        completedAtMs = nowMs();
      } finally {
        completing--;
      }
    },
  };
}

/** How long a completed transfer's rows stay protected until its message reaches the core. */
const SNAPSHOT_HANDOFF_MS = 2000;

/** What a stored snapshot holds since the state lives in rows: a marker, not the state. */
const STATE_IN_ROWS = new TextEncoder().encode('{"format":"omni.state-in-rows","version":1}');

function isStateMarker(data: Uint8Array): boolean {
  return data.length === STATE_IN_ROWS.length && data.every((b, i) => b === STATE_IN_ROWS[i]);
}

/**
 * The state at start: its rows, or (a data dir from before rows) the state in the stored
 * snapshot with its log replayed. Rows behind the log's start mean lost entries.
 */
async function loadState(storage: RaftStore, snapshotLoading: Promise<Snapshot | undefined>, options: StateOptions): Promise<ClusterState> {
  const stored = await storage.streamState();
  if (stored) {
    let state: ClusterState;
    try {
      state = await readRows(stored, options);
    } catch (err) {
      if (!(err instanceof StateRestoreError)) throw err;
      throw new StorageCorruptError(`the stored state rows cannot be read: ${err.message}`, storage.dir);
    }
    const logStart = (await snapshotLoading)?.meta.index ?? 0;
    if (stored.appliedIndex < logStart) {
      throw new StorageCorruptError(`the state rows are applied up to index ${stored.appliedIndex}, but the log starts after ${logStart}: entries in between are lost`, storage.dir);
    }
    // Rows of an older format (one per kv key) are replaced by pages, in one atomic batch.
    if (state.hasChangedRows) await storage.saveState(state.takeChangedRows(), state.appliedIndex, true);
    return state;
  }
  const snapshot = await snapshotLoading;
  if (!snapshot) return new ClusterState(options);
  if (isStateMarker(snapshot.data)) throw new StorageCorruptError('the state rows are missing (the stored snapshot says the state is in them)', storage.dir);
  // A data dir from before rows: its snapshot holds the whole state; written to rows once.
  const whole = ClusterState.restore(snapshot.data);
  const rows = [...whole.rows(options.spillValuesOverBytes)];
  await storage.replaceState(rows, whole.appliedIndex);
  return ClusterState.fromRows(whole.appliedIndex, rows, options);
}

/** The state the streamed rows describe, read batch by batch (StateRestoreError when they do not hold). */
async function readRows(stored: StreamedState, options: StateOptions): Promise<ClusterState> {
  const reader = ClusterState.rowsReader(stored.appliedIndex, options);
  for await (const batch of stored.batches) reader.add(batch);
  return reader.finish();
}

/** ENOSPC from the file system, or LevelDB's report of it ("IO error: …: No space left on device"). */
export function isNoSpace(err: unknown): boolean {
  for (let e = err as { code?: unknown; message?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (e.code === 'ENOSPC') return true;
    if (typeof e.message === 'string' && /ENOSPC|no space left on device/i.test(e.message)) return true;
  }
  return false;
}
