// `npm run sim -- --seed S` replays one seed (printing its trace on failure);
// `npm run sim -- --seeds N [--from F] [--bug NAME]` runs many and prints a JSON summary last.

import { parseArgs } from 'node:util';
import { ALL_BUGS, type BugName } from '../protocol/raft/types.js';
import { emptyCoverage, runSeed, type Coverage, type SimResult } from './simulation.js';

function usage(): string {
  return `usage: npm run sim -- (--seed S | --seeds N [--from F]) [--bug NAME] [--trace] [--json]
  --seed S     run one seed and print what happened (trace on failure, or always with --trace)
  --seeds N    run seeds F..F+N-1 (F defaults to 1) and print a one-line JSON summary last
  --bug NAME   inject a known bug into the Raft core: ${ALL_BUGS.join(', ')}
  --until-caught  with --bug: stop at the first seed that catches the bug`;
}

function main(): number {
  let args;
  try {
    args = parseArgs({
      options: {
        seed: { type: 'string' },
        seeds: { type: 'string' },
        from: { type: 'string', default: '1' },
        bug: { type: 'string', multiple: true },
        trace: { type: 'boolean', default: false },
        'until-caught': { type: 'boolean', default: false },
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
  const bugs = new Set<BugName>();
  for (const b of args.bug ?? []) {
    if (!(ALL_BUGS as readonly string[]).includes(b)) {
      console.error(`sim: unknown bug "${b}"; known bugs: ${ALL_BUGS.join(', ')}`);
      return 2;
    }
    bugs.add(b as BugName);
  }
  if (args.seed !== undefined) return runOne(parseCount(args.seed, 'seed'), bugs, args.trace);
  if (args.seeds !== undefined) return runMany(parseCount(args.seeds, 'seeds'), parseCount(args.from, 'from'), bugs, args['until-caught']);
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

function runOne(seed: number, bugs: Set<BugName>, trace: boolean): number {
  const r = runSeed(seed, bugs, trace ? 1_000_000 : undefined);
  if (!r.ok) console.log(describeFailure(r));
  else if (trace) console.log(r.trace.join('\n'));
  console.log(JSON.stringify({ seed, ok: r.ok, ops: r.ops, virtual_s: r.virtualMs / 1000, ...r.stats }));
  return r.ok ? 0 : 1;
}

function runMany(count: number, from: number, bugs: Set<BugName>, untilCaught: boolean): number {
  const started = Date.now();
  let violations = 0;
  let livenessFailures = 0;
  let ops = 0;
  let virtualMs = 0;
  let checkTimeouts = 0;
  let ran = 0;
  let firstFailure: SimResult | undefined;
  const coverage = emptyCoverage();
  for (let seed = from; seed < from + count; seed++) {
    const r = runSeed(seed, bugs);
    ran++;
    ops += r.ops;
    for (const k of Object.keys(coverage) as (keyof Coverage)[]) coverage[k] += r.coverage[k];
    virtualMs += r.virtualMs;
    if (r.checkTimedOut) checkTimeouts++;
    if (r.violation) violations++;
    else if (r.livenessFailure) livenessFailures++;
    if (!r.ok) {
      firstFailure ??= r;
      console.log(`seed ${seed}: ${r.violation ? 'VIOLATION' : 'LIVENESS'}: ${(r.violation ?? r.livenessFailure)!.split('\n')[0]}`);
      if (untilCaught) break;
    }
    if (process.stderr.isTTY && seed % 50 === 0) process.stderr.write(`\r${ran}/${count} seeds…`);
  }
  if (process.stderr.isTTY) process.stderr.write('\r');
  if (firstFailure && bugs.size === 0) console.log(describeFailure(firstFailure));
  console.log(
    JSON.stringify({
      seeds: ran,
      violations,
      liveness_failures: livenessFailures,
      ops,
      virtual_s: Math.round(virtualMs / 1000),
      wall_ms: Date.now() - started,
      check_timeouts: checkTimeouts,
      coverage,
      ...(bugs.size > 0 ? { bugs: [...bugs], first_caught_seed: firstFailure?.seed ?? null } : {}),
    }),
  );
  return violations + livenessFailures > 0 ? 1 : 0;
}

process.exitCode = main();
