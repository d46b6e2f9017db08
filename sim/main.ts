// `npm run sim -- --seed S` replays one seed (printing its trace on failure);
// `npm run sim -- --seeds N [--from F] [--bug NAME] [--workers W]` runs many and prints a JSON
// summary last. Seeds are spread over W worker processes (default: one per core); each seed is
// deterministic on its own, so the summary does not depend on W.

import { fork } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { ALL_SIM_BUGS, emptyCoverage, runSeed, type Coverage, type SimBug, type SimResult } from './simulation.js';

function usage(): string {
  return `usage: npm run sim -- (--seed S | --seeds N [--from F]) [--bug NAME] [--trace] [--workers W]
  --seed S     run one seed and print what happened (trace on failure, or always with --trace)
  --seeds N    run seeds F..F+N-1 (F defaults to 1) and print a one-line JSON summary last
  --workers W  processes to run seeds in (default: one per core, ${availableParallelism()} here)
  --bug NAME   inject a known bug (Raft core or apps wiring): ${ALL_SIM_BUGS.join(', ')}
  --until-caught  with --bug: stop at the first seed that catches the bug (one process)`;
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs({
      options: {
        seed: { type: 'string' },
        seeds: { type: 'string' },
        from: { type: 'string', default: '1' },
        bug: { type: 'string', multiple: true },
        trace: { type: 'boolean', default: false },
        workers: { type: 'string' },
        'until-caught': { type: 'boolean', default: false },
        'worker-stride': { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }).values;
  } catch (err) {
    console.error(`sim: ${(err as Error).message}\n${usage()}`);
    return 2;
  }
  if (args.help) {
    console.log(usage());
    return 0;
  }
  const bugs = new Set<SimBug>();
  for (const b of args.bug ?? []) {
    if (!(ALL_SIM_BUGS as readonly string[]).includes(b)) {
      console.error(`sim: unknown bug "${b}"; known bugs: ${ALL_SIM_BUGS.join(', ')}`);
      return 2;
    }
    bugs.add(b as SimBug);
  }
  if (args['worker-stride'] !== undefined) {
    return runWorker(parseCount(args.seeds ?? '0', 'seeds'), parseCount(args.from, 'from'), parseCount(args['worker-stride'], 'worker-stride'), bugs);
  }
  if (args.seed !== undefined) return runOne(parseCount(args.seed, 'seed'), bugs, args.trace);
  if (args.seeds !== undefined) {
    const workers = args['until-caught'] ? 1 : args.workers !== undefined ? Math.max(1, parseCount(args.workers, 'workers')) : availableParallelism();
    return runMany(parseCount(args.seeds, 'seeds'), parseCount(args.from, 'from'), bugs, args['until-caught'], workers);
  }
  console.error(usage());
  return 2;
}

function parseCount(s: string, name: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n) || n < 0) {
    console.error(`sim: --${name} must be a non-negative integer, got "${s}"`);
    process.exit(2);
  }
  return n;
}

function describeFailure(r: SimResult): string {
  return [
    `seed ${r.seed} FAILED: ${r.violation ?? r.livenessFailure}`,
    `knobs: ${JSON.stringify(r.knobs)}`,
    `last ${r.trace.length} events:`,
    ...r.trace.map((l) => `  ${l}`),
    `replay: npm run sim -- --seed ${r.seed}`,
  ].join('\n');
}

async function runOne(seed: number, bugs: Set<SimBug>, trace: boolean): Promise<number> {
  const r = await runSeed(seed, bugs, trace ? 1_000_000 : undefined);
  if (!r.ok) console.log(describeFailure(r));
  else if (trace) console.log(r.trace.join('\n'));
  console.log(JSON.stringify({ seed, ok: r.ok, ops: r.ops, virtual_s: r.virtualMs / 1000, ...r.stats, coverage: r.coverage }));
  return r.ok ? 0 : 1;
}

/** What a worker reports per seed (one JSON line on stdout). */
type SeedLine = Pick<SimResult, 'seed' | 'ok' | 'ops' | 'virtualMs' | 'checkTimedOut' | 'coverage' | 'violation' | 'livenessFailure'>;

