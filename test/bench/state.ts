// `npm run bench:state [-- --gib 1 | --quick] [--no-etcd] [--rss-csv FILE]`: state that scales
// (issue 12). A 3-node omnid cluster on loopback takes G GiB of kv writes through the HTTP API
// (half the bytes as 1 MiB values, half as 1 KiB values, concurrency 16, spread over the leader
// and the followers); then a 4th node joins while 1 KiB writes continue at concurrency 16; then
// a follower holding the state is stopped (SIGTERM) and started again. The RSS of every omnid
// process is sampled from /proc every 500 ms for the whole run. When `etcd` is on PATH (Debian:
// etcd-server, etcd-client) a 3-member etcd takes the same load, join (`etcdctl member add
// --learner` + a fresh member: omnid join also adds a non-voter) and restart.
//
// Figures: state_bytes, writes/s of each half, max_rss_mib per node (goal < 512), catchup_ms
// (join started → the new node's applied index ≥ the leader's commit index sampled just
// before), writes_per_s_c16 during the catch-up, restart_ms (spawn → status answers with an
// applied index ≥ the one before the stop; goal < 2000) and restart_empty_ms (the same on an
// empty cluster: the process start-up that any restart pays). Human lines first, then one JSON
// object as the last line. Linux only (/proc). Never asserted in tests.
import { parseArgs } from 'node:util';
import { createInterface } from 'node:readline';
import { appendFileSync, mkdirSync } from 'node:fs';
import { join as joinPath } from 'node:path';
import { execFileSync } from 'node:child_process';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import type { StatusView } from '../../cli/omni/status.js';
import { EtcdCluster, etcdAvailable } from './etcd-cluster.js';
import { Http, log, round } from './load.js';
import { RssSampler, type ProcRef } from './rss.js';
import { FatalWriteError, writeKeys, writeUntilStopped, type Put, type WriteStats } from './state-load.js';

