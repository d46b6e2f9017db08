// `npm run bench:cluster`: a 3-node omnid cluster on loopback, and (when `etcd` is on PATH,
// e.g. Debian's etcd-server) a 3-member etcd cluster in the same run with the same workload:
// cold start (the three hosts started together, as etcd's members; also init-then-join; omnid's start-up code cache warmed first, as a host has it from its second daemon start on), writes through the HTTP API at concurrency 1/16/64 (throughput, p50/p99), and
// leader failover (kill -9 → first successful write) over several trials. Both systems get the
// same load generator, keys, values and connections, the leader's endpoint last (c=1 goes through a
// follower in both; see followersFirst); the failover probe gives each attempt
// FAILOVER_ATTEMPT_MS and moves on to the next node (no system is charged a fixed client
// timeout). Also: linearizable reads at c=16, elections (term changes) during the c=64 run,
// CPU ms per 1,000 writes of each system's processes (/proc, over the three write levels), and
// RSS per node after c=64. OMNI_BENCH_NODE_ARGS passes Node flags to every omnid (e.g.
// --cpu-prof --cpu-prof-dir=DIR: profiles are written when the nodes stop).
// Prints a side-by-side table, then one JSON object as the last line. Never asserted in tests.
// Flags: --duration-ms N (per concurrency level, default 5000), --trials N (default 5).
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { EtcdCluster, etcdAvailable } from './etcd-cluster.js';
import { Http, writeLoad, median, round, log, cpuMsOf, rssMiBOf, writeSyscallsOf, timeCommands, type LoadResult } from './load.js';

const { values } = parseArgs({ options: { 'duration-ms': { type: 'string' }, trials: { type: 'string' } } });
const DURATION_MS = Number(values['duration-ms'] ?? 5000);
const TRIALS = Number(values.trials ?? 5);
const LEVELS = [1, 16, 64];
const NAMES = ['b1', 'b2', 'b3'];
/** Per-attempt timeout of the failover probe; a failed attempt moves on to the next node. */
const FAILOVER_ATTEMPT_MS = 300;
const READ_KEY = 'read/probe';
const OMNI = join(import.meta.dirname, '..', '..', 'bin', 'omni');
const CLI_RUNS = 5;

/** Median wall time of `bin/omni ARGS` (process start to exit), after one warm-up run. */
async function cliMs(args: string[], env: NodeJS.ProcessEnv): Promise<number> {
  return (await timeCommands(OMNI, args, CLI_RUNS, env)).medianMs;
}
/** `omni status` against the running cluster (its config file, as a user would) and `omni --help`. */
const cli: { statusMs: number | null; helpMs: number | null; nodeStartMs: number | null } = { statusMs: null, helpMs: null, nodeStartMs: null };
/** omniColdStartInitThenJoin's figure. */
let coldStartInitThenJoinMs: number | null = null;

/** What the benchmark needs from a system under test. */
interface System {
  endpoints(): string[];
  put(endpoint: string, key: string, value: string, timeoutMs?: number): Promise<void>;
  /** A linearizable read of one key. */
  get(endpoint: string, key: string): Promise<void>;
  /** Process ids of the running nodes. */
  pids(): number[];
  /** The highest Raft term any running node reports. */
  term(): Promise<number>;
  leader(): Promise<string | undefined>;
  /** The API endpoint of the node or member `name`. */
  endpointOf(name: string): string | undefined;
  kill(name: string): Promise<unknown>;
  restart(name: string): Promise<void>;
  waitHealthy(): Promise<void>;
}

interface Figures {
  coldStartMs: number;
  load: Record<number, LoadResult>;
  failoverMs: number[];
  readsC16: LoadResult;
  electionsDuringC64: number;
  cpuMsPer1kWrites: number;
  rssMiBAfterC64: number;
  writeSyscallsPerWrite: number;
}

/**
 * The running endpoints with the leader's last, so that the writes at c=1 (one connection, to the
 * first endpoint) go through a follower in both systems — which node that was used to depend on
 * who won the election — and every level spreads its connections over the roles alike.
 */
