// The forge driver: runs a Forge build (issue 15 item 4) as a task, in omnid's own process, so a
// build is scheduled, placed, logged, stopped and counted like any job task. Its command is the
// build request (protocol/forge/build-request.ts); the build is node/forge/build-task.ts with this
// node's registry in process (node/forge/node-registry.ts) and its step runner (this node's
// runtimes, or its Docker engine for --runner docker). The output — stages, every step's log
// lines as `[step] line`, and a last line with the result or the error as JSON — is the task's
// log (kept in memory and in DATA/forge-tasks/<id>/output.log), so `omni logs` and the task log
// streaming between nodes serve it. stop() aborts the build (its step processes are killed by
// the runner). A build does not survive omnid: after a restart, recover() reports a build that
// was running as exited (no exit code), and the agent counts it as a failed job task.
import { mkdir, readdir, readFile, rm, writeFile, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OmniError } from '../../errors.js';
import type { Logger } from '../../logger.js';
import { BUILD_ERROR_MARKER, BUILD_RESULT_MARKER, parseBuildCommand, type BuildRunnerKind } from '../../../protocol/forge/build-request.js';
import type { BuildRegistry, BuildResult, DockerfileBuild } from '../../forge/builder.js';
import type { runBuildTask as RunBuildTask } from '../../forge/build-task.js';
import { loadOnce } from '../../load-once.js';
import type { BuildLimits } from '../../forge/docker-build.js';
import type { StepRunner } from '../../forge/runner.js';
import { StepFailed } from '../../forge/runner.js';
import { stampLine, type LogOptions, type TaskConfig, type TaskDriver, type TaskStatus } from './types.js';

/**
 * The build itself (node/forge/build-task.ts, with tar and the layer writer: ~15 ms of module
 * evaluation) is loaded by the first build, not at every omnid start (cold start, issue 13).
 */
const loadBuildTask: () => Promise<typeof RunBuildTask> = loadOnce(async () => (await import('../../forge/build-task.js')).runBuildTask);

/** Lines of a build's output kept in memory (the file keeps them all, up to the cap below). */
export const FORGE_LOG_MAX_LINES = 10_000;
/** A longer line is cut. */
const MAX_LINE_CHARS = 16 * 1024;
/** A stop waits this long for the build to end after it was aborted. */
const STOP_WAIT_MS = 30_000;

/** What a build needs on this node; given by the daemon once its registry is open. */
export interface ForgeBuildParts {
  /** The node's registry for one build (its writes stop with `signal`). */
  registry(signal: AbortSignal): BuildRegistry;
  /** The runner of the install and build steps (UNAVAILABLE when this node cannot: no engine for docker). */
  /** `limits`: the build task's reserved resources, enforced on the containers a docker runner starts. */
  runner(kind: BuildRunnerKind, limits?: BuildLimits): StepRunner | Promise<StepRunner>;
  /** Dockerfile projects: this node's engine (absent: refused with a clear error). */
  dockerfileBuild?(registry: BuildRegistry, limits?: BuildLimits): DockerfileBuild | undefined;
  /** Writes the build record to the replicated KV. */
  writeRecord?(key: string, value: string): Promise<void>;
}

export interface ForgeDriverOptions {
  dataDir: string;
  log: Logger;
  /** Undefined while (or where) this node cannot build: no registry. */
  parts(): ForgeBuildParts | undefined;
  now?: () => number;
}

interface Build {
  status: TaskStatus;
  lines: { seq: number; atMs: number; line: string }[];
  nextSeq: number;
  abort: AbortController;
  done: Promise<void>;
  waiters: Set<() => void>;
  /** The output file's appends, in order. */
  writing: Promise<void>;
}

export class ForgeDriver implements TaskDriver {
  readonly name = 'forge' as const;
  private readonly builds = new Map<string, Build>();
  private readonly root: string;
  private readonly now: () => number;

  constructor(private readonly o: ForgeDriverOptions) {
    this.root = join(o.dataDir, 'forge-tasks');
    this.now = o.now ?? Date.now;
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    return this.o.parts() ? { ok: true } : { ok: false, reason: 'this node has no registry (--registry off): it cannot run builds' };
  }

