// Last line of defence for exceptions nothing caught (issue 9: a library's RangeError, thrown in a
// socket callback, killed omnid silently). Every uncaught exception and unhandled rejection is
// logged as one line with a code (UNCAUGHT_EXCEPTION / UNHANDLED_REJECTION) and its stack; then:
//
// - unsafe → the daemon shuts down cleanly and exits 1, so its supervisor restarts it:
//   anything thrown from the Raft/storage path (node/raft/raft-node.ts, node/raft/raft-storage.ts,
//   protocol/raft/, protocol/cluster/, the LevelDB modules), because the log, the hard state or
//   the applied state may be half-updated; and a storm of uncaught errors (a broken process);
// - survivable → logged and the daemon keeps serving: anything else, typically an error thrown
//   in a libp2p stream or connection callback, which breaks at most that stream or connection
//   (libp2p and Raft redial and resend). The Raft driver already turns its own storage and apply
//   failures into a clean stop (onFatal); what reaches this guard did not go through it.
import type { Logger } from './logger.js';

export type UncaughtKind = 'uncaughtException' | 'unhandledRejection';
export const UNCAUGHT_CODES: Record<UncaughtKind, string> = {
  uncaughtException: 'UNCAUGHT_EXCEPTION',
  unhandledRejection: 'UNHANDLED_REJECTION',
};

/** More survivable errors than this within the window means the process is not healthy. */
export const UNCAUGHT_STORM_MAX = 50;
export const UNCAUGHT_STORM_WINDOW_MS = 60_000;
/** A clean shutdown that takes longer than this is cut short: exit 1 anyway. */
export const GUARD_SHUTDOWN_TIMEOUT_MS = 15_000;
/** One log line carries at most this much of the error and its stack. */
export const UNCAUGHT_LOG_MAX_CHARS = 4_000;
/** How deep `cause` chains are searched for an unsafe origin. */
const CAUSE_DEPTH_MAX = 5;

/** Stack frames that put an error on the Raft/storage path. */
const UNSAFE_ORIGINS: ReadonlyArray<readonly [RegExp, string]> = [
  [/[\\/]node[\\/]raft[\\/](raft-node|raft-storage|storage-integrity|hard-state-witness)\.[cm]?[jt]s\b/, 'the Raft driver or its storage'],
  [/[\\/]protocol[\\/](raft|cluster)[\\/]/, 'the Raft core or the cluster state machine'],
  [/[\\/]node_modules[\\/](classic-level|abstract-level|level|level-transcoder|level-supports)[\\/]/, 'the LevelDB storage engine'],
];

export interface UncaughtVerdict {
  survivable: boolean;
  /** Why, in a few words, for the log line. */
  why: string;
}

function stacksOf(err: unknown): string[] {
  const out: string[] = [];
  let e: unknown = err;
  for (let depth = 0; depth < CAUSE_DEPTH_MAX && e instanceof Error; depth++) {
    out.push(e.stack ?? '');
    e = e.cause;
  }
  return out;
}

/** Where an uncaught error came from decides whether continuing is safe (pure; no clock). */
export function classifyUncaught(err: unknown): UncaughtVerdict {
  for (const stack of stacksOf(err)) {
    for (const [frame, what] of UNSAFE_ORIGINS) {
      if (frame.test(stack)) return { survivable: false, why: `thrown from ${what}` };
    }
  }
  if (!(err instanceof Error)) return { survivable: true, why: `a non-Error value (${typeof err}) with no stack, not from the Raft/storage path as far as can be told` };
  return { survivable: true, why: 'not from the Raft/storage path (e.g. a libp2p stream or connection callback)' };
}

/**
 * classifyUncaught plus the storm limit: remembers when survivable errors happened (time is
 * passed in, so this stays testable without a clock).
 */
export class UncaughtPolicy {
  private readonly recent: number[] = [];
  constructor(
    private readonly stormMax = UNCAUGHT_STORM_MAX,
    private readonly windowMs = UNCAUGHT_STORM_WINDOW_MS,
  ) {}

  judge(err: unknown, nowMs: number): UncaughtVerdict {
    const verdict = classifyUncaught(err);
    if (!verdict.survivable) return verdict;
    while (this.recent.length > 0 && this.recent[0] <= nowMs - this.windowMs) this.recent.shift();
    this.recent.push(nowMs);
    if (this.recent.length > this.stormMax) {
      return { survivable: false, why: `${this.recent.length} uncaught errors within ${this.windowMs / 1000} s: the process is not healthy` };
    }
    return verdict;
  }
}

