// Process driver: runs a task's argv as a supervised child on the host (no isolation, no
// resource limits). Each task gets <dataDir>/tasks/<taskId>/ holding:
//   work/           the task's cwd (and HOME unless its env sets one)
//   state.json      the supervisor's pid (= the task's process group) and its start time
//   exit.json       exit code / signal / time, written by the supervisor when the command ends
//   output.log(.1)  stdout+stderr, one line per entry: "<ISO time> <O|E> <text>", rotated at a size limit
//   supervisor.log  the supervisor's own errors
// The supervisor is a small Node program (written to <dataDir>/process-supervisor-v1.cjs) started
// detached, so it leads its own process group and outlives the agent: it timestamps and rotates the
// output and records the exit code, which is how recover() works after the agent restarts.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { mkdir, open, readFile, readdir, rm, stat } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { OmniError } from '../errors.js';
import { writeFileAtomic } from '../files.js';
import type { LogOptions, TaskConfig, TaskDriver, TaskStatus } from './types.js';
import { expandArgv } from '../../protocol/apps/expand.js';

/** output.log is renamed to output.log.1 (replacing it) when it would grow past this. */
export const PROCESS_LOG_MAX_BYTES = 10 * 1024 * 1024;
/** Longer output lines are split. */
const LOG_LINE_MAX_BYTES = 64 * 1024;
/** How long start() waits for the supervisor to report that the command was spawned. */
const READY_TIMEOUT_MS = 10_000;
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
  v: 1;
  taskId: string;
  app: string;
  version: number;
  command: string[];
  /** Supervisor pid; it is also the process group id of the task. */
  pid: number;
  /** Field 22 of /proc/<pid>/stat (start time in ticks since boot), against pid reuse. */
  procStart: string | null;
  bootId: string | null;
  startedAtMs: number;
  stopRequestedAtMs?: number;
}

/** exit.json, written by the supervisor (or by the driver for a lost task). */
interface ExitRecord {
  exitCode: number | null;
  signal: string | null;
  exitedAtMs: number;
  reason?: string;
}

