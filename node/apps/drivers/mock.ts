// Mock driver: in-memory tasks, deterministic (time comes from an injected clock), with hooks for
// tests and the simulator: crash a task, make starts of an image fail, write log lines, set stats,
// simulate an agent restart (restarted() shares the "engine" with a fresh driver instance).
import { OmniError } from '../../errors.js';
import { stampLine, type LogOptions, type TaskConfig, type TaskDriver, type TaskStatus } from './types.js';

/** Per-task log lines kept (oldest dropped first). */
export const MOCK_LOG_MAX_LINES = 10_000;

export interface MockDriverOptions {
  /** Epoch ms; default Date.now. Pass the simulator's virtual clock for determinism. */
  now?: () => number;
  /** Exit code a task reports after a graceful stop (default 0). */
  stopExitCode?: number;
}

interface MockTask {
  cfg: TaskConfig;
  status: TaskStatus;
  /** Lines with a running sequence number (survives the cap dropping old lines). */
  logs: Array<{ seq: number; atMs: number; line: string }>;
  nextSeq: number;
  stats?: { cpuPercent: number; memoryBytes: number };
}

/** What survives an agent restart: the "engine" state. */
export interface MockEngine {
  tasks: Map<string, MockTask>;
  failStarts: Map<string, string>;
  unavailable: string | undefined;
  /** Every call, in order ("start t1", "stop t1", …), for assertions. */
  calls: string[];
  waiters: Set<() => void>;
}

export class MockDriver implements TaskDriver {
  readonly name = 'mock' as const;
  private readonly now: () => number;
  private readonly stopExitCode: number;
  private readonly engine: MockEngine;

  constructor(opts: MockDriverOptions = {}, engine?: MockEngine) {
    this.now = opts.now ?? Date.now;
    this.stopExitCode = opts.stopExitCode ?? 0;
    this.engine = engine ?? { tasks: new Map(), failStarts: new Map(), unavailable: undefined, calls: [], waiters: new Set() };
  }

  // ---- test hooks ----

  /** A new driver instance over the same tasks: what the agent sees after it restarts. */
  restarted(opts: MockDriverOptions = {}): MockDriver {
    return new MockDriver({ now: this.now, stopExitCode: this.stopExitCode, ...opts }, this.engine);
  }

  /** Calls made so far ("available", "start <id>", "stop <id>", "destroy <id>", "recover"). */
  get calls(): readonly string[] {
    return this.engine.calls;
  }

  /** The running task exits with this code (no-op if it is not running). */
  crash(taskId: string, exitCode: number | null, reason?: string): void {
    const t = this.engine.tasks.get(taskId);
    if (!t || t.status.state !== 'running') return;
    this.exit(t, exitCode, reason ?? (exitCode === null ? 'killed' : `exited with ${exitCode}`));
  }

  /** Starts of this image (or, for process tasks, this argv[0]) throw START_FAILED until cleared. */
  failStart(image: string, message = `mock: cannot start ${image}`): void {
    this.engine.failStarts.set(image, message);
  }

  clearFailStart(image: string): void {
    this.engine.failStarts.delete(image);
  }

  /** available() answers not-ok with this reason (undefined: available again). */
  setUnavailable(reason: string | undefined): void {
    this.engine.unavailable = reason;
  }

  /** Appends an output line to a task (running or exited). */
  emitLog(taskId: string, line: string): void {
    const t = this.mustGet(taskId);
    t.logs.push({ seq: t.nextSeq++, atMs: this.now(), line });
    if (t.logs.length > MOCK_LOG_MAX_LINES) t.logs.splice(0, t.logs.length - MOCK_LOG_MAX_LINES);
    this.wake();
  }

  setStats(taskId: string, stats: { cpuPercent: number; memoryBytes: number } | undefined): void {
    this.mustGet(taskId).stats = stats;
  }

  /** The config a task was started with (undefined if unknown). */
  config(taskId: string): TaskConfig | undefined {
    return this.engine.tasks.get(taskId)?.cfg;
  }

  /** Ids of the tasks in state running, sorted. */
  running(): string[] {
    return [...this.engine.tasks.values()].filter((t) => t.status.state === 'running').map((t) => t.status.taskId).sort();
  }