/** The error and its stack on one line (frames separated by " | "), capped in length. */
export function describeUncaught(err: unknown): string {
  let text: string;
  if (err instanceof Error) {
    text = (err.stack ?? `${err.name}: ${err.message}`).trim();
    if (!text.includes(err.message)) text = `${err.name}: ${err.message} ${text}`;
    if (err.cause !== undefined) text += ` | caused by: ${err.cause instanceof Error ? (err.cause.stack ?? err.cause.message) : String(err.cause)}`;
  } else {
    try {
      text = `non-Error value: ${typeof err === 'string' ? err : JSON.stringify(err)}`;
    } catch {
      text = `non-Error value: ${String(err)}`;
    }
  }
  const line = text.replace(/\s*\n\s*/g, ' | ');
  return line.length > UNCAUGHT_LOG_MAX_CHARS ? `${line.slice(0, UNCAUGHT_LOG_MAX_CHARS)}…` : line;
}

export interface ProcessGuardOptions {
  log: Logger;
  /** Clean shutdown for unsafe errors; without one (before the daemon runs) the process exits 1. */
  shutdown?: (reason: string) => Promise<void>;
  exit?: (code: number) => void;
  now?: () => number;
  shutdownTimeoutMs?: number;
  policy?: UncaughtPolicy;
}

export class ProcessGuard {
  private log: Logger;
  private shutdown: ((reason: string) => Promise<void>) | undefined;
  private readonly exit: (code: number) => void;
  private readonly now: () => number;
  private readonly shutdownTimeoutMs: number;
  private readonly policy: UncaughtPolicy;
  private stopping = false;
  private readonly listeners: Record<UncaughtKind, (err: unknown) => void> = {
    uncaughtException: (err) => this.handle('uncaughtException', err),
    unhandledRejection: (reason) => this.handle('unhandledRejection', reason),
  };

  constructor(opts: ProcessGuardOptions) {
    this.log = opts.log;
    this.shutdown = opts.shutdown;
    this.exit = opts.exit ?? ((code) => process.exit(code));
    this.now = opts.now ?? Date.now;
    this.shutdownTimeoutMs = opts.shutdownTimeoutMs ?? GUARD_SHUTDOWN_TIMEOUT_MS;
    this.policy = opts.policy ?? new UncaughtPolicy();
  }

  /** Once the daemon runs: log through its logger and stop it cleanly on an unsafe error. */
  attach(opts: { log: Logger; shutdown: (reason: string) => Promise<void> }): void {
    this.log = opts.log;
    this.shutdown = opts.shutdown;
  }

  install(): this {
    for (const kind of Object.keys(this.listeners) as UncaughtKind[]) process.on(kind, this.listeners[kind]);
    return this;
  }

  uninstall(): void {
    for (const kind of Object.keys(this.listeners) as UncaughtKind[]) process.off(kind, this.listeners[kind]);
  }

  /** Logs one line and decides; returns the verdict (for tests). Never throws. */
  handle(kind: UncaughtKind, err: unknown): UncaughtVerdict {
    const verdict = this.policy.judge(err, this.now());
    const code = UNCAUGHT_CODES[kind];
    const action = verdict.survivable ? 'continuing' : this.stopping ? 'already shutting down' : 'shutting down, exit code 1';
    try {
      this.log.error(`${code}: ${verdict.survivable ? 'survivable' : 'unsafe'}, ${verdict.why}; ${action}: ${describeUncaught(err)}`);
    } catch {
      // a broken logger must not turn this into a loop of uncaught exceptions
    }
    if (!verdict.survivable) this.stop(`${code}: ${verdict.why}`);
    return verdict;
  }

  private stop(reason: string): void {
    if (this.stopping) return;
    this.stopping = true;
    process.exitCode = 1;
    if (!this.shutdown) {
      this.exit(1);
      return;
    }
    const timer = setTimeout(() => {
      this.log.error(`${reason}: clean shutdown did not finish within ${this.shutdownTimeoutMs} ms; exiting`);
      this.exit(1);
    }, this.shutdownTimeoutMs);
    // The caller (omnid's serveUntilStopped) exits with the daemon's exit code once it stopped.
    this.shutdown(reason).then(
      () => clearTimeout(timer),
      (err: unknown) => {
        clearTimeout(timer);
        this.log.error(`${reason}: shutdown failed: ${describeUncaught(err)}; exiting`);
        this.exit(1);
      },
    );
  }
}

let installed: ProcessGuard | undefined;

/** Installs the process-wide guard once (omnid's entry point); later calls return the same one. */
export function installProcessGuard(opts: ProcessGuardOptions): ProcessGuard {
  installed ??= new ProcessGuard(opts).install();
  return installed;
}

/** The installed guard, if any (the daemon attaches its logger and shutdown to it). */
export function processGuard(): ProcessGuard | undefined {
  return installed;
}
