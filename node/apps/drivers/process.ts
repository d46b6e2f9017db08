// Process driver: runs a task's argv on the host (no isolation, no resource limits). Each task
// gets <dataDir>/tasks/<taskId>/ holding:
//   work/           the task's cwd (and HOME unless its env sets one) — unless the task has a
//                   synced workspace (TaskConfig.workDir): then that directory is its cwd, and
//   home/           its HOME (what tools keep there — caches, a notebook server's runtime
//                   files and secrets, shell history — stays out of the synced project files)
//   state.json      the wrapper's pid (= the task's process group) and its start time
//   exit.code       the command's exit status, written by the wrapper when the command ends
//   exit.json       written by the driver instead when there is no status (start failure, lost task)
//   out.pipe, err.pipe, ack.pipe   named pipes: the task's stdout/stderr, and the wrapper's exit gate
//   output.log(.1)  stdout+stderr, one line per entry: "<ISO time> <O|E> <text>", rotated at a size limit
//   wrapper.log     the wrapper shell's own errors
// The wrapper (process-wrapper.sh, copied to <dataDir>/process-wrapper-<hash>.sh) is a /bin/sh
// started detached, so it leads its own process group and outlives omnid: it runs the command and
// records its exit status, which is how recover() works after omnid restarts; it costs ~1-2 MB
// RSS. omnid itself reads the output pipes into output.log (process-output.ts). Tasks started by
// the earlier Node supervisor (state v1: exit.json, output.log written by it) are still recovered.
import { spawn, execFile } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { resolveCommand } from '../command-path.js';
import { mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { TaskCgroups } from './cgroups.js';
import type { HardLimits } from '../../../protocol/apps/cgroup-limits.js';
import { OmniError } from '../../errors.js';
import { writeFileAtomic } from '../../files.js';
import { ACK_PIPE, ERR_PIPE, LogFile, OUT_PIPE, attachOutput, detachOutput, outputOf } from './process-output.js';
import { stampLine, type LogOptions, type TaskConfig, type TaskDriver, type TaskStatus } from './types.js';
import { expandArgv } from '../../../protocol/apps/expand.js';
import { installScript, readProcStat } from './host-scripts.js';
import { leaseFilePath } from '../lease-file.js';

/** output.log is renamed to output.log.1 (replacing it) when it would grow past this. */
export const PROCESS_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** Longer output lines are split. */
const LOG_LINE_MAX_BYTES = 64 * 1024;
/** How long start() waits for the wrapper to report that it holds the output pipes. */
const READY_TIMEOUT_MS = 10_000;
/** After the command ended, how long inspect() waits for the rest of its output (grandchildren may hold the pipes). */
const OUTPUT_SETTLE_MS = 2_000;
const UNSHARE = '/usr/bin/unshare';
let unshareOk: boolean | undefined;
/** Root with util-linux unshare: process tasks on a network get their own /etc/hosts. */
export function canUnshare(): boolean {
  unshareOk ??= process.platform === 'linux' && process.getuid?.() === 0 && existsSync(UNSHARE);
  return unshareOk;
}
/** The wrapper's shell: POSIX sh, present on every host the driver supports. */
const SHELL = '/bin/sh';
const WRAPPER_SOURCE_URL = new URL('./process-wrapper.sh', import.meta.url);
/** How long stop() waits for the group to vanish after SIGKILL. */
const KILL_WAIT_MS = 5_000;
/** destroy() on a task that still runs stops it with this grace period first. */
const DESTROY_STOP_TIMEOUT_MS = 5_000;
const STOP_POLL_MS = 25;
const FOLLOW_POLL_MS = 150;
const READ_CHUNK_BYTES = 64 * 1024;
/** Linux defaults (no sysconf in Node): USER_HZ and page size for /proc figures. */
const CLOCK_TICKS_PER_S = 100;
const PAGE_BYTES = 4096;
const TASK_ID_RE = /^[a-z0-9-]{1,63}$/;

/** What the driver keeps about a launched task (state.json). */
interface ProcessState {
  /** 1: started by the earlier Node supervisor (still recovered); 2: by the sh wrapper. */
  v: 1 | 2;
  taskId: string;
  app: string;
  version: number;
  command: string[];
  /** Wrapper (v1: supervisor) pid; it is also the process group id of the task. 0: never launched. */
  pid: number;
  /** Field 22 of /proc/<pid>/stat (start time in ticks since boot), against pid reuse. */
  procStart: string | null;
  bootId: string | null;
  startedAtMs: number;
  stopRequestedAtMs?: number;
  /** The hard limits of the run's cgroup (resources.limit: true), when it has one. */
  limits?: HardLimits;
  /** The GPUs given to the run (CUDA_VISIBLE_DEVICES). */
  gpus?: number[];
}

/** exit.json (v1: written by the supervisor; v2: by the driver) or what exit.code says. */
interface ExitRecord {
  exitCode: number | null;
  signal: string | null;
  exitedAtMs: number;
  reason?: string;
}

/** Signal number → name (the first name for aliases such as SIGIOT = SIGABRT). */
const SIGNAL_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(osConstants.signals)) if (!SIGNAL_NAMES.has(n)) SIGNAL_NAMES.set(n, name);

