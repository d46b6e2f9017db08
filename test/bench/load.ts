// Shared by the benchmarks: a keep-alive HTTP client, a closed-loop write load, percentiles,
// /proc readings and a timer for commands (process start to exit).
import { request, Agent } from 'node:http';
import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';

export interface HttpResult {
  status: number;
  body: string;
}

export class Http {
  readonly agent = new Agent({ keepAlive: true, maxSockets: 512 });
  call(url: string, method: string, body: unknown, headers: Record<string, string> = {}, timeoutMs = 5000): Promise<HttpResult> {
    const u = new URL(url);
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        { host: u.hostname, port: Number(u.port), path: u.pathname + u.search, method, agent: this.agent, timeout: timeoutMs, headers: { 'content-type': 'application/json', ...(payload ? { 'content-length': payload.length } : {}), ...headers } },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
          res.on('error', reject);
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', reject);
      req.end(payload);
    });
  }
  close(): void {
    this.agent.destroy();
  }
}

export interface LoadResult {
  writesPerS: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** Operations that succeeded. */
  ops: number;
}

/** `concurrency` workers write back-to-back for `durationMs`, spread round-robin over endpoints. */
export async function writeLoad(endpoints: string[], concurrency: number, durationMs: number, put: (endpoint: string, key: string, value: string) => Promise<void>): Promise<LoadResult> {
  const value = 'v'.repeat(256);
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const deadline = start + durationMs;
  await Promise.all(
    Array.from({ length: concurrency }, async (_, w) => {
      const endpoint = endpoints[w % endpoints.length];
      for (let i = 0; performance.now() < deadline; i++) {
        const key = `bench/${String(w).padStart(3, '0')}/${String(i).padStart(7, '0')}`.slice(0, 16);
        const t = performance.now();
        try {
          await put(endpoint, key, value);
          latencies.push(performance.now() - t);
        } catch {
          errors++;
        }
      }
    }),
  );
  const elapsedS = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  return { writesPerS: Math.round(latencies.length / elapsedS), p50Ms: round(percentile(latencies, 0.5)), p99Ms: round(percentile(latencies, 0.99)), errors, ops: latencies.length };
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/** The median; of an even count, the mean of the two middle values. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** CPU time (user + system, ms) of `pids` and every process under them, from /proc. */
/** The fields of /proc/PID/stat after the command name (field 3, the state, is [0]): `pid` 'self' for this process. */
export function procStatFields(pid: number | 'self'): string[] {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return text.slice(text.lastIndexOf(')') + 2).split(' ');
}

/** The `key: number` lines of a /proc file (status, io: units such as kB dropped). */
export function procKeyNumbers(path: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of readFileSync(path, 'utf8').matchAll(/^(\w+):\s+(\d+)/gm)) out.set(m[1], Number(m[2]));
  return out;
}

export function cpuMsOf(pids: number[]): number {
  const tick = 100; // USER_HZ on Linux
  const stats = new Map<number, { ppid: number; ms: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const f = procStatFields(Number(d));
      stats.set(Number(d), { ppid: Number(f[1]), ms: ((Number(f[11]) + Number(f[12])) * 1000) / tick });
    } catch {
      // gone meanwhile
    }
  }
  const roots = new Set(pids);
  let ms = 0;
  for (const [pid, s] of stats) {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = stats.get(p)?.ppid ?? 0, hops++) {
      if (roots.has(p)) {
        ms += s.ms;
        break;
      }
    }
  }
  return ms;
}

/** Write system calls (syscw of /proc/PID/io: socket writes and fsyncs' writes alike) made so far by `pids`. */
export function writeSyscallsOf(pids: number[]): number {
  let n = 0;
  for (const pid of pids) {
    try {
      n += procKeyNumbers(`/proc/${pid}/io`).get('syscw') ?? 0;
    } catch {
      // gone, or not readable
    }
  }
  return n;
}

/** Context switches of every thread of these processes so far: voluntary (a thread waited) and involuntary (preempted). */
export function contextSwitchesOf(pids: number[]): { voluntary: number; involuntary: number } {
  const n = { voluntary: 0, involuntary: 0 };
  for (const pid of pids) {
    let tids: string[];
    try {
      tids = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // gone
    }
    for (const tid of tids) {
      try {
        const s = procKeyNumbers(`/proc/${pid}/task/${tid}/status`);
        n.voluntary += s.get('voluntary_ctxt_switches') ?? 0;
        n.involuntary += s.get('nonvoluntary_ctxt_switches') ?? 0;
      } catch {
        // the thread ended
      }
    }
  }
  return n;
}

