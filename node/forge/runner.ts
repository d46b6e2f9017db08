// Running one build step (a shell command in a directory) and keeping the end of its log, so a
// failure names the step and shows its last lines. HostRunner runs it on this host with the
// host's runtimes (the same ones scripts/forge-base.sh puts in the runtime bases); a runner that
// starts a container from the base image is listed as unfinished in the README.
import { spawn } from 'node:child_process';
import { OmniError } from '../errors.js';
import type { DevContainer } from '../../protocol/forge/devcontainer.js';

export const LOG_TAIL_LINES = 20;
export const DEFAULT_STEP_TIMEOUT_MS = 30 * 60_000;

export interface StepRequest {
  step: string;
  command: string;
  cwd: string;
  env: Record<string, string>;
  /** The runtime base the step is meant to run in (for a container runner). */
  image?: string;
  /** A build environment (a devcontainer's) to run in instead: an engine-local image. */
  envImage?: string;
  /** The user the step runs as in a container (a devcontainer's remoteUser); root by default. */
  user?: string;
  /** Keep the container the step ran in as an image (its id is returned): the environment of later steps. */
  commit?: boolean;
  signal?: AbortSignal;
  timeoutMs?: number;
}

/** A devcontainer made ready by a runner: the engine-local image and what identifies it (for cache keys). */
export interface BuildEnvironment {
  image: string;
  id: string;
}

export interface StepRunner {
  readonly kind: string;
  /** Resolves with the committed image's id when req.commit. */
  run(req: StepRequest, onLine: (line: string) => void): Promise<void | string>;
  /** Makes a devcontainer's environment ready (runners that run containers only). */
  devEnvironment?(dev: DevContainer, ctx: { dir: string; work: string; signal?: AbortSignal; log: (line: string) => void }): Promise<BuildEnvironment>;
  /** Removes what the runner kept for one build (committed environments). */
  dispose?(): Promise<void>;
}

/** A failed step: its name, exit status and last log lines. */
export class StepFailed extends OmniError {
  constructor(
    readonly step: string,
    readonly exit: string,
    readonly tail: string[],
  ) {
    super('BUILD_FAILED', `step '${step}' failed (${exit})${tail.length ? `; its last ${tail.length} log lines:\n${tail.map((l) => `  | ${l}`).join('\n')}` : ' with no output'}`);
  }
}

/** Splits a byte stream into lines (long lines cut at 4 KiB), keeping the last LOG_TAIL_LINES. */
export class LineTail {
  private partial = '';
  readonly tail: string[] = [];
  constructor(private readonly onLine: (line: string) => void) {}
  push(chunk: Buffer | string): void {
    this.partial += chunk.toString();
    let i: number;
    while ((i = this.partial.indexOf('\n')) >= 0) {
      this.line(this.partial.slice(0, i));
      this.partial = this.partial.slice(i + 1);
    }
    if (this.partial.length > 4096) {
      this.line(this.partial.slice(0, 4096));
      this.partial = '';
    }
  }
  end(): void {
    if (this.partial) this.line(this.partial);
    this.partial = '';
  }
  private line(l: string): void {
    const s = l.replace(/\r$/, '').slice(0, 4096);
    this.tail.push(s);
    if (this.tail.length > LOG_TAIL_LINES) this.tail.shift();
    this.onLine(s);
  }
}

export class HostRunner implements StepRunner {
  readonly kind = 'host';
  run(req: StepRequest, onLine: (line: string) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const tail = new LineTail(onLine);
      const child = spawn('/bin/sh', ['-c', req.command], {
        cwd: req.cwd,
        // The host's PATH (its runtimes), then the step's environment; HOME inside the work dir so npm/pip caches stay there.
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: req.cwd, ...req.env },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      });
      const kill = () => {
        try {
          if (child.pid) process.kill(-child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      };
      const timer = setTimeout(() => {
        tail.push(`omni forge: step '${req.step}' ran longer than ${(req.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS) / 1000}s; stopped\n`);
        kill();
      }, req.timeoutMs ?? DEFAULT_STEP_TIMEOUT_MS);
      const onAbort = () => kill();
      req.signal?.addEventListener('abort', onAbort, { once: true });
      child.stdout.on('data', (c: Buffer) => tail.push(c));
      child.stderr.on('data', (c: Buffer) => tail.push(c));
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new StepFailed(req.step, `could not start: ${err.message}`, tail.tail));
      });
      child.on('close', (code, sig) => {
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onAbort);
        tail.end();
        if (req.signal?.aborted) return reject(new OmniError('INTERRUPTED', `step '${req.step}' was cancelled`));
        if (code === 0) return resolve();
        reject(new StepFailed(req.step, sig ? `killed by ${sig}` : `exit status ${code}`, tail.tail));
      });
    });
  }
}