/**
 * The wrapper's exit.code: "<status>\n" as the shell reports it, 128+n for a command killed by
 * signal n (so a command that exits with such a status itself reads as killed: the shell cannot
 * tell them apart). undefined while absent or not yet complete.
 */
async function readExitCode(path: string): Promise<ExitRecord | undefined> {
  let text: string;
  let mtimeMs: number;
  try {
    [text, mtimeMs] = await Promise.all([readFile(path, 'utf8'), stat(path).then((s) => s.mtimeMs)]);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  const m = /^(\d{1,3})\n$/.exec(text);
  if (!m) return undefined;
  const status = Number(m[1]);
  const signal = status > 128 ? SIGNAL_NAMES.get(status - 128) : undefined;
  if (signal) return { exitCode: null, signal, exitedAtMs: Math.round(mtimeMs), reason: `signal ${signal}` };
  return { exitCode: status, signal: null, exitedAtMs: Math.round(mtimeMs) };
}

/** Env var suffix for a port / volume name: OMNI_PORT_<NAME>. */
export function envSuffix(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

function readBootId(): string | null {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return null;
  }
}

const hasProc = existsSync('/proc/self/stat');

/** Live (non-zombie) members of a process group, from /proc. */
function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return out;
  }
  for (const n of names) {
    if (n.charCodeAt(0) < 48 || n.charCodeAt(0) > 57) continue;
    const pid = Number(n);
    const s = readProcStat(pid);
    if (s && s.pgrp === pgid && s.state !== 'Z') out.push(pid);
  }
  return out;
}