async function followersFirst(sys: System): Promise<string[]> {
  const eps = sys.endpoints();
  const name = await sys.leader();
  const leader = name === undefined ? undefined : sys.endpointOf(name);
  return leader !== undefined && eps.includes(leader) ? [...eps.filter((e) => e !== leader), leader] : eps;
}

async function measure(sys: System, coldStartMs: number, label: string): Promise<Figures> {
  const load: Record<number, LoadResult> = {};
  const cpuBefore = cpuMsOf(sys.pids());
  const syscwBefore = writeSyscallsOf(sys.pids());
  let electionsDuringC64 = 0;
  let rssMiBAfterC64 = NaN;
  for (const c of LEVELS) {
    log(`${label}: writes at concurrency ${c} for ${DURATION_MS} ms...`);
    const termBefore = await sys.term();
    load[c] = await writeLoad(await followersFirst(sys), c, DURATION_MS, (ep, k, v) => sys.put(ep, k, v));
    if (c === 64) {
      electionsDuringC64 = (await sys.term()) - termBefore;
      const rss = sys.pids().map(rssMiBOf);
      rssMiBAfterC64 = round(Math.max(...rss));
      log(`${label}:   RSS per node after c=64: ${rss.map((r) => round(r)).join(', ')} MiB; elections during c=64: ${electionsDuringC64}`);
    }
    log(`${label}:   ${load[c].writesPerS} writes/s, p50 ${load[c].p50Ms} ms, p99 ${load[c].p99Ms} ms, ${load[c].errors} errors`);
  }
  const writes = LEVELS.reduce((n, c) => n + load[c].ops, 0);
  const cpuMsPer1kWrites = round((cpuMsOf(sys.pids()) - cpuBefore) / (writes / 1000));
  const writeSyscallsPerWrite = round((writeSyscallsOf(sys.pids()) - syscwBefore) / writes, 2);
  log(`${label}: ${cpuMsPer1kWrites} CPU ms per 1,000 writes, ${writeSyscallsPerWrite} write system calls per write (all nodes)`);
  await sys.put(sys.endpoints()[0], READ_KEY, 'v'.repeat(256));
  log(`${label}: linearizable reads at concurrency 16 for ${DURATION_MS} ms...`);
  const readsC16 = await writeLoad(await followersFirst(sys), 16, DURATION_MS, (ep) => sys.get(ep, READ_KEY));
  log(`${label}:   ${readsC16.writesPerS} reads/s, p50 ${readsC16.p50Ms} ms, p99 ${readsC16.p99Ms} ms, ${readsC16.errors} errors`);
  const failoverMs: number[] = [];
  for (let t = 1; t <= TRIALS; t++) {
    const leader = await waitFor(`${label} leader`, () => sys.leader(), 30_000, 50);
    await sys.kill(leader);
    const killedAt = performance.now();
    for (let i = 0; ; i++) {
      const eps = sys.endpoints();
      try {
        await sys.put(eps[i % eps.length], `failover/${t}`, 'x', FAILOVER_ATTEMPT_MS);
        break;
      } catch {
        // keep trying until a write succeeds
      }
    }
    failoverMs.push(Math.round(performance.now() - killedAt));
    log(`${label}: failover trial ${t}: killed leader ${leader}, first write after ${failoverMs[failoverMs.length - 1]} ms`);
    await sys.restart(leader);
    await sys.waitHealthy();
  }
  return { coldStartMs, load, failoverMs, readsC16, electionsDuringC64, cpuMsPer1kWrites, rssMiBAfterC64, writeSyscallsPerWrite };
}

/** Status of a node of `c` over `http`. */
async function statusOf(c: LocalCluster, http: Http, name: string): Promise<StatusView> {
  const r = await http.call(`${c.nodes.get(name)!.apiUrl}/v1/status`, 'GET', undefined, { authorization: `Bearer ${c.adminToken}` }, 2000);
  if (r.status !== 200) throw new Error(`status ${r.status}`);
  return JSON.parse(r.body);
}