/** Resident memory of one process in MiB (VmRSS), or NaN when it is gone. */
export function rssMiBOf(pid: number): number {
  try {
    const kb = procKeyNumbers(`/proc/${pid}/status`).get('VmRSS');
    return kb === undefined ? NaN : kb / 1024;
  } catch {
    return NaN;
  }
}

export function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Free TCP ports on 127.0.0.1 (bound then released). */
export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) {
    ports.push(
      await new Promise<number>((resolve, reject) => {
        const srv = createServer();
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', () => {
          const port = (srv.address() as { port: number }).port;
          srv.close(() => resolve(port));
        });
      }),
    );
  }
  return ports;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export function log(line: string): void {
  process.stderr.write(line + '\n');
}

/** One run of a command: wall clock from spawn to exit, and the CPU time it used (10 ms resolution). */
export interface CommandSample {
  wallMs: number;
  cpuMs: number;
}

/** Runs of one command: wall clock and CPU, median and extremes. */
export interface CommandFigure {
  medianMs: number;
  minMs: number;
  maxMs: number;
  cpuMedianMs: number;
  cpuMinMs: number;
  runs: number;
}

export function commandFigure(samples: CommandSample[]): CommandFigure {
  const wall = samples.map((x) => x.wallMs);
  const cpu = samples.map((x) => x.cpuMs);
  return { medianMs: Math.round(median(wall)), minMs: Math.round(Math.min(...wall)), maxMs: Math.round(Math.max(...wall)), cpuMedianMs: Math.round(median(cpu)), cpuMinMs: Math.round(Math.min(...cpu)), runs: samples.length };
}

/** sh's `times`, children line ("0m0.090000s 0m0.050000s"): user + system ms. */
function parseTimes(line: string): number {
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(line.trim());
  if (!m) throw new Error(`unexpected output of times: ${JSON.stringify(line)}`);
  return (Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000;
}

/** One run of `file args` (start to exit), through sh to read its CPU time; fails on a non-zero exit. */
export function timeCommand(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CommandSample> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', '"$@"; s=$?; times >&2; exit $s', 'sh', file, ...args], { env, timeout: 60_000 }, (err, _stdout, stderr) => {
      const wallMs = performance.now() - t0;
      if (err) return reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ wallMs, cpuMs: parseTimes(stderr.trimEnd().split('\n').at(-1) ?? '') });
    });
  });
}

/** Runs of `file args` in one batch, started one after another by one sh (as from a user's shell). */
export const RUNS_PER_BATCH = 5;

/**
 * One batch: sh runs the command RUNS_PER_BATCH times in a row; the figure is the batch's wall
 * time and its children's CPU time (sh's `times`) divided by the runs. A sample timed from this
 * process instead also counts starting sh from a large Node process (~20-40 ms here: `node -e 0`
 * took 111 ms that way and 70-90 ms from a shell).
 */
export function timeCommandBatch(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<CommandSample> {
  const t0 = performance.now();
  const script = `i=0; while [ $i -lt ${RUNS_PER_BATCH} ]; do "$@" >/dev/null || exit $?; i=$((i+1)); done; times >&2`;
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', script, 'sh', file, ...args], { env, timeout: 120_000 }, (err, _stdout, stderr) => {
      const wallMs = performance.now() - t0;
      if (err) return reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ wallMs: wallMs / RUNS_PER_BATCH, cpuMs: parseTimes(stderr.trimEnd().split('\n').at(-1) ?? '') / RUNS_PER_BATCH });
    });
  });
}

/** `runs` batches of a command (timeCommandBatch: each figure a batch's mean) after one warm-up run (file cache, a rebuild of a stale dist/). */
export async function timeCommands(file: string, args: string[], runs: number, env?: NodeJS.ProcessEnv): Promise<CommandFigure> {
  await timeCommand(file, args, env);
  const samples: CommandSample[] = [];
  for (let i = 0; i < runs; i++) samples.push(await timeCommandBatch(file, args, env));
  return commandFigure(samples);
}