const { values } = parseArgs({
  options: {
    gib: { type: 'string' },
    quick: { type: 'boolean' },
    'no-etcd': { type: 'boolean' },
    concurrency: { type: 'string' },
    'rss-csv': { type: 'string' },
    'trace-gc': { type: 'boolean' },
    logs: { type: 'string' },
    'catchup-timeout-s': { type: 'string' },
    'node-args': { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write(
    'usage: npm run bench:state [-- --gib 1 | --quick (64 MiB)] [--no-etcd] [--concurrency 16] [--rss-csv FILE]\n' +
      '         [--trace-gc (V8 full GCs of every omnid: heap committed / live)] [--node-args="--max-old-space-size=256" (omnid runtime flags, experiments)]\n' +
      '         [--logs DIR (every omnid\'s output, DIR/<node>.log)] [--catchup-timeout-s 900 (under load; then the writes stop and it is timed again)]\n',
  );
  process.exit(0);
}
const MIB = 1024 * 1024;
const GIB = 1024 * MIB;
const TOTAL_BYTES = values.quick ? 64 * MIB : Math.round(Number(values.gib ?? 1) * GIB);
if (!(TOTAL_BYTES >= 2 * MIB)) throw new Error('--gib must be a number of at least 0.002');
const CONCURRENCY = Number(values.concurrency ?? 16);
const BIG_BYTES = 1024 * 1024; // MAX_KV_VALUE_BYTES
const SMALL_BYTES = 1024;
const BIG_COUNT = Math.round(TOTAL_BYTES / 2 / BIG_BYTES);
const SMALL_COUNT = Math.round(TOTAL_BYTES / 2 / SMALL_BYTES);
const BIG_TIMEOUT_MS = 60_000;
const SMALL_TIMEOUT_MS = 10_000;
const RSS_INTERVAL_MS = 500;
const RSS_GOAL_MIB = 512;
const RESTART_GOAL_MS = 2000;
/** How long the join may take while writes continue; then they stop and the catch-up is timed without them. */
const CATCHUP_TIMEOUT_MS = Number(values['catchup-timeout-s'] ?? 900) * 1000;
const CATCHUP_NO_WRITES_TIMEOUT_MS = 30 * 60_000;
const PROGRESS_MS = 15_000;

/** What the benchmark needs from a system under test. */
interface System {
  label: string;
  /** API endpoints of the original members that run. */
  endpoints(): string[];
  put: Put;
  procs(): ProcRef[];
  /** Bytes of state as the system counts it (omni: stateBytes; etcd: dbSize). */
  stateBytes(): Promise<number>;
  /** Bytes of each running member's data dir on disk. */
  diskBytes(): Record<string, number>;
  /** Starts a new member; resolves once it runs (its API known). */
  startJoin(): Promise<void>;
  /** The leader's commit (or revision) first, then whether the new member has reached it. */
  joinCaughtUp(): Promise<{ leader: number; joiner: number } | undefined>;
  /** The current leader's name (for the reader of the RSS figures). */
  leader(): Promise<string>;
  /** A follower among the original members, its applied index, and how to stop/start/check it. */
  restartTarget(): Promise<{ name: string; applied: number }>;
  stop(name: string): Promise<void>;
  start(name: string): Promise<void>;
  appliedOf(name: string): Promise<number>;
}

interface Restart {
  node: string;
  stopMs: number;
  /** spawn → status answers with applied ≥ before. */
  restartMs: number;
  applied: number;
}

interface Figures {
  stateBytes: number;
  diskBytes: Record<string, number>;
  big: WriteStats;
  small: WriteStats;
  join: WriteStats;
  /** undefined: not caught up within CATCHUP_TIMEOUT_MS while the writes continued. */
  catchupMs: number | undefined;
  /** When it did not catch up under load: from stopping the writes to caught up. */
  catchupAfterStopMs: number | undefined;
  leaders: Record<string, string>;
  restartEmpty: Restart;
  restart: Restart;
  maxRssMib: Record<string, number>;
  maxAnonMib: Record<string, number>;
  maxFileMib: Record<string, number>;
  rssByPhase: string[];
  gcByPhase: string[];
}

async function restartOnce(sys: System): Promise<Restart> {
  const { name, applied } = await sys.restartTarget();
  const t0 = performance.now();
  await sys.stop(name);
  const stopMs = Math.round(performance.now() - t0);
  const t1 = performance.now();
  await sys.start(name);
  await waitFor(`${sys.label} ${name} applied ≥ ${applied}`, async () => (await sys.appliedOf(name)) >= applied, 5 * 60_000, 20);
  const restartMs = Math.round(performance.now() - t1);
  log(`${sys.label}: restart of ${name} (applied ${applied}): stopped in ${stopMs} ms, back at applied ≥ ${applied} ${restartMs} ms after spawn`);
  return { node: name, stopMs, restartMs, applied };
}

async function measure(sys: System, rss: RssSampler): Promise<Figures> {
  const note = () => [...rss.last.entries()].map(([n, m]) => `${n} ${Math.round(m.rssKb / 1024)} MiB`).join(', ');
  const load = (valueBytes: number, timeoutMs: number, label: string) => ({ endpoints: () => sys.endpoints(), concurrency: CONCURRENCY, put: sys.put, timeoutMs, valueBytes, label, progressMs: PROGRESS_MS, progressNote: note });

  const leaders: Record<string, string> = {};
  const noteLeader = async (phase: string) => {
    leaders[phase] = await sys.leader().catch(() => '?');
    log(`${sys.label}: ${phase}: leader ${leaders[phase]}`);
  };
  await noteLeader('start');
  rss.phase('restart-empty');
  const restartEmpty = await restartOnce(sys);

  rss.phase('write-1mib');
  log(`${sys.label}: writing ${BIG_COUNT} values of 1 MiB at c=${CONCURRENCY}...`);
  const big = await writeKeys(load(BIG_BYTES, BIG_TIMEOUT_MS, `${sys.label} 1MiB`), BIG_COUNT, (i) => `state/big/${String(i).padStart(7, '0')}`);
  log(`${sys.label}: 1 MiB values: ${big.writesPerS} writes/s (${big.mibPerS} MiB/s), p50 ${big.p50Ms} ms, p99 ${big.p99Ms} ms, in ${big.elapsedMs} ms; retried: ${JSON.stringify(big.retries)}`);

  await noteLeader('after-1mib');
  rss.phase('write-1kib');
  log(`${sys.label}: writing ${SMALL_COUNT} values of 1 KiB at c=${CONCURRENCY}...`);
  const small = await writeKeys(load(SMALL_BYTES, SMALL_TIMEOUT_MS, `${sys.label} 1KiB`), SMALL_COUNT, (i) => `state/small/${String(i).padStart(8, '0')}`);
  log(`${sys.label}: 1 KiB values: ${small.writesPerS} writes/s (${small.mibPerS} MiB/s), p50 ${small.p50Ms} ms, p99 ${small.p99Ms} ms, in ${small.elapsedMs} ms; retried: ${JSON.stringify(small.retries)}`);

  await noteLeader('after-1kib');
  const stateBytes = await sys.stateBytes();
  const diskBytes = sys.diskBytes();
  log(`${sys.label}: state ${round(stateBytes / MIB)} MiB; on disk: ${Object.entries(diskBytes).map(([n, b]) => `${n} ${round(b / MIB)} MiB`).join(', ')}`);

  rss.phase('join');
  log(`${sys.label}: a new member joins while 1 KiB writes continue at c=${CONCURRENCY}...`);
  const writer = writeUntilStopped(load(SMALL_BYTES, SMALL_TIMEOUT_MS, `${sys.label} join load`), (i) => `state/join/${String(i).padStart(8, '0')}`);
  let catchupMs: number | undefined;
  let catchupAfterStopMs: number | undefined;
  let join!: WriteStats;
  let lastNote = performance.now();
  const caughtUp = async () => {
    const s = await sys.joinCaughtUp();
    if (s && performance.now() - lastNote > PROGRESS_MS) {
      lastNote = performance.now();
      log(`${sys.label}: catch-up: leader at ${s.leader}, new member at ${s.joiner}; ${note()}`);
    }
    return s !== undefined && s.joiner >= s.leader;
  };
  try {
    const t0 = performance.now();
    await sys.startJoin();
    log(`${sys.label}: new member running after ${Math.round(performance.now() - t0)} ms; waiting for it to catch up...`);
    try {
      await waitFor(`${sys.label} new member caught up`, caughtUp, Math.max(0, CATCHUP_TIMEOUT_MS - (performance.now() - t0)), 50);
      catchupMs = Math.round(performance.now() - t0);
    } catch (err) {
      log(`${sys.label}: NOT caught up ${Math.round(performance.now() - t0)} ms after the join started while writes continued (${(err as Error).message}); stopping the writes`);
    }
  } finally {
    join = await writer.stop();
  }
  if (catchupMs === undefined) {
    const t1 = performance.now();
    rss.phase('join-no-writes');
    await waitFor(`${sys.label} new member caught up without writes`, caughtUp, CATCHUP_NO_WRITES_TIMEOUT_MS, 50);
    catchupAfterStopMs = Math.round(performance.now() - t1);
    log(`${sys.label}: caught up ${catchupAfterStopMs} ms after the writes stopped`);
  } else {
    log(`${sys.label}: caught up ${catchupMs} ms after the join started`);
  }
  log(`${sys.label}: meanwhile ${join.writesPerS} writes/s at c=${CONCURRENCY} (p50 ${join.p50Ms} ms, p99 ${join.p99Ms} ms); retried: ${JSON.stringify(join.retries)}`);
  await noteLeader('after-join');

  rss.phase('restart');
  const restart = await restartOnce(sys);
  rss.phase('end');
  await rss.sample();

  const maxRssMib: Record<string, number> = {};
  const maxAnonMib: Record<string, number> = {};
  const maxFileMib: Record<string, number> = {};
  for (const [name, byPhase] of rss.max) {
    maxRssMib[name] = rss.maxMib(name)!;
    maxAnonMib[name] = Math.round(Math.max(...[...byPhase.values()].map((p) => p.anonKb)) / 1024);
    maxFileMib[name] = Math.round(Math.max(...[...byPhase.values()].map((p) => p.rss.fileKb)) / 1024);
  }
  for (const m of [maxRssMib, maxAnonMib, maxFileMib]) m.max = Math.max(...Object.values(m));
  return { stateBytes, diskBytes, big, small, join, catchupMs, catchupAfterStopMs, leaders, restartEmpty, restart, maxRssMib, maxAnonMib, maxFileMib, rssByPhase: rss.describe(), gcByPhase: rss.describeGc() };
}

function duBytes(dir: string): number {
  try {
    return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
  } catch {
    return NaN;
  }
}

/** Cleanup to run on Ctrl-C / SIGTERM as well as at the end. */
const cleanups = new Set<() => Promise<void>>();
let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    log(`bench:state: ${sig}: stopping the clusters and removing their data...`);
    void Promise.allSettled([...cleanups].map((f) => f())).then(() => process.exit(130));
  });
}