/** Until the third node's replica shows 3 voters, the root retired and health healthy. */
async function waitFormed(c: LocalCluster, http: Http): Promise<void> {
  await waitFor('omni formed', async () => {
    const s = await statusOf(c, http, NAMES[2]);
    return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
  }, 60_000, 20);
}

/**
 * omnid's start-up code cache (dist/.code-cache: cli/code-cache.ts) as any host has it after its
 * first daemon has run 3 s: one node started, and kept past the write when it found none (the
 * first run after a build). Both cold starts below then start as they do from the second run on.
 */
async function warmCodeCache(nodeArgs: string[] | undefined): Promise<void> {
  const c = await LocalCluster.create({ nodeArgs });
  try {
    await c.init(NAMES[0]);
    const state = /start-up code cache: (\S+)/.exec(c.recentOutput(NAMES[0], 400).join('\n'))?.[1] ?? 'unknown';
    log(`omni: start-up code cache ${state}${state === 'accepted' ? '' : '; the node kept 3.5 s to write one'}`);
    if (state !== 'accepted') await new Promise((r) => setTimeout(r, 3500));
  } finally {
    await c.destroy();
  }
}

/**
 * Cold start the other way, reported beside the main figure: omnid init, and once it has printed
 * its join command, the two joins at once (two process starts one after the other).
 */
async function omniColdStartInitThenJoin(nodeArgs: string[] | undefined): Promise<number> {
  const t0 = performance.now();
  const c = await LocalCluster.create({ nodeArgs });
  const http = new Http();
  try {
    await c.init(NAMES[0]);
    await Promise.all(NAMES.slice(1).map((n) => c.join(n)));
    await waitFormed(c, http);
    return Math.round(performance.now() - t0);
  } finally {
    http.close();
    await c.destroy();
  }
}

async function omni(): Promise<Figures> {
  const nodeArgs = process.env.OMNI_BENCH_NODE_ARGS?.split(' ').filter(Boolean);
  await warmCodeCache(nodeArgs);
  coldStartInitThenJoinMs = await omniColdStartInitThenJoin(nodeArgs);
  log(`omni: 3-node cluster by init, then two joins: healthy after ${coldStartInitThenJoinMs} ms`);
  const t0 = performance.now();
  const c = await LocalCluster.create({ nodeArgs });
  const http = new Http();
  const status = (name: string) => statusOf(c, http, name);
  try {
    // The three hosts start at the same moment, as etcd's members below do: provisioned
    // together with a join token made in advance (omnid init --join-token; the joins retry
    // until the root answers).
    await c.startTogether(NAMES);
    await waitFormed(c, http);
    const coldStartMs = Math.round(performance.now() - t0);
    log(`omni: 3-node cluster (hosts started together) healthy after ${coldStartMs} ms`);
    const cliEnv = { ...process.env, OMNI_CONFIG: join(c.rootDir, 'omni-cli.json') };
    cli.statusMs = await cliMs(['status'], cliEnv);
    cli.helpMs = await cliMs(['--help'], cliEnv);
    // the floor under both: the project's Node starting and exiting (hosts differ 3x in it)
    cli.nodeStartMs = (await timeCommands(join(import.meta.dirname, '..', '..', 'node_modules', '.bin', 'node'), ['-e', '0'], CLI_RUNS, cliEnv)).medianMs;
    log(`omni status: ${cli.statusMs} ms, omni --help: ${cli.helpMs} ms, node -e 0: ${cli.nodeStartMs} ms (median of ${CLI_RUNS})`);
    const auth = { authorization: `Bearer ${c.adminToken}` };
    const sys: System = {
      endpoints: () => c.running().map((n) => n.apiUrl),
      put: async (ep, key, value, timeoutMs = 5000) => {
        const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth, timeoutMs);
        if (r.status !== 200) throw new Error(`omni put: HTTP ${r.status}`);
      },
      get: async (ep, key) => {
        const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'GET', undefined, auth, 5000);
        if (r.status !== 200) throw new Error(`omni get: HTTP ${r.status}`);
      },
      pids: () => c.running().map((n) => n.proc.pid!),
      term: async () => Math.max(0, ...(await Promise.all(c.running().map((n) => status(n.name).then((s) => s.term, () => 0))))),
      leader: async () => {
        for (const n of c.running()) {
          const s = await status(n.name).catch(() => undefined);
          if (s?.leader && c.nodes.get(s.leader)?.running) return s.leader;
        }
        return undefined;
      },
      endpointOf: (name) => c.nodes.get(name)?.apiUrl,
      kill: (name) => c.kill(name),
      restart: async (name) => void (await c.restart(name)),
      waitHealthy: async () =>
        void (await waitFor('omni healthy', async () => {
          const all = await Promise.all(c.running().map((n) => status(n.name).catch(() => undefined)));
          return all.length === 3 && all.every((s) => s && s.health === 'healthy' && s.leader);
        }, 60_000, 50)),
    };
    return await measure(sys, coldStartMs, 'omni');
  } finally {
    http.close();
    await c.destroy();
  }
}