  private dir(taskId: string): string {
    if (!/^[a-z0-9-]{1,63}$/.test(taskId)) throw new OmniError('INVALID_ARGUMENT', `invalid task id ${JSON.stringify(taskId.slice(0, 80))}`);
    return join(this.root, taskId);
  }

  async start(cfg: TaskConfig): Promise<TaskStatus> {
    const dir = this.dir(cfg.taskId);
    const parts = this.o.parts();
    if (!parts) throw new OmniError('UNAVAILABLE', 'this node has no registry: it cannot run builds');
    if (this.builds.get(cfg.taskId)?.status.state === 'running') throw new OmniError('CONFLICT', `build ${cfg.taskId} is already running`);
    const parsed = parseBuildCommand(cfg.command ?? []);
    if (!parsed.ok) throw new OmniError('START_FAILED', `forge build: ${parsed.message}`);
    const req = parsed.request;
    // The build's reservation (its app's resources) holds for the engine's containers too.
    const limits: BuildLimits = { cpu: cfg.cpu, memoryBytes: cfg.memoryBytes };
    const runner = await parts.runner(req.runner, limits);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'output.log'), '');
    const status: TaskStatus = { taskId: cfg.taskId, state: 'running', exitCode: null, startedAtMs: this.now() };
    const b: Build = { status, lines: [], nextSeq: 0, abort: new AbortController(), done: Promise.resolve(), waiters: new Set(), writing: Promise.resolve() };
    this.builds.set(cfg.taskId, b);
    await this.saveStatus(cfg.taskId, status);
    const signal = b.abort.signal;
    const registry = parts.registry(signal);
    b.done = (async () => {
      let exitCode: number | null = 0;
      let reason = 'built';
      try {
        const r: BuildResult = await (await loadBuildTask())(
          req,
          { registry, runner, workRoot: join(this.root, 'work'), ...(parts.dockerfileBuild ? { dockerfileBuild: parts.dockerfileBuild(registry, limits) } : {}), ...(parts.writeRecord ? { writeRecord: parts.writeRecord } : {}) },
          { stage: (s) => this.emit(cfg.taskId, b, `--- ${s}`), log: (step, line) => this.emit(cfg.taskId, b, `[${step}] ${line}`) },
          signal,
        );
        if (r.reused) reason = 'reused';
        this.emit(cfg.taskId, b, `${r.reused ? 'reused' : 'built'} ${r.repository}@${r.digest}`);
        this.emit(cfg.taskId, b, BUILD_RESULT_MARKER + JSON.stringify(r));
      } catch (err) {
        const e = err as Error & { code?: string };
        if (signal.aborted) {
          exitCode = null;
          reason = 'cancelled';
          this.emit(cfg.taskId, b, 'build cancelled');
        } else {
          exitCode = 1;
          reason = e instanceof StepFailed ? `step '${e.step}' failed (${e.exit})` : `${e.code ?? 'ERROR'}: ${e.message.split('\n')[0].slice(0, 300)}`;
          this.emit(cfg.taskId, b, `error: ${e.message}`);
        }
        const detail = e instanceof StepFailed ? { step: e.step, exit: e.exit, tail: e.tail } : {};
        this.emit(cfg.taskId, b, BUILD_ERROR_MARKER + JSON.stringify({ code: signal.aborted ? 'CANCELLED' : (e.code ?? 'ERROR'), message: e.message, ...detail }));
      }
      await b.writing;
      b.status = { ...b.status, state: 'exited', exitCode, exitedAtMs: this.now(), reason };
      await this.saveStatus(cfg.taskId, b.status).catch((err: Error) => this.o.log.warn(`forge: cannot save the status of ${cfg.taskId}: ${err.message}`));
      this.wake(b);
    })();
    return { ...status };
  }

  async stop(taskId: string, timeoutMs: number): Promise<void> {
    const b = this.builds.get(taskId);
    if (!b || b.status.state !== 'running') return;
    b.abort.abort();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([b.done, new Promise<void>((r) => (timer = setTimeout(r, Math.max(timeoutMs, STOP_WAIT_MS))))]);
    clearTimeout(timer);
  }

  async destroy(taskId: string): Promise<void> {
    const b = this.builds.get(taskId);
    if (b?.status.state === 'running') await this.stop(taskId, STOP_WAIT_MS);
    this.builds.delete(taskId);
    await rm(this.dir(taskId), { recursive: true, force: true });
  }

  async inspect(taskId: string): Promise<TaskStatus | undefined> {
    const b = this.builds.get(taskId);
    if (b) return { ...b.status };
    return this.loadStatus(taskId);
  }

  async recover(): Promise<TaskStatus[]> {
    const ids = await readdir(this.root).catch(() => [] as string[]);
    const out: TaskStatus[] = [];
    for (const id of ids.sort()) {
      if (id === 'work' || !/^[a-z0-9-]{1,63}$/.test(id)) continue;
      const st = await this.inspect(id);
      if (st) out.push(st);
    }
    return out;
  }

  async *logs(taskId: string, opts: LogOptions): AsyncIterable<string> {
    const b = this.builds.get(taskId);
    if (!b) {
      // Not run by this omnid (it restarted): what the file kept.
      const text = await readFile(join(this.dir(taskId), 'output.log'), 'utf8').catch(() => undefined);
      if (text === undefined) throw new OmniError('NOT_FOUND', `no build task ${taskId} on this node`);
      const lines = text.split('\n').slice(0, -1);
      const kept = opts.tail !== undefined ? (opts.tail > 0 ? lines.slice(-opts.tail) : []) : lines;
      yield* opts.stamped ? kept.map((l) => stampLine(undefined, l)) : kept;
      return;
    }
    const since = opts.sinceMs;
    const pick = (fromSeq: number) => b.lines.filter((l) => l.seq >= fromSeq && (since === undefined || l.atMs >= since)).map((l) => (opts.stamped ? stampLine(l.atMs, l.line) : l.line));
    let next = b.nextSeq;
    let lines = pick(0);
    if (opts.tail !== undefined) lines = opts.tail > 0 ? lines.slice(-opts.tail) : [];
    yield* lines;
    if (!opts.follow) return;
    for (;;) {
      if (opts.signal?.aborted || this.builds.get(taskId) !== b) return;
      const exited = b.status.state !== 'running';
      const more = pick(next);
      next = b.nextSeq;
      yield* more;
      if (exited) return;
      if (next === b.nextSeq && b.status.state === 'running') await this.waitForChange(b, opts.signal);
    }
  }

  async stats(): Promise<{ cpuPercent: number; memoryBytes: number } | undefined> {
    return undefined;
  }

  // ---- internals ----

  private emit(taskId: string, b: Build, raw: string): void {
    for (const part of raw.split('\n')) {
      const line = part.length > MAX_LINE_CHARS ? `${part.slice(0, MAX_LINE_CHARS)}… (line cut)` : part;
      b.lines.push({ seq: b.nextSeq++, atMs: this.now(), line });
      b.writing = b.writing.then(() => appendFile(join(this.root, taskId, 'output.log'), line + '\n')).catch(() => undefined);
    }
    if (b.lines.length > FORGE_LOG_MAX_LINES) b.lines.splice(0, b.lines.length - FORGE_LOG_MAX_LINES);
    this.wake(b);
  }

  private wake(b: Build): void {
    const ws = [...b.waiters];
    b.waiters.clear();
    for (const w of ws) w();
  }

  private waitForChange(b: Build, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        b.waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      b.waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private async saveStatus(taskId: string, st: TaskStatus): Promise<void> {
    await writeFile(join(this.dir(taskId), 'status.json'), JSON.stringify(st));
  }

  /** A build's status from its file: one that was running when omnid stopped has exited (no exit code). */
  private async loadStatus(taskId: string): Promise<TaskStatus | undefined> {
    const text = await readFile(join(this.dir(taskId), 'status.json'), 'utf8').catch(() => undefined);
    if (text === undefined) return undefined;
    let st: TaskStatus;
    try {
      st = JSON.parse(text) as TaskStatus;
    } catch {
      return { taskId, state: 'exited', exitCode: null, startedAtMs: 0, exitedAtMs: this.now(), reason: 'the build status file is unreadable' };
    }
    if (st.state === 'running') return { ...st, taskId, state: 'exited', exitCode: null, exitedAtMs: this.now(), reason: 'omnid stopped during the build' };
    return { ...st, taskId };
  }
}