/** Runs seeds from, from+stride, … below from+count*stride… (count seeds in all, this worker's share). */
async function runWorker(count: number, from: number, stride: number, bugs: Set<SimBug>): Promise<number> {
  // Errors are made by the thousand (refused proposals, timeouts); their stacks are not needed
  // here: a failing seed is replayed with stacks by --seed.
  Error.stackTraceLimit = 0;
  for (let i = 0; i < count; i++) {
    const r = await runSeed(from + i * stride, bugs);
    const line: SeedLine = { seed: r.seed, ok: r.ok, ops: r.ops, virtualMs: r.virtualMs, checkTimedOut: r.checkTimedOut, coverage: r.coverage };
    if (r.violation) line.violation = r.violation.split('\n')[0];
    if (r.livenessFailure) line.livenessFailure = r.livenessFailure;
    process.stdout.write(`${JSON.stringify(line)}\n`);
  }
  return 0;
}

async function* seedResults(count: number, from: number, bugs: Set<SimBug>, workers: number): AsyncGenerator<SeedLine> {
  if (workers <= 1) {
    for (let seed = from; seed < from + count; seed++) yield await runSeed(seed, bugs);
    return;
  }
  const lines: SeedLine[] = [];
  let wake: (() => void) | undefined;
  let running = 0;
  const failures: string[] = [];
  for (let w = 0; w < Math.min(workers, count); w++) {
    const share = Math.floor((count - w + workers - 1) / workers);
    const argv = ['--seeds', String(share), '--from', String(from + w), '--worker-stride', String(workers), ...[...bugs].flatMap((b) => ['--bug', b])];
    const child = fork(process.argv[1], argv, { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
    running++;
    createInterface({ input: child.stdout! }).on('line', (l) => {
      lines.push(JSON.parse(l) as SeedLine);
      wake?.();
    });
    child.on('exit', (code) => {
      if (code !== 0) failures.push(`worker ${w} exited with ${code}`);
      running--;
      wake?.();
    });
  }
  for (;;) {
    while (lines.length > 0) yield lines.shift()!;
    if (running === 0) break;
    await new Promise<void>((r) => (wake = r));
  }
  if (failures.length > 0) throw new Error(failures.join('; '));
}

async function runMany(count: number, from: number, bugs: Set<SimBug>, untilCaught: boolean, workers: number): Promise<number> {
  const started = Date.now();
  let violations = 0;
  let livenessFailures = 0;
  let ops = 0;
  let virtualMs = 0;
  let checkTimeouts = 0;
  let ran = 0;
  let firstFailure: SeedLine | undefined;
  const coverage = emptyCoverage();
  for await (const r of seedResults(count, from, bugs, workers)) {
    ran++;
    ops += r.ops;
    for (const k of Object.keys(coverage) as (keyof Coverage)[]) coverage[k] += r.coverage[k];
    virtualMs += r.virtualMs;
    if (r.checkTimedOut) checkTimeouts++;
    if (r.violation) violations++;
    else if (r.livenessFailure) livenessFailures++;
    if (!r.ok) {
      if (!firstFailure || r.seed < firstFailure.seed) firstFailure = r;
      console.log(`seed ${r.seed}: ${r.violation ? 'VIOLATION' : 'LIVENESS'}: ${(r.violation ?? r.livenessFailure)!.split('\n')[0]}`);
      if (untilCaught) break;
    }
    if (process.stderr.isTTY && ran % 50 === 0) process.stderr.write(`\r${ran}/${count} seeds…`);
  }
  if (process.stderr.isTTY) process.stderr.write('\r');
  if (firstFailure && bugs.size === 0) console.log(describeFailure(await runSeed(firstFailure.seed, bugs)));
  console.log(
    JSON.stringify({
      seeds: ran,
      violations,
      liveness_failures: livenessFailures,
      ops,
      virtual_s: Math.round(virtualMs / 1000),
      wall_ms: Date.now() - started,
      workers,
      check_timeouts: checkTimeouts,
      coverage,
      ...(bugs.size > 0 ? { bugs: [...bugs], first_caught_seed: firstFailure?.seed ?? null } : {}),
    }),
  );
  return violations + livenessFailures > 0 ? 1 : 0;
}

process.exitCode = await main();