// The supervisor (CommonJS, no dependencies). argv: <taskDir> <maxLogBytes> <lineMaxBytes>.
// It reads and deletes spec.json ({argv, env}; may hold secrets), spawns the command in its own
// process group, reports "ok <pid>" or "err <message>" on stdout, ignores SIGTERM/SIGINT/SIGHUP
// (they are meant for the command), and writes exit.json atomically before it exits.
const SUPERVISOR_SOURCE = String.raw`'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawn } = require('node:child_process');
const [taskDir, maxArg, lineMaxArg] = process.argv.slice(2);
const MAX = Number(maxArg);
const LINE_MAX = Number(lineMaxArg);
const logPath = path.join(taskDir, 'output.log');
for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(s, () => {});
const specPath = path.join(taskDir, 'spec.json');
const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'));
fs.rmSync(specPath, { force: true });
let fd = fs.openSync(logPath, 'a');
let size = fs.fstatSync(fd).size;
function writeAll(buf) {
  let off = 0;
  while (off < buf.length) off += fs.writeSync(fd, buf, off, buf.length - off);
}
function writeLine(tag, text) {
  const buf = Buffer.from(new Date().toISOString() + ' ' + tag + ' ' + text + '\n');
  if (size > 0 && size + buf.length > MAX) {
    fs.closeSync(fd);
    fs.renameSync(logPath, logPath + '.1');
    fd = fs.openSync(logPath, 'a');
    size = 0;
  }
  writeAll(buf);
  size += buf.length;
}
function lineSplitter(tag) {
  let pending = Buffer.alloc(0);
  const emit = (b) => {
    let s = b.toString('utf8');
    if (s.endsWith('\r')) s = s.slice(0, -1);
    writeLine(tag, s);
  };
  return {
    push(chunk) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      let nl;
      while ((nl = pending.indexOf(10)) >= 0) { emit(pending.subarray(0, nl)); pending = pending.subarray(nl + 1); }
      while (pending.length >= LINE_MAX) { emit(pending.subarray(0, LINE_MAX)); pending = pending.subarray(LINE_MAX); }
    },
    flush() { if (pending.length) emit(pending); pending = Buffer.alloc(0); },
  };
}
function writeExit(rec) {
  const p = path.join(taskDir, 'exit.json');
  const tmp = p + '.tmp';
  const f = fs.openSync(tmp, 'w', 0o600);
  fs.writeSync(f, JSON.stringify(rec));
  fs.fsyncSync(f);
  fs.closeSync(f);
  fs.renameSync(tmp, p);
}
function report(line) {
  try { fs.writeSync(1, line + '\n'); } catch {}
}
const child = spawn(spec.argv[0], spec.argv.slice(1), { cwd: path.join(taskDir, 'work'), env: spec.env, stdio: ['ignore', 'pipe', 'pipe'] });
const out = lineSplitter('O');
const err = lineSplitter('E');
let open = 2;
let exited = null;
let done = false;
let startError = null;
function finish() {
  if (done || exited === null) return;
  done = true;
  out.flush();
  err.flush();
  fs.closeSync(fd);
  writeExit(exited);
  if (startError !== null) report('err ' + startError); // after exit.json: the driver reads it next
  process.exit(0);
}
for (const [stream, split] of [[child.stdout, out], [child.stderr, err]]) {
  stream.on('data', (c) => split.push(c));
  stream.on('close', () => { open -= 1; if (open === 0) finish(); });
}
child.on('spawn', () => report('ok ' + child.pid));
child.on('error', (e) => {
  if (exited !== null) return;
  const msg = 'cannot start ' + JSON.stringify(spec.argv[0]) + ': ' + (e && e.message ? e.message : String(e));
  writeLine('E', 'omni: ' + msg);
  exited = { exitCode: 127, signal: null, exitedAtMs: Date.now(), reason: msg };
  startError = msg;
  finish();
});
child.on('exit', (code, signal) => {
  exited = { exitCode: code, signal: signal, exitedAtMs: Date.now() };
  if (signal) exited.reason = 'signal ' + signal;
  // grandchildren may keep the pipes open: do not wait for them for long
  setTimeout(() => { child.stdout.destroy(); child.stderr.destroy(); open = 0; finish(); }, 2000).unref();
  if (open === 0) finish();
});
`;

const SUPERVISOR_FILE = `process-supervisor-v1-${createHash('sha256').update(SUPERVISOR_SOURCE).digest('hex').slice(0, 12)}.cjs`;

/** Env var suffix for a port / volume name: OMNI_PORT_<NAME>. */
export function envSuffix(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9_]/g, '_');
}

interface ProcStat {
  state: string;
  pgrp: number;
  ticks: number;
  startTicks: string;
  rssPages: number;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ..." — comm may hold spaces and parentheses
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    state: f[0],
    pgrp: Number(f[2]),
    ticks: Number(f[11]) + Number(f[12]),
    startTicks: f[19],
    rssPages: Number(f[21]),
  };
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
}

export class ProcessDriver implements TaskDriver {
  readonly name = 'process' as const;
  private readonly tasksDir: string;
  private readonly starting = new Set<string>();
  private supervisorPath: Promise<string> | undefined;
  private readonly cpuSamples = new Map<string, { ticks: number; atMs: number }>();

  private readonly logMaxBytes: number;