async function omni(): Promise<Figures> {
  const nodeArgs = [...(values['node-args'] ? values['node-args'].split(' ').filter(Boolean) : []), ...(values['trace-gc'] ? ['--trace-gc', '--trace-gc-ignore-scavenger'] : [])];
  const c = await LocalCluster.create({ nodeArgs });
  const http = new Http();
  const stopAll = async () => {
    http.close();
    await c.destroy();
  };
  cleanups.add(stopAll);
  const rss = new RssSampler(() => c.running().map((n) => ({ name: n.name, pid: n.proc.pid! })), RSS_INTERVAL_MS, values['rss-csv'] ? `${values['rss-csv']}.omni.csv` : undefined);
  const auth = () => ({ authorization: `Bearer ${c.adminToken}` });
  const status = async (name: string, timeoutMs = 5000): Promise<StatusView> => {
    const n = c.nodes.get(name);
    if (!n?.running || !n.apiUrl) throw new Error(`${name} is not running`);
    const r = await http.call(`${n.apiUrl}/v1/status`, 'GET', undefined, auth(), timeoutMs);
    if (r.status !== 200) throw new Error(`status ${r.status}`);
    return JSON.parse(r.body) as StatusView;
  };
  const names = ['b1', 'b2', 'b3'];
  if (values.logs) mkdirSync(values.logs, { recursive: true });
  const watchExit = (name: string) => {
    const n = c.nodes.get(name)!;
    if (values.logs) {
      const file = joinPath(values.logs, `${name}.log`);
      appendFileSync(file, n.lines.map((l) => `${l}\n`).join(''));
      for (const stream of [n.proc.stdout!, n.proc.stderr!]) createInterface({ input: stream }).on('line', (l) => appendFileSync(file, `${l}\n`));
    }
    if (values['trace-gc']) createInterface({ input: n.proc.stdout! }).on('line', (line) => rss.gcLine(name, line));
    void n.exited.then((code) => {
      if (!expectedExit.has(name)) log(`!!! omni ${name} exited (code ${code}); last output:\n${n.lines.slice(-30).join('\n')}`);
    });
  };
  const expectedExit = new Set<string>();
  const leaderName = async (): Promise<string> =>
    waitFor('omni leader', async () => {
      for (const n of names) {
        const s = await status(n).catch(() => undefined);
        if (s?.leader && names.includes(s.leader) && c.nodes.get(s.leader)?.running) return s.leader;
      }
      return undefined;
    }, 60_000, 50);
  try {
    const t0 = performance.now();
    await c.init(names[0]);
    for (const n of names.slice(1)) await c.join(n);
    names.forEach(watchExit);
    rss.start();
    await waitFor('omni formed', async () => {
      const s = await status(names[2]);
      return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
    }, 60_000, 20);
    log(`omni: 3-node cluster healthy after ${Math.round(performance.now() - t0)} ms`);
    const sys: System = {
      label: 'omni',
      endpoints: () => names.filter((n) => c.nodes.get(n)?.running).map((n) => c.nodes.get(n)!.apiUrl),
      put: async (ep, key, value, timeoutMs) => {
        const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value }, auth(), timeoutMs);
        if (r.status === 200) return;
        const msg = `HTTP ${r.status} ${r.body.slice(0, 120).trim()}`;
        if (/QUOTA_EXCEEDED/.test(r.body)) throw new FatalWriteError(`omni put: ${msg}`);
        throw new Error(msg);
      },
      procs: () => c.running().map((n) => ({ name: n.name, pid: n.proc.pid! })),
      stateBytes: async () => (await status(await leaderName())).stateBytes ?? NaN,
      diskBytes: () => Object.fromEntries(c.running().map((n) => [n.name, duBytes(n.dataDir)])),
      startJoin: async () => {
        await c.join('b4');
        watchExit('b4');
      },
      joinCaughtUp: async () => {
        const leader = (await status(await leaderName())).commitIndex;
        const joiner = (await status('b4')).appliedIndex;
        return { leader, joiner };
      },
      restartTarget: async () => {
        const leader = await leaderName();
        const name = names.find((n) => n !== leader && n !== names[0]) ?? names.find((n) => n !== leader)!;
        return { name, applied: (await status(name)).appliedIndex };
      },
      stop: async (name) => {
        expectedExit.add(name);
        await c.kill(name, 'SIGTERM');
      },
      start: async (name) => {
        await c.restart(name);
        expectedExit.delete(name);
        watchExit(name);
      },
      appliedOf: async (name) => (await status(name, 2000)).appliedIndex,
      leader: leaderName,
    };
    return await measure(sys, rss);
  } catch (err) {
    for (const n of c.nodes.values()) log(`--- omni ${n.name} (${n.running ? 'running' : 'exited'}), last output:\n${n.lines.slice(-15).join('\n')}`);
    throw err;
  } finally {
    rss.stop();
    expectedExit.add('b1').add('b2').add('b3').add('b4');
    cleanups.delete(stopAll);
    await stopAll();
  }
}