function signalExists(target: number): boolean {
  try {
    process.kill(target, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function readJson<T>(path: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined; // torn or foreign file: treat as absent
  }
}

const LOG_LINE_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) [OE] /;

/** Splits a stored log line into its time and text (time undefined for a foreign line). */
function parseLogLine(line: string): { atMs: number | undefined; text: string } {
  const m = LOG_LINE_RE.exec(line);
  if (!m) return { atMs: undefined, text: line };
  return { atMs: Date.parse(m[1]), text: line.slice(m[0].length) };
}

/** Reads a file handle from `offset` to its current end, calling `onLine` per complete line. */
class LineReader {
  private pending = '';
  offset = 0;
  constructor(readonly fh: FileHandle) {}

  async drain(onLine: (line: string) => void): Promise<void> {
    const buf = Buffer.alloc(READ_CHUNK_BYTES);
    for (;;) {
      const { bytesRead } = await this.fh.read(buf, 0, buf.length, this.offset);
      if (bytesRead === 0) return;
      this.offset += bytesRead;
      const text = this.pending + buf.toString('utf8', 0, bytesRead);
      const parts = text.split('\n');
      this.pending = parts.pop() ?? '';
      for (const p of parts) onLine(p);
    }
  }

  /** A last line without its newline (only once the writer is gone). */
  flushPartial(onLine: (line: string) => void): void {
    if (this.pending) onLine(this.pending);
    this.pending = '';
  }
}

async function openIfExists(path: string): Promise<FileHandle | undefined> {
  try {
    return await open(path, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}

export interface ProcessDriverOptions {
  /** Size at which output.log rotates to output.log.1 (default PROCESS_LOG_MAX_BYTES). */
  logMaxBytes?: number;
  /** The host's cgroups for hard limits (default: TaskCgroups.open(), made when first needed). */
  cgroups?: TaskCgroups | { reason: string };
}

export class ProcessDriver implements TaskDriver {
  readonly name = 'process' as const;
  private readonly tasksDir: string;
  private readonly starting = new Set<string>();
  private wrapperPath: Promise<string> | undefined;
  private readonly cpuSamples = new Map<string, { ticks: number; atMs: number }>();

  private readonly logMaxBytes: number;

  constructor(
    readonly dataDir: string,
    opts: ProcessDriverOptions = {},
  ) {
    this.tasksDir = join(dataDir, 'tasks');
    this.logMaxBytes = opts.logMaxBytes ?? PROCESS_LOG_MAX_BYTES;
    this.cgroupsOpt = opts.cgroups;
  }

  private cgroupsOpt: TaskCgroups | { reason: string } | undefined;

  /** The host's cgroups, or why there are none (looked up once). */
  private cgroups(): TaskCgroups | { reason: string } {
    this.cgroupsOpt ??= TaskCgroups.open();
    return this.cgroupsOpt;
  }

  /**
   * The run's cgroup when the task asks for hard limits: the cgroup.procs files its command
   * joins, or undefined (no limits asked; or none possible here, which the task's log says).
   */
  private async limitsFor(cfg: TaskConfig, dir: string, earlier: ProcessState | undefined): Promise<{ procs: string[]; limits: HardLimits } | undefined> {
    if (!cfg.hardLimits || !(cfg.cpu > 0 || cfg.memoryBytes > 0)) {
      // an earlier run's cgroup, when it had one (create() replaces it otherwise)
      if (earlier?.limits) await this.removeCgroup(cfg.taskId);
      return undefined;
    }
    const cg = this.cgroups();
    const limits: HardLimits = { cpu: cfg.cpu, memoryBytes: cfg.memoryBytes };
    if (!(cg instanceof TaskCgroups)) {
      this.note(dir, `omni: resources.limit is true but CPU and memory are not limited on this node: ${cg.reason}`);
      return undefined;
    }
    try {
      return { procs: await cg.create(cfg.taskId, limits), limits };
    } catch (e) {
      this.note(dir, `omni: resources.limit is true but CPU and memory are not limited: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** Removes the task's cgroup, killing what is left in it (a process that left the task's group). */
  private async removeCgroup(taskId: string): Promise<void> {
    const cg = this.cgroups();
    if (cg instanceof TaskCgroups) await cg.remove(taskId).catch(() => undefined);
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    if (process.platform === 'win32') return { ok: false, reason: 'the process driver needs a POSIX host (process groups)' };
    if (resolveCommand(SHELL, '', '/') === undefined) return { ok: false, reason: `the process driver needs ${SHELL}` };
    if (resolveCommand('mkfifo', process.env.PATH ?? '/usr/bin:/bin', '/') === undefined) return { ok: false, reason: 'the process driver needs mkfifo on PATH' };
    return { ok: true };
  }

  taskDir(taskId: string): string {
    if (!TASK_ID_RE.test(taskId)) throw new OmniError('INVALID_ARGUMENT', `invalid task id ${JSON.stringify(taskId)} (want [a-z0-9-], at most 63 chars)`);
    return join(this.tasksDir, taskId);
  }

  async start(cfg: TaskConfig): Promise<TaskStatus> {
    const dir = this.taskDir(cfg.taskId);
    if (!cfg.command || cfg.command.length === 0) throw new OmniError('INVALID_ARGUMENT', `task ${cfg.taskId}: the process driver needs a command`);
    if (this.starting.has(cfg.taskId)) throw new OmniError('CONFLICT', `task ${cfg.taskId} is already starting`);
    this.starting.add(cfg.taskId);
    try {
      const cur = await this.inspect(cfg.taskId);
      if (cur?.state === 'running') throw new OmniError('CONFLICT', `task ${cfg.taskId} is already running`);
      const old = await readJson<ProcessState>(join(dir, 'state.json'));
      if (old && this.groupAlive(old)) throw new OmniError('CONFLICT', `task ${cfg.taskId} still has processes left from its last run; stop it first`);
      detachOutput(dir); // whatever the last run's leftovers still wrote
      const work = cfg.workDir ?? join(dir, 'work');
      await mkdir(dir, { recursive: true });
      await mkdir(work, { recursive: true });
      await mkdir(homeOf(cfg, dir), { recursive: true });
      // state first: a concurrent inspect() must not see the old state without an exit record (it
      // would record the new run as lost)
      await rm(join(dir, 'state.json'), { force: true });
      await rm(join(dir, 'exit.json'), { force: true });
      await rm(join(dir, 'exit.code'), { force: true });
      this.cpuSamples.delete(cfg.taskId);
      const env = this.taskEnv(cfg, dir);
      // $PORT, ${OMNI_PORT_HTTP}... from the task's own env ($$ for a literal $): no shell runs the argv
      const argv = expandArgv(cfg.command, env);
      const argv0 = resolveCommand(argv[0], env.PATH ?? '', work);
      if (argv0 === undefined) {
        const why = argv[0].includes('/') ? 'no such executable file' : 'not found in PATH';
        return await this.failStart(cfg, dir, `cannot start ${JSON.stringify(argv[0])}: ${why}`);
      }
      await this.makePipes(dir);
      const limited = await this.limitsFor(cfg, dir, old);
      delete env.OMNI_CGROUP_PROCS; // only the driver names the cgroup a task joins
      if (limited) env.OMNI_CGROUP_PROCS = limited.procs.join(':');
      return await this.launch(cfg, dir, [argv0, ...argv.slice(1)], env, limited?.limits);
    } finally {
      this.starting.delete(cfg.taskId);
    }
  }

  private taskEnv(cfg: TaskConfig, dir: string): Record<string, string> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: homeOf(cfg, dir),
      ...cfg.env,
      OMNI_TASK_ID: cfg.taskId,
    };
    if (cfg.workDir) env.OMNI_WORKSPACE = cfg.workDir;
    // The wrapper's watchdog kills an exclusive task once the node's lease lapses (omnid up or not).
    if (cfg.exclusive) env.OMNI_LEASE_FILE = leaseFilePath(this.dataDir);
    if (cfg.ports.length > 0) env.PORT = String(cfg.ports[0].hostPort);
    for (const p of cfg.ports) env[`OMNI_PORT_${envSuffix(p.name)}`] = String(p.hostPort);
    for (const v of cfg.volumes) env[`OMNI_VOLUME_${envSuffix(v.name)}`] = v.hostPath;
    // the GPUs the agent gave it (and only those: 'none' hides every GPU from CUDA)
    if (cfg.gpus !== undefined) {
      env.CUDA_VISIBLE_DEVICES = cfg.gpus.join(',');
      // nvidia-smi's order (the indices the agent gave), not CUDA's fastest-first default
      env.CUDA_DEVICE_ORDER = 'PCI_BUS_ID';
    }
    return env;
  }

  private newState(cfg: TaskConfig, pid: number): ProcessState {
    return {
      v: 2,
      taskId: cfg.taskId,
      app: cfg.app,
      version: cfg.version,
      command: cfg.command ?? [],
      pid,
      procStart: pid > 0 ? (readProcStat(pid)?.startTicks ?? null) : null,
      bootId: readBootId(),
      startedAtMs: Date.now(),
      ...(cfg.gpus && cfg.gpus.length > 0 ? { gpus: cfg.gpus } : {}),
    };
  }

  /** Records a run that never launched (exit 127, as a shell would) and rejects start(). */
  private async failStart(cfg: TaskConfig, dir: string, msg: string): Promise<never> {
    await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(this.newState(cfg, 0)));
    const log = new LogFile(dir, this.logMaxBytes);
    try {
      log.append('E', [`omni: ${msg}`]);
    } finally {
      log.close();
    }
    const ex: ExitRecord = { exitCode: 127, signal: null, exitedAtMs: Date.now(), reason: msg };
    await writeFileAtomic(join(dir, 'exit.json'), JSON.stringify(ex));
    throw new OmniError('START_FAILED', `task ${cfg.taskId}: ${msg}`);
  }

  /** Fresh named pipes for the run (a FIFO's content lives only while someone holds it open). */
  private async makePipes(dir: string): Promise<void> {
    const paths = [OUT_PIPE, ERR_PIPE, ACK_PIPE].map((n) => join(dir, n));
    for (const p of paths) await rm(p, { force: true });
    try {
      await promisify(execFile)('mkfifo', ['-m', '600', ...paths], { timeout: READY_TIMEOUT_MS });
    } catch (e) {
      throw new OmniError('START_FAILED', `cannot create the output pipes in ${dir}: ${(e as Error).message}`);
    }
  }

  private note(dir: string, line: string): void {
    const log = new LogFile(dir, this.logMaxBytes);
    try {
      log.append('E', [line]);
    } finally {
      log.close();
    }
  }

  private async launch(cfg: TaskConfig, dir: string, argv: string[], env: Record<string, string>, limits?: HardLimits): Promise<TaskStatus> {
    const script = await this.ensureWrapper();
    const errLog = await open(join(dir, 'wrapper.log'), 'a');
    let child: ChildProcess;
    try {
      // Service networking: in a private mount namespace (unshare, root only) the wrapper
      // bind-mounts the network's hosts file over /etc/hosts before running the command.
      const ns = cfg.hostsFile !== undefined && canUnshare();
      if (cfg.hostsFile !== undefined && !ns) this.note(dir, `omni: names of the task's network are not in its /etc/hosts (that needs root and unshare); use the OMNI_HOST_<ALIAS> variables`);
      const [file, args] = ns ? [UNSHARE, ['--mount', '--propagation', 'private', SHELL, script, dir, ...argv]] : [SHELL, [script, dir, ...argv]];
      if (ns) env = { ...env, OMNI_HOSTS_FILE: cfg.hostsFile!, ...(cfg.resolvConf ? { OMNI_RESOLV_FILE: cfg.resolvConf } : {}) };
      child = spawn(file, args, {
        cwd: cfg.workDir ?? join(dir, 'work'),
        detached: true, // setsid: the wrapper leads the task's process group and session
        stdio: ['pipe', 'pipe', errLog.fd], // the start handshake: "ok" out, "go" in
        env,
      });
    } finally {
      await errLog.close();
    }
    const pid = child.pid;
    if (pid === undefined) {
      await new Promise((r) => child.once('error', r));
      throw new OmniError('START_FAILED', `task ${cfg.taskId}: cannot run ${SHELL}`);
    }
    const state: ProcessState = { ...this.newState(cfg, pid), ...(limits ? { limits } : {}) };
    await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(state));

    const reply = await new Promise<string>((resolve) => {
      let text = '';
      const timer = setTimeout(() => resolve('err the wrapper did not report within ' + READY_TIMEOUT_MS + ' ms'), READY_TIMEOUT_MS);
      const done = (line: string) => {
        clearTimeout(timer);
        resolve(line);
      };
      child.stdout!.on('data', (c: Buffer) => {
        text += c.toString('utf8');
        const nl = text.indexOf('\n');
        if (nl >= 0) done(text.slice(0, nl));
      });
      child.stdout!.on('error', () => {});
      child.once('exit', (code, sig) => done(`err the wrapper exited (${sig ?? code}) before starting the command; see ${join(dir, 'wrapper.log')}`));
      child.once('error', (e) => done(`err ${e.message}`));
    });
    child.stdout!.destroy();
    child.stdin!.on('error', () => {}); // EPIPE if the wrapper is gone
    child.unref();
    if (reply !== 'ok') {
      child.stdin!.destroy(); // the wrapper never runs the command without "go"
      if (this.groupAlive(state)) this.signalGroup(state, 'SIGKILL');
      await this.inspect(cfg.taskId); // records the run as lost
      throw new OmniError('START_FAILED', `task ${cfg.taskId}: ${reply.replace(/^err /, '')}`);
    }
    // the wrapper holds the pipes now: reading them can no longer see a premature end of file
    this.attach(dir, state);
    child.stdin!.end('go\n');
    return { taskId: cfg.taskId, state: 'running', exitCode: null, startedAtMs: state.startedAtMs };
  }

  /** The wrapper script, copied under a content-named file: a shell reads its script while it runs, so a running one must never change. */
  private ensureWrapper(): Promise<string> {
    this.wrapperPath ??= installScript(this.dataDir, WRAPPER_SOURCE_URL, 'process-wrapper').catch((e: unknown) => {
      this.wrapperPath = undefined;
      throw e;
    });
    return this.wrapperPath;
  }

  /** Starts reading a v2 task's output in this process (if its wrapper still runs and no pump does yet). */
  private attach(dir: string, st: ProcessState): void {
    if (st.v !== 2 || outputOf(dir) || !this.wrapperAlive(st)) return;
    attachOutput(dir, { logMaxBytes: this.logMaxBytes, lineMaxBytes: LOG_LINE_MAX_BYTES });
  }

  /** The wrapper (v1: supervisor) process itself is still ours and alive (not a reused pid, not a zombie). */
  private wrapperAlive(st: ProcessState): boolean {
    if (st.pid <= 1 || !signalExists(st.pid)) return false;
    if (!hasProc) return true;
    const s = readProcStat(st.pid);
    if (!s || s.state === 'Z') return false;
    if (st.procStart !== null && s.startTicks !== st.procStart) return false;
    if (st.bootId !== null && readBootId() !== st.bootId) return false;
    return true;
  }

  /** Whether any process of the task's group is left (safe to signal -pgid). */
  private groupAlive(st: ProcessState): boolean {
    if (st.pid <= 1) return false;
    if (this.wrapperAlive(st)) return true;
    if (!signalExists(-st.pid)) return false;
    if (!hasProc) return !signalExists(st.pid);
    const s = readProcStat(st.pid);
    // If a process holds the pid, the group is ours only if that process is our (zombie) wrapper;
    // if none does, a group with that id can only be the remains of ours.
    if (s && (st.procStart === null || s.startTicks !== st.procStart)) return false;
    return groupMembers(st.pid).length > 0;
  }

  private signalGroup(st: ProcessState, sig: NodeJS.Signals): void {
    if (st.pid <= 1) return; // -0 / -1 would be our own group / every process
    try {
      process.kill(-st.pid, sig);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }

  /** exit.json if the driver (or a v1 supervisor) wrote one, else the wrapper's exit.code. */
  private async exitRecord(dir: string, st: ProcessState): Promise<ExitRecord | undefined> {
    const ex = await readJson<ExitRecord>(join(dir, 'exit.json'));
    if (ex || st.v !== 2) return ex;
    const code = await readExitCode(join(dir, 'exit.code'));
    // a file time may lag the clock by a tick: never report an exit before the start
    if (code) code.exitedAtMs = Math.max(code.exitedAtMs, st.startedAtMs);
    return code;
  }

  async inspect(taskId: string): Promise<TaskStatus | undefined> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (!st) return undefined;
    this.attach(dir, st);
    let ex = await this.exitRecord(dir, st);
    if (!ex) {
      if (this.wrapperAlive(st)) return { taskId, state: 'running', exitCode: null, startedAtMs: st.startedAtMs, ...(st.gpus ? { gpus: st.gpus } : {}) };
      // the wrapper writes its record before it exits: read again now that it is gone
      ex = await this.exitRecord(dir, st);
      if (!ex) {
        ex = {
          exitCode: null,
          signal: null,
          exitedAtMs: Date.now(),
          reason: st.stopRequestedAtMs !== undefined ? 'killed (stop timeout)' : 'lost: the task wrapper ended without recording an exit code',
        };
        await writeFileAtomic(join(dir, 'exit.json'), JSON.stringify(ex));
      }
    }
    // the command ended: let its last output reach output.log before anyone reads it
    await outputOf(dir)?.settle(OUTPUT_SETTLE_MS);
    const status: TaskStatus = { taskId, state: 'exited', exitCode: ex.exitCode, startedAtMs: st.startedAtMs, exitedAtMs: ex.exitedAtMs };
    let reason = ex.reason ?? (ex.signal ? `signal ${ex.signal}` : undefined);
    // killed itself, or a shell whose child was (128 + SIGKILL): was it the OOM killer of the task's cgroup?
    if (st.limits && st.limits.memoryBytes > 0 && (ex.signal === 'SIGKILL' || ex.exitCode === 137)) {
      const cg = this.cgroups();
      if (cg instanceof TaskCgroups && (await cg.oomKilled(taskId))) reason = `out of memory: killed at its limit of ${Math.round(st.limits.memoryBytes / 1024 / 1024)} MiB (resources.memory)`;
    }
    if (reason !== undefined) status.reason = reason;
    return status;
  }

  async stop(taskId: string, timeoutMs: number): Promise<void> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (!st) return;
    this.attach(dir, st); // keeps the output, and lets a wrapper whose command already ended exit
    // A task with its own cgroup: the processes in it are the task's too, also those that left its
    // process group (setsid, a command that daemonises itself); they get the same signals.
    const cg = st.limits ? this.cgroups() : undefined;
    const cgroup = cg instanceof TaskCgroups ? cg : undefined;
    const inCgroup = async () => (cgroup ? await cgroup.pids(taskId) : []);
    const alive = async () => this.groupAlive(st) || (await inCgroup()).length > 0;
    // the group's own processes get the group's signal once; the others of the cgroup their own
    const signal = async (sig: NodeJS.Signals) => {
      this.signalGroup(st, sig);
      cgroup?.signal((await inCgroup()).filter((pid) => readProcStat(pid)?.pgrp !== st.pid), sig);
    };
    if (await alive()) {
      if (st.stopRequestedAtMs === undefined) {
        st.stopRequestedAtMs = Date.now();
        await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(st));
      }
      await signal('SIGTERM');
      const deadline = Date.now() + Math.max(0, timeoutMs);
      while (Date.now() < deadline && (await alive())) await sleep(STOP_POLL_MS);
      if (await alive()) {
        await signal('SIGKILL');
        const killDeadline = Date.now() + KILL_WAIT_MS;
        while (Date.now() < killDeadline && (await alive())) await sleep(STOP_POLL_MS);
      }
    }
    // the wrapper may still be writing its record after its command's group was emptied
    const until = Date.now() + KILL_WAIT_MS;
    while (Date.now() < until && this.wrapperAlive(st)) await sleep(STOP_POLL_MS);
    await this.inspect(taskId);
  }

  async destroy(taskId: string): Promise<void> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (st && this.groupAlive(st)) await this.stop(taskId, DESTROY_STOP_TIMEOUT_MS);
    detachOutput(dir);
    this.cpuSamples.delete(taskId);
    // whether or not the last state names limits (a run that failed between making its cgroup and writing its state)
    await this.removeCgroup(taskId);
    await rm(dir, { recursive: true, force: true });
  }

  async recover(): Promise<TaskStatus[]> {
    let names: string[];
    try {
      names = await readdir(this.tasksDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: TaskStatus[] = [];
    for (const n of names.sort()) {
      if (!TASK_ID_RE.test(n)) continue;
      const s = await this.inspect(n);
      if (s) out.push(s);
    }
    return out;
  }

  async *logs(taskId: string, opts: LogOptions): AsyncIterable<string> {
    const dir = this.taskDir(taskId);
    // also attaches to the output pipes, or waits for the last output of a command that just ended
    if ((await this.inspect(taskId)) === undefined) throw new OmniError('NOT_FOUND', `no process task ${taskId} on this node`);
    const path = join(dir, 'output.log');
    const { sinceMs, tail, signal } = opts;
    const keep = (line: string): string | undefined => {
      const { atMs, text } = parseLogLine(line);
      if (sinceMs !== undefined && atMs !== undefined && atMs < sinceMs) return undefined;
      return opts.stamped ? stampLine(atMs, text) : text;
    };

    // open the rotated file first: if output.log is rotated between the two opens, both handles are
    // the same file, and the rotated one is skipped
    const oldFh = await openIfExists(`${path}.1`);
    let fh = await openIfExists(path);
    const handles = new Set<FileHandle>([oldFh, fh].filter((h): h is FileHandle => h !== undefined));
    try {
      const batch: string[] = [];
      let limit = tail; // only for what is there before following
      const collect = (line: string) => {
        const t = keep(line);
        if (t === undefined) return;
        batch.push(t);
        if (limit !== undefined && batch.length > limit) batch.shift();
      };
      if (oldFh && !(fh && (await oldFh.stat()).ino === (await fh.stat()).ino)) {
        const r = new LineReader(oldFh);
        await r.drain(collect);
        r.flushPartial(collect);
        if (tail === undefined) yield* this.flushBatch(batch);
      }
      let reader = fh ? new LineReader(fh) : undefined;
      if (reader) await reader.drain(collect);
      if (!opts.follow) reader?.flushPartial(collect);
      yield* this.flushBatch(batch);
      if (!opts.follow) return;
      limit = undefined;

      for (;;) {
        if (signal?.aborted) return;
        const exited = (await this.inspect(taskId))?.state !== 'running';
        // rotated (or created) since we opened it: finish the old handle, then switch
        const ino = await stat(path).then((s) => s.ino, () => undefined);
        if (ino !== undefined && (!fh || ino !== (await fh.stat()).ino)) {
          if (reader) {
            await reader.drain(collect);
            reader.flushPartial(collect);
          }
          fh = await openIfExists(path);
          if (fh) handles.add(fh);
          reader = fh ? new LineReader(fh) : undefined;
        }
        if (reader) await reader.drain(collect);
        if (exited) reader?.flushPartial(collect);
        yield* this.flushBatch(batch);
        if (exited) return;
        try {
          await sleep(FOLLOW_POLL_MS, undefined, signal ? { signal } : undefined);
        } catch {
          return; // aborted
        }
      }
    } finally {
      for (const h of handles) await h.close().catch(() => {});
    }
  }

  private *flushBatch(batch: string[]): Iterable<string> {
    const lines = batch.splice(0, batch.length);
    yield* lines;
  }

  async stats(taskId: string): Promise<{ cpuPercent: number; memoryBytes: number } | undefined> {
    if (!hasProc) return undefined;
    const st = await readJson<ProcessState>(join(this.taskDir(taskId), 'state.json'));
    if (!st || !this.wrapperAlive(st)) return undefined;
    const sample = () => {
      let ticks = 0;
      let rss = 0;
      for (const pid of groupMembers(st.pid)) {
        if (pid === st.pid) continue; // the wrapper is Omni's, not the task's
        const s = readProcStat(pid);
        if (!s) continue;
        ticks += s.ticks;
        rss += s.rssPages * PAGE_BYTES;
      }
      return { ticks, rss, atMs: Date.now() };
    };
    let prev = this.cpuSamples.get(taskId);
    if (!prev) {
      const first = sample();
      prev = { ticks: first.ticks, atMs: first.atMs };
      await sleep(100);
    }
    const cur = sample();
    this.cpuSamples.set(taskId, { ticks: cur.ticks, atMs: cur.atMs });
    const elapsedS = (cur.atMs - prev.atMs) / 1000;
    const cpuPercent = elapsedS > 0 ? Math.max(0, ((cur.ticks - prev.ticks) / CLOCK_TICKS_PER_S / elapsedS) * 100) : 0;
    return { cpuPercent, memoryBytes: cur.rss };
  }
}

/** A task's HOME: its own home/ beside a synced workspace (caches and runtime files stay out of the project), else its work/ directory. */
function homeOf(cfg: Pick<TaskConfig, 'workDir'>, dir: string): string {
  return cfg.workDir ? join(dir, 'home') : join(dir, 'work');
}