  constructor(
    readonly dataDir: string,
    opts: ProcessDriverOptions = {},
  ) {
    this.tasksDir = join(dataDir, 'tasks');
    this.logMaxBytes = opts.logMaxBytes ?? PROCESS_LOG_MAX_BYTES;
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    if (process.platform === 'win32') return { ok: false, reason: 'the process driver needs a POSIX host (process groups)' };
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
      await mkdir(join(dir, 'work'), { recursive: true });
      // state first: a concurrent inspect() must not see the old state without exit.json (it
      // would record the new run as lost)
      await rm(join(dir, 'state.json'), { force: true });
      await rm(join(dir, 'exit.json'), { force: true });
      this.cpuSamples.delete(cfg.taskId);
      const env = this.taskEnv(cfg, dir);
      // $PORT, ${OMNI_PORT_HTTP}... from the task's own env ($$ for a literal $): no shell runs the argv
      await writeFileAtomic(join(dir, 'spec.json'), JSON.stringify({ argv: expandArgv(cfg.command, env), env }));
      return await this.launch(cfg, dir);
    } finally {
      this.starting.delete(cfg.taskId);
    }
  }

  private taskEnv(cfg: TaskConfig, dir: string): Record<string, string> {
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: join(dir, 'work'),
      ...cfg.env,
      OMNI_TASK_ID: cfg.taskId,
    };
    if (cfg.ports.length > 0) env.PORT = String(cfg.ports[0].hostPort);
    for (const p of cfg.ports) env[`OMNI_PORT_${envSuffix(p.name)}`] = String(p.hostPort);
    for (const v of cfg.volumes) env[`OMNI_VOLUME_${envSuffix(v.name)}`] = v.hostPath;
    return env;
  }

  private async launch(cfg: TaskConfig, dir: string): Promise<TaskStatus> {
    const script = await this.ensureSupervisor();
    const errLog = await open(join(dir, 'supervisor.log'), 'a');
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, ['--max-old-space-size=16', '--max-semi-space-size=1', script, dir, String(this.logMaxBytes), String(LOG_LINE_MAX_BYTES)], {
        cwd: dir,
        detached: true, // setsid: the supervisor leads the task's process group and session
        stdio: ['ignore', 'pipe', errLog.fd],
        env: { PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin' },
      });
    } finally {
      await errLog.close();
    }
    const pid = child.pid;
    if (pid === undefined) {
      await new Promise((r) => child.once('error', r));
      throw new OmniError('START_FAILED', `task ${cfg.taskId}: cannot run the supervisor (${process.execPath})`);
    }
    const startedAtMs = Date.now();
    const state: ProcessState = {
      v: 1,
      taskId: cfg.taskId,
      app: cfg.app,
      version: cfg.version,
      command: cfg.command ?? [],
      pid,
      procStart: readProcStat(pid)?.startTicks ?? null,
      bootId: readBootId(),
      startedAtMs,
    };
    await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(state));

    const reply = await new Promise<string>((resolve) => {
      let text = '';
      const timer = setTimeout(() => resolve('err the supervisor did not report within ' + READY_TIMEOUT_MS + ' ms'), READY_TIMEOUT_MS);
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
      child.once('exit', (code, sig) => done(`err the supervisor exited (${sig ?? code}) before starting the command; see ${join(dir, 'supervisor.log')}`));
      child.once('error', (e) => done(`err ${e.message}`));
    });
    child.stdout!.destroy();
    child.unref();
    if (!reply.startsWith('ok ')) {
      const msg = reply.replace(/^err /, '');
      const until = Date.now() + KILL_WAIT_MS;
      while (Date.now() < until && this.supervisorAlive(state)) await sleep(STOP_POLL_MS);
      if (this.groupAlive(state)) this.signalGroup(state, 'SIGKILL');
      await this.inspect(cfg.taskId); // records the exit if the supervisor did not
      throw new OmniError('START_FAILED', `task ${cfg.taskId}: ${msg}`);
    }
    return { taskId: cfg.taskId, state: 'running', exitCode: null, startedAtMs };
  }

  private ensureSupervisor(): Promise<string> {
    this.supervisorPath ??= (async () => {
      const p = join(this.dataDir, SUPERVISOR_FILE);
      const cur = await readFile(p, 'utf8').catch(() => undefined);
      if (cur !== SUPERVISOR_SOURCE) {
        await mkdir(this.dataDir, { recursive: true });
        await writeFileAtomic(p, SUPERVISOR_SOURCE);
      }
      return p;
    })().catch((e: unknown) => {
      this.supervisorPath = undefined;
      throw e;
    });
    return this.supervisorPath;
  }

  /** The supervisor process itself is still ours and alive (not a reused pid, not a zombie). */
  private supervisorAlive(st: ProcessState): boolean {
    if (!signalExists(st.pid)) return false;
    if (!hasProc) return true;
    const s = readProcStat(st.pid);
    if (!s || s.state === 'Z') return false;
    if (st.procStart !== null && s.startTicks !== st.procStart) return false;
    if (st.bootId !== null && readBootId() !== st.bootId) return false;
    return true;
  }

  /** Whether any process of the task's group is left (safe to signal -pgid). */
  private groupAlive(st: ProcessState): boolean {
    if (this.supervisorAlive(st)) return true;
    if (!signalExists(-st.pid)) return false;
    if (!hasProc) return !signalExists(st.pid);
    const s = readProcStat(st.pid);
    // If a process holds the pid, the group is ours only if that process is our (zombie) supervisor;
    // if none does, a group with that id can only be the remains of ours.
    if (s && (st.procStart === null || s.startTicks !== st.procStart)) return false;
    return groupMembers(st.pid).length > 0;
  }

  private signalGroup(st: ProcessState, sig: NodeJS.Signals): void {
    try {
      process.kill(-st.pid, sig);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ESRCH') throw e;
    }
  }

  async inspect(taskId: string): Promise<TaskStatus | undefined> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (!st) return undefined;
    let ex = await readJson<ExitRecord>(join(dir, 'exit.json'));
    if (!ex) {
      if (this.supervisorAlive(st)) return { taskId, state: 'running', exitCode: null, startedAtMs: st.startedAtMs };
      // the supervisor renames exit.json into place before it exits: read again now that it is gone
      ex = await readJson<ExitRecord>(join(dir, 'exit.json'));
      if (!ex) {
        ex = {
          exitCode: null,
          signal: null,
          exitedAtMs: Date.now(),
          reason: st.stopRequestedAtMs !== undefined ? 'killed (stop timeout)' : 'lost: the supervisor ended without recording an exit code',
        };
        await writeFileAtomic(join(dir, 'exit.json'), JSON.stringify(ex));
      }
    }
    const status: TaskStatus = { taskId, state: 'exited', exitCode: ex.exitCode, startedAtMs: st.startedAtMs, exitedAtMs: ex.exitedAtMs };
    const reason = ex.reason ?? (ex.signal ? `signal ${ex.signal}` : undefined);
    if (reason !== undefined) status.reason = reason;
    return status;
  }

  async stop(taskId: string, timeoutMs: number): Promise<void> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (!st) return;
    if (this.groupAlive(st)) {
      if (st.stopRequestedAtMs === undefined) {
        st.stopRequestedAtMs = Date.now();
        await writeFileAtomic(join(dir, 'state.json'), JSON.stringify(st));
      }
      this.signalGroup(st, 'SIGTERM');
      const deadline = Date.now() + Math.max(0, timeoutMs);
      while (Date.now() < deadline && this.groupAlive(st)) await sleep(STOP_POLL_MS);
      if (this.groupAlive(st)) {
        this.signalGroup(st, 'SIGKILL');
        const killDeadline = Date.now() + KILL_WAIT_MS;
        while (Date.now() < killDeadline && this.groupAlive(st)) await sleep(STOP_POLL_MS);
      }
    }
    // the supervisor may still be writing exit.json after its command's group was emptied
    const until = Date.now() + KILL_WAIT_MS;
    while (Date.now() < until && this.supervisorAlive(st)) await sleep(STOP_POLL_MS);
    await this.inspect(taskId);
  }

  async destroy(taskId: string): Promise<void> {
    const dir = this.taskDir(taskId);
    const st = await readJson<ProcessState>(join(dir, 'state.json'));
    if (st && this.groupAlive(st)) await this.stop(taskId, DESTROY_STOP_TIMEOUT_MS);
    this.cpuSamples.delete(taskId);
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
    if (!existsSync(join(dir, 'state.json'))) throw new OmniError('NOT_FOUND', `no process task ${taskId} on this node`);
    const path = join(dir, 'output.log');
    const { sinceMs, tail, signal } = opts;
    const keep = (line: string): string | undefined => {
      const { atMs, text } = parseLogLine(line);
      if (sinceMs !== undefined && atMs !== undefined && atMs < sinceMs) return undefined;
      return text;
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
    if (!st || !this.supervisorAlive(st)) return undefined;
    const sample = () => {
      let ticks = 0;
      let rss = 0;
      for (const pid of groupMembers(st.pid)) {
        if (pid === st.pid) continue; // the supervisor is Omni's, not the task's
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