async function etcd(): Promise<Figures | undefined> {
  if (!etcdAvailable()) {
    log('etcd: not on PATH (apt-get install etcd-server to compare); etcd figures are null');
    return undefined;
  }
  const t0 = performance.now();
  const e = await EtcdCluster.start();
  try {
    await e.waitHealthy();
    const coldStartMs = Math.round(performance.now() - t0);
    log(`etcd: 3-member cluster healthy after ${coldStartMs} ms`);
    return await measure(
      {
        endpoints: () => e.endpoints(),
        put: (ep, k, v, t) => e.put(ep, k, v, t),
        get: (ep, k) => e.get(ep, k),
        pids: () => e.members.map((m) => e.pid(m.name)).filter((p): p is number => p !== undefined),
        term: async () => Math.max(0, ...(await Promise.all(e.endpoints().map((ep) => e.status(ep).then((s) => s.raftTerm, () => 0))))),
        leader: () => e.leader(),
        endpointOf: (name) => e.endpointOf(name),
        kill: (n) => e.kill(n), restart: async (n) => e.restart(n), waitHealthy: () => e.waitHealthy() },
      coldStartMs,
      'etcd',
    );
  } finally {
    await e.stop();
  }
}

const o = await omni();
const et = await etcd();

const ratio = (a: number | undefined, b: number | undefined) => (a && b ? round(a / b, 2) : null);
const rows: string[][] = [['metric', 'omni', 'etcd', 'omni/etcd']];
for (const c of LEVELS) {
  rows.push([`writes/s c=${c}`, String(o.load[c].writesPerS), String(et?.load[c].writesPerS ?? '-'), String(ratio(o.load[c].writesPerS, et?.load[c].writesPerS) ?? '-')]);
  rows.push([`p50 ms c=${c}`, String(o.load[c].p50Ms), String(et?.load[c].p50Ms ?? '-'), String(ratio(o.load[c].p50Ms, et?.load[c].p50Ms) ?? '-')]);
  rows.push([`p99 ms c=${c}`, String(o.load[c].p99Ms), String(et?.load[c].p99Ms ?? '-'), String(ratio(o.load[c].p99Ms, et?.load[c].p99Ms) ?? '-')]);
}
rows.push(['failover ms p50', String(median(o.failoverMs)), String(et ? median(et.failoverMs) : '-'), String(ratio(median(o.failoverMs), et && median(et.failoverMs)) ?? '-')]);
rows.push(['failover ms max', String(Math.max(...o.failoverMs)), String(et ? Math.max(...et.failoverMs) : '-'), '']);
rows.push(['reads/s c=16 (linearizable)', String(o.readsC16.writesPerS), String(et?.readsC16.writesPerS ?? '-'), String(ratio(o.readsC16.writesPerS, et?.readsC16.writesPerS) ?? '-')]);
rows.push(['read p99 ms c=16', String(o.readsC16.p99Ms), String(et?.readsC16.p99Ms ?? '-'), String(ratio(o.readsC16.p99Ms, et?.readsC16.p99Ms) ?? '-')]);
rows.push(['elections during c=64', String(o.electionsDuringC64), String(et?.electionsDuringC64 ?? '-'), '']);
rows.push(['CPU ms per 1k writes', String(o.cpuMsPer1kWrites), String(et?.cpuMsPer1kWrites ?? '-'), String(ratio(o.cpuMsPer1kWrites, et?.cpuMsPer1kWrites) ?? '-')]);
rows.push(['write syscalls per write', String(o.writeSyscallsPerWrite), String(et?.writeSyscallsPerWrite ?? '-'), String(ratio(o.writeSyscallsPerWrite, et?.writeSyscallsPerWrite) ?? '-')]);
rows.push(['RSS MiB after c=64 (max node)', String(o.rssMiBAfterC64), String(et?.rssMiBAfterC64 ?? '-'), String(ratio(o.rssMiBAfterC64, et?.rssMiBAfterC64) ?? '-')]);
rows.push(['omni status / --help ms', `${cli.statusMs} / ${cli.helpMs}`, '-', '']);
rows.push(['node -e 0 ms (the floor)', String(cli.nodeStartMs), '-', '']);
rows.push(['cold start ms (started together)', String(o.coldStartMs), String(et?.coldStartMs ?? '-'), String(ratio(o.coldStartMs, et?.coldStartMs) ?? '-')]);
rows.push(['cold start ms (init, then joins)', String(coldStartInitThenJoinMs), '-', '']);
const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
console.log(`3 nodes on loopback; ${DURATION_MS} ms per concurrency level; ${TRIALS} failover trials; 16-byte keys, 256-byte values`);
for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  '));