  // ---- TaskDriver ----

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    this.engine.calls.push('available');
    return this.engine.unavailable === undefined ? { ok: true } : { ok: false, reason: this.engine.unavailable };
  }

  async start(cfg: TaskConfig): Promise<TaskStatus> {
    this.engine.calls.push(`start ${cfg.taskId}`);
    if (!/^[a-z0-9-]{1,63}$/.test(cfg.taskId)) throw new OmniError('INVALID_ARGUMENT', `invalid task id ${JSON.stringify(cfg.taskId)}`);
    if (this.engine.unavailable !== undefined) throw new OmniError('UNAVAILABLE', this.engine.unavailable);
    const prev = this.engine.tasks.get(cfg.taskId);
    if (prev?.status.state === 'running') throw new OmniError('CONFLICT', `task ${cfg.taskId} is already running`);
    const key = cfg.image ?? cfg.command?.[0] ?? '';
    const fail = this.engine.failStarts.get(key);
    if (fail !== undefined) throw new OmniError('START_FAILED', `task ${cfg.taskId}: ${fail}`);
    const status: TaskStatus = { taskId: cfg.taskId, state: 'running', exitCode: null, startedAtMs: this.now() };
    this.engine.tasks.set(cfg.taskId, { cfg: structuredClone(cfg), status, logs: prev?.logs ?? [], nextSeq: prev?.nextSeq ?? 0 });
    return { ...status };
  }

  /** The timeout of the last stop of each task (what the agent allowed it between the stop signal and a kill). */
  readonly stopTimeouts = new Map<string, number>();

  async stop(taskId: string, timeoutMs: number): Promise<void> {
    this.engine.calls.push(`stop ${taskId}`);
    this.stopTimeouts.set(taskId, timeoutMs);
    const t = this.engine.tasks.get(taskId);
    if (!t || t.status.state !== 'running') return;
    this.exit(t, this.stopExitCode, 'stopped');
  }

  async destroy(taskId: string): Promise<void> {
    this.engine.calls.push(`destroy ${taskId}`);
    const t = this.engine.tasks.get(taskId);
    if (!t) return;
    if (t.status.state === 'running') this.exit(t, null, 'destroyed while running');
    this.engine.tasks.delete(taskId);
    this.wake();
  }

  async inspect(taskId: string): Promise<TaskStatus | undefined> {
    const t = this.engine.tasks.get(taskId);
    return t ? { ...t.status } : undefined;
  }

  async recover(): Promise<TaskStatus[]> {
    this.engine.calls.push('recover');
    return [...this.engine.tasks.values()].map((t) => ({ ...t.status })).sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
  }

  async *logs(taskId: string, opts: LogOptions): AsyncIterable<string> {
    const t = this.engine.tasks.get(taskId);
    if (!t) throw new OmniError('NOT_FOUND', `no mock task ${taskId}`);
    const since = opts.sinceMs;
    const pick = (fromSeq: number) => t.logs.filter((l) => l.seq >= fromSeq && (since === undefined || l.atMs >= since)).map((l) => (opts.stamped ? stampLine(l.atMs, l.line) : l.line));
    let next = t.nextSeq;
    let lines = pick(0);
    if (opts.tail !== undefined) lines = opts.tail > 0 ? lines.slice(-opts.tail) : [];
    yield* lines;
    if (!opts.follow) return;
    for (;;) {
      const cur = this.engine.tasks.get(taskId);
      if (cur !== t || opts.signal?.aborted) return;
      const exited = t.status.state !== 'running';
      const more = pick(next);
      next = t.nextSeq;
      yield* more;
      if (exited) return;
      if (next === t.nextSeq && t.status.state === 'running') await this.waitForChange(opts.signal);
    }
  }

  async stats(taskId: string): Promise<{ cpuPercent: number; memoryBytes: number } | undefined> {
    const t = this.engine.tasks.get(taskId);
    if (!t || t.status.state !== 'running') return undefined;
    return t.stats ? { ...t.stats } : { cpuPercent: 0, memoryBytes: 0 };
  }

  // ---- internals ----

  private mustGet(taskId: string): MockTask {
    const t = this.engine.tasks.get(taskId);
    if (!t) throw new OmniError('NOT_FOUND', `no mock task ${taskId}`);
    return t;
  }

  private exit(t: MockTask, exitCode: number | null, reason: string): void {
    t.status = { ...t.status, state: 'exited', exitCode, exitedAtMs: this.now(), reason };
    this.wake();
  }

  private wake(): void {
    const ws = [...this.engine.waiters];
    this.engine.waiters.clear();
    for (const w of ws) w();
  }

  private waitForChange(signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.engine.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.engine.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