async function etcd(): Promise<Figures> {
  const e = await EtcdCluster.start({ flags: ['--quota-backend-bytes', String(8 * GIB)] });
  const stopAll = () => e.stop();
  cleanups.add(stopAll);
  const names = ['e1', 'e2', 'e3'];
  const procs = (): ProcRef[] => e.members.flatMap((m) => (e.pid(m.name) ? [{ name: m.name, pid: e.pid(m.name)! }] : []));
  const rss = new RssSampler(procs, RSS_INTERVAL_MS, values['rss-csv'] ? `${values['rss-csv']}.etcd.csv` : undefined);
  const leaderStatus = async () => {
    for (const n of names) {
      if (!e.pid(n)) continue;
      const s = await e.status(e.endpointOf(n)).catch(() => undefined);
      if (s?.isLeader) return s;
    }
    throw new Error('no etcd leader');
  };
  try {
    const t0 = performance.now();
    rss.start();
    await e.waitHealthy();
    log(`etcd: 3-member cluster healthy after ${Math.round(performance.now() - t0)} ms`);
    const sys: System = {
      label: 'etcd',
      endpoints: () => names.filter((n) => e.pid(n)).map((n) => e.endpointOf(n)),
      put: async (ep, key, value, timeoutMs) => {
        try {
          await e.put(ep, key, value, timeoutMs);
        } catch (err) {
          if (/space quota|NOSPACE/i.test((err as Error).message)) throw new FatalWriteError((err as Error).message);
          throw err;
        }
      },
      procs,
      stateBytes: async () => (await leaderStatus()).dbSize,
      diskBytes: () => Object.fromEntries(e.members.filter((m) => e.pid(m.name)).map((m) => [m.name, duBytes(`${e.dir}/${m.name}`)])),
      startJoin: () => e.addMember('e4', true),
      joinCaughtUp: async () => {
        const leader = (await leaderStatus()).revision;
        const joiner = (await e.status(e.endpointOf('e4'))).revision;
        return { leader, joiner };
      },
      restartTarget: async () => {
        const leader = await e.leader();
        const name = names.find((n) => n !== leader && n !== names[0]) ?? names.find((n) => n !== leader)!;
        return { name, applied: (await e.status(e.endpointOf(name))).raftAppliedIndex };
      },
      stop: (name) => e.stopMember(name),
      start: async (name) => e.restart(name),
      appliedOf: async (name) => (await e.status(e.endpointOf(name), 2000)).raftAppliedIndex,
      leader: async () => (await e.leader()) ?? '?',
    };
    return await measure(sys, rss);
  } finally {
    rss.stop();
    cleanups.delete(stopAll);
    await stopAll();
  }
}