const summary: Record<string, number | null> = {};
for (const c of LEVELS) {
  summary[`omni_writes_per_s_c${c}`] = o.load[c].writesPerS;
  summary[`etcd_writes_per_s_c${c}`] = et?.load[c].writesPerS ?? null;
  summary[`omni_p50_ms_c${c}`] = o.load[c].p50Ms;
  summary[`omni_p99_ms_c${c}`] = o.load[c].p99Ms;
  summary[`etcd_p50_ms_c${c}`] = et?.load[c].p50Ms ?? null;
  summary[`etcd_p99_ms_c${c}`] = et?.load[c].p99Ms ?? null;
}
summary.omni_failover_ms_p50 = median(o.failoverMs);
summary.etcd_failover_ms_p50 = et ? median(et.failoverMs) : null;
summary.omni_failover_ms_max = Math.max(...o.failoverMs);
summary.etcd_failover_ms_max = et ? Math.max(...et.failoverMs) : null;
summary.omni_reads_per_s_c16 = o.readsC16.writesPerS;
summary.etcd_reads_per_s_c16 = et?.readsC16.writesPerS ?? null;
summary.omni_read_p99_ms_c16 = o.readsC16.p99Ms;
summary.etcd_read_p99_ms_c16 = et?.readsC16.p99Ms ?? null;
summary.omni_elections_during_c64 = o.electionsDuringC64;
summary.etcd_elections_during_c64 = et?.electionsDuringC64 ?? null;
summary.omni_cpu_ms_per_1k_writes = o.cpuMsPer1kWrites;
summary.etcd_cpu_ms_per_1k_writes = et?.cpuMsPer1kWrites ?? null;
summary.omni_write_syscalls_per_write = o.writeSyscallsPerWrite;
summary.etcd_write_syscalls_per_write = et?.writeSyscallsPerWrite ?? null;
summary.omni_rss_mib_after_c64 = o.rssMiBAfterC64;
summary.etcd_rss_mib_after_c64 = et?.rssMiBAfterC64 ?? null;
summary.omni_cold_start_ms = o.coldStartMs;
summary.etcd_cold_start_ms = et?.coldStartMs ?? null;
summary.omni_cold_start_init_then_join_ms = coldStartInitThenJoinMs;
summary.cli_status_ms = cli.statusMs;
summary.cli_help_ms = cli.helpMs;
summary.node_start_ms = cli.nodeStartMs;
console.log(JSON.stringify(summary));