const o = await omni();
let et: Figures | undefined;
if (values['no-etcd']) log('etcd: skipped (--no-etcd)');
else if (!etcdAvailable()) log('etcd: not on PATH (apt-get install etcd-server etcd-client to compare); etcd figures are absent');
else et = await etcd();

const nodeArgsNote = values['node-args'] ?? '';
const ratio = (a: number | undefined, b: number | undefined) => (a !== undefined && b ? String(round(a / b, 2)) : '-');
const show = (x: number | undefined) => (x === undefined ? '-' : String(x));
const rowsOf = (f: Figures | undefined) => ({
  state: f && round(f.stateBytes / MIB),
  w1m: f?.big.writesPerS,
  w1mMib: f?.big.mibPerS,
  w1k: f?.small.writesPerS,
  wc16: f?.join.writesPerS,
  catchup: f?.catchupMs,
  catchupAfterStop: f?.catchupAfterStopMs,
  rss: f?.maxRssMib.max,
  anon: f?.maxAnonMib.max,
  restart: f?.restart.restartMs,
  restartEmpty: f?.restartEmpty.restartMs,
});
const ro = rowsOf(o);
const re = rowsOf(et);
const table: string[][] = [
  ['metric', 'omni', 'etcd', 'omni/etcd', 'goal'],
  ['state MiB (omni stateBytes, etcd dbSize)', show(ro.state), show(re.state), ratio(ro.state, re.state), ''],
  ['writes/s, 1 MiB values, c=16', show(ro.w1m), show(re.w1m), ratio(ro.w1m, re.w1m), ''],
  ['MiB/s, 1 MiB values', show(ro.w1mMib), show(re.w1mMib), ratio(ro.w1mMib, re.w1mMib), ''],
  ['writes/s, 1 KiB values, c=16', show(ro.w1k), show(re.w1k), ratio(ro.w1k, re.w1k), ''],
  ['writes/s during catch-up, c=16', show(ro.wc16), show(re.wc16), ratio(ro.wc16, re.wc16), ''],
  ['catch-up of a new member, ms', show(ro.catchup) + (ro.catchupAfterStop !== undefined ? ` (none; ${ro.catchupAfterStop} after writes stopped)` : ''), show(re.catchup) + (re.catchupAfterStop !== undefined ? ` (none; ${re.catchupAfterStop} after writes stopped)` : ''), ratio(ro.catchup, re.catchup), ''],
  ['max RSS of any member, MiB', show(ro.rss), show(re.rss), ratio(ro.rss, re.rss), `< ${RSS_GOAL_MIB}`],
  ['max anonymous RSS, MiB', show(ro.anon), show(re.anon), ratio(ro.anon, re.anon), ''],
  ['restart holding the state, ms', show(ro.restart), show(re.restart), ratio(ro.restart, re.restart), `< ${RESTART_GOAL_MS}`],
  ['restart of an empty member, ms', show(ro.restartEmpty), show(re.restartEmpty), ratio(ro.restartEmpty, re.restartEmpty), ''],
];
const widths = table[0].map((_, i) => Math.max(...table.map((r) => r[i].length)));
console.log(`bench:state: ${round(TOTAL_BYTES / MIB)} MiB written (${BIG_COUNT} × 1 MiB + ${SMALL_COUNT} × 1 KiB) at c=${CONCURRENCY} into 3 members on loopback, then a 4th joins, then a follower restarts`);
for (const r of table) console.log(r.map((cell, i) => cell.padEnd(widths[i])).join('  '));
for (const [label, f] of [['omni', o], ['etcd', et]] as const) {
  if (!f) continue;
  console.log(`${label} max RSS by phase, MiB (anon/file):`);
  for (const line of f.rssByPhase) console.log(`  ${line}`);
  if (f.gcByPhase.length > 0) console.log(`${label} V8 heap by phase, MB committed/live after full GC (--trace-gc):`);
  for (const line of f.gcByPhase) console.log(`  ${line}`);
  console.log(`${label} leaders: ${Object.entries(f.leaders).map(([p, n]) => `${p} ${n}`).join(', ')}`);
  console.log(`${label} on disk after the writes, MiB: ${Object.entries(f.diskBytes).map(([n, b]) => `${n} ${round(b / MIB)}`).join(', ')}`);
}
const goals: string[] = [];
if (o.maxRssMib.max >= RSS_GOAL_MIB) goals.push(`max_rss_mib ${o.maxRssMib.max} ≥ ${RSS_GOAL_MIB}`);
if (o.catchupMs === undefined) goals.push(`the new node did not catch up within ${CATCHUP_TIMEOUT_MS / 1000} s while writes continued`);
if (o.restart.restartMs >= RESTART_GOAL_MS) goals.push(`restart_ms ${o.restart.restartMs} ≥ ${RESTART_GOAL_MS}`);
console.log(goals.length === 0 ? 'goals: met' : `goals missed: ${goals.join('; ')}`);

const summary: Record<string, unknown> = {
  gib: round(TOTAL_BYTES / GIB, 4),
  total_bytes: TOTAL_BYTES,
  concurrency: CONCURRENCY,
  values_1mib: BIG_COUNT,
  values_1kib: SMALL_COUNT,
  state_bytes: o.stateBytes,
  writes_per_s_1mib: o.big.writesPerS,
  writes_per_s_1kib: o.small.writesPerS,
  writes_per_s_c16: o.join.writesPerS,
  catchup_ms: o.catchupMs ?? null,
  ...(o.catchupAfterStopMs !== undefined ? { catchup_after_writes_stopped_ms: o.catchupAfterStopMs } : {}),
  max_rss_mib: o.maxRssMib,
  max_rss_anon_mib: o.maxAnonMib,
  max_rss_file_mib: o.maxFileMib,
  restart_ms: o.restart.restartMs,
  restart_empty_ms: o.restartEmpty.restartMs,
  disk_bytes: o.diskBytes,
  ...(nodeArgsNote ? { omnid_node_args: nodeArgsNote } : {}),
};
if (et) {
  Object.assign(summary, {
    etcd_state_bytes: et.stateBytes,
    etcd_writes_per_s_1mib: et.big.writesPerS,
    etcd_writes_per_s_1kib: et.small.writesPerS,
    etcd_writes_per_s_c16: et.join.writesPerS,
    etcd_catchup_ms: et.catchupMs ?? null,
    ...(et.catchupAfterStopMs !== undefined ? { etcd_catchup_after_writes_stopped_ms: et.catchupAfterStopMs } : {}),
    etcd_max_rss_mib: et.maxRssMib,
    etcd_max_rss_anon_mib: et.maxAnonMib,
    etcd_max_rss_file_mib: et.maxFileMib,
    etcd_restart_ms: et.restart.restartMs,
    etcd_restart_empty_ms: et.restartEmpty.restartMs,
    etcd_disk_bytes: et.diskBytes,
  });
}
console.log(JSON.stringify(summary));
