// npm run bench:sync — omni sync against rsync, in the same run, for a tree of 5,000 files /
// 200 MB (4,990 files of 8–72 KiB and 10 files of ~8 MiB, random content):
//   initial_sync_s        the first `omni sync --push` of the tree into an empty workspace
//   noop_sync_ms          `omni sync` (two-way) with nothing changed
//   one_file_changed_ms   `omni sync` after one small file changed
// (each of these two: the median of SYNC_BENCH_REPEAT = 5 trials, alternating, for rsync too)
// through the real CLI (bin/omni, one process per sync, like rsync) to node 1 of a 3-node
// loopback cluster (omnid processes; the chunks replicated to R=2 nodes), and the same three with
// Debian's rsync (-a --delete, rsync choosing delta or whole-file transfer itself) against an rsync
// daemon on 127.0.0.1 (started here on a free port, stopped by PID): rsync_initial_s,
// rsync_noop_ms, rsync_one_file_ms, and the ratios (omni / rsync). Also the 1-minute load average
// before and after (2 shared cores: figures are noisy). Last line: JSON.
import { execFile, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';
import { LocalCluster } from '../../node/local-cluster.js';
import { makeTree, waitForCli } from './sync-tree.js';

const run = promisify(execFile);
const log = (s: string) => process.stderr.write(`bench:sync: ${s}\n`);
const round = (n: number, d = 2) => Math.round(n * 10 ** d) / 10 ** d;
const FILES = Number(process.env.SYNC_BENCH_FILES ?? 5000);
/** No-op and one-file syncs are each timed this many times (the median is reported). */
const REPEAT = Math.max(1, Number(process.env.SYNC_BENCH_REPEAT ?? 5));
/** SYNC_BENCH_CPU_PROF_DIR=DIR: the CLI's no-op and one-file syncs write V8 CPU profiles there (--cpu-prof). */
const PROFILE_DIR = process.env.SYNC_BENCH_CPU_PROF_DIR;
/** SYNC_BENCH_NODE_OPTIONS: NODE_OPTIONS for those syncs instead (a tracing --require, say). */
const PROFILE_NODE_OPTIONS = process.env.SYNC_BENCH_NODE_OPTIONS;
/** SYNC_BENCH_OMNID_PROF_DIR=DIR: every omnid writes a V8 CPU profile of the whole run there (--cpu-prof, at its exit). */
const OMNID_PROFILE_DIR = process.env.SYNC_BENCH_OMNID_PROF_DIR;

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** A no-op sync, then one small file rewritten and synced, REPEAT times: the medians of each. */
async function repeated(sync: () => Promise<unknown>, changed: string): Promise<{ noop: number; one: number; noops: number[]; ones: number[] }> {
  const noops: number[] = [];
  const ones: number[] = [];
  for (let i = 0; i < REPEAT; i++) {
    noops.push(await timed(sync));
    await writeFile(changed, randomBytes(16 * 1024));
    ones.push(await timed(sync));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  return { noop: median(noops), one: median(ones), noops, ones };
}

async function main() {
  try {
    await run('rsync', ['--version'], { timeout: 10_000 });
  } catch {
    throw new Error('rsync is not installed: the benchmark compares with it (Debian: apt-get install -y rsync)');
  }
  const work = await mkdtemp(join(tmpdir(), 'omni-bench-sync-'));
  const load0 = loadavg()[0];
  let c: LocalCluster | undefined;
  let rsyncd: ReturnType<typeof spawn> | undefined;
  try {
    const src = join(work, 'src');
    const bytes = await makeTree(src, FILES);
    log(`tree: ${FILES} files, ${round(bytes / 1e6, 1)} MB`);
    // omni
    c = await LocalCluster.create(OMNID_PROFILE_DIR ? { nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${OMNID_PROFILE_DIR}`] } : {});
    await c.init('n1');
    await c.join('n2');
    await c.join('n3');
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('n1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: join(work, 'none.json') };
    const omni = (...args: string[]) => run('bin/omni', ['sync', src, '--app', 'bench', '--json', ...args], { env: profiling ? { ...env, NODE_OPTIONS: PROFILE_NODE_OPTIONS ?? `--cpu-prof --cpu-prof-dir=${PROFILE_DIR}` } : env, timeout: 1_800_000, maxBuffer: 64 * 1024 * 1024 });
    let profiling = false;
    // the cluster formed and the CLI bundle built before timing
    await waitForCli(env, (why) => log(`waiting for the cluster: ${why}`));
    let initialStderr = '';
    // SYNC_BENCH_PROFILE_INITIAL=1: the initial sync is profiled too (into SYNC_BENCH_CPU_PROF_DIR)
    profiling = process.env.SYNC_BENCH_PROFILE_INITIAL === '1' && PROFILE_DIR !== undefined;
    const initial = await timed(async () => {
      initialStderr = (await omni('--push')).stderr;
    });
    // OMNI_SYNC_TRACE=1: where each sync's time went, phase by phase (printed for the initial and the timed syncs)
    if (process.env.OMNI_SYNC_TRACE === '1') log(`initial sync trace:\n${initialStderr.trim()}`);
    log(`omni initial ${round(initial / 1000)} s`);
    const changed = join(src, 'd20', 's6', `f20.dat`);
    profiling = PROFILE_DIR !== undefined || PROFILE_NODE_OPTIONS !== undefined;
    const traced = async () => {
      const r = await omni();
      if (process.env.OMNI_SYNC_TRACE === '1') log(`sync trace:\n${r.stderr.trim()}`);
    };
    const { noop, one, noops, ones } = await repeated(traced, changed);
    profiling = false;
    log(`omni noop ${round(noop)} ms, one file ${round(one)} ms (medians of ${REPEAT}: ${noops.map((x) => round(x, 0)).join(' ')} / ${ones.map((x) => round(x, 0)).join(' ')})`);
    // rsync daemon
    const dest = join(work, 'rsync-dest');
    await mkdir(dest);
    const port = await freePort();
    const conf = join(work, 'rsyncd.conf');
    await writeFile(conf, `use chroot = no\nport = ${port}\naddress = 127.0.0.1\npid file = ${join(work, 'rsyncd.pid')}\n[bench]\npath = ${dest}\nread only = no\nuid = ${process.getuid!()}\ngid = ${process.getgid!()}\n`);
    rsyncd = spawn('rsync', ['--daemon', '--no-detach', `--config=${conf}`], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));
    const rsync = () => run('rsync', ['-a', '--delete', '--exclude=/.omni', `${src}/`, `rsync://127.0.0.1:${port}/bench/`], { timeout: 1_800_000 });
    const rInitial = await timed(rsync);
    const { noop: rNoop, one: rOne, noops: rNoops, ones: rOnes } = await repeated(rsync, changed);
    log(`rsync initial ${round(rInitial / 1000)} s, noop ${round(rNoop)} ms, one file ${round(rOne)} ms (medians of ${REPEAT}: ${rNoops.map((x) => round(x, 0)).join(' ')} / ${rOnes.map((x) => round(x, 0)).join(' ')})`);
    const out = {
      files: FILES,
      mb: round(bytes / 1e6, 1),
      initial_sync_s: round(initial / 1000),
      noop_sync_ms: round(noop, 0),
      one_file_changed_ms: round(one, 0),
      rsync_initial_s: round(rInitial / 1000),
      rsync_noop_ms: round(rNoop, 0),
      rsync_one_file_ms: round(rOne, 0),
      initial_ratio: round(initial / rInitial),
      noop_ratio: round(noop / rNoop),
      one_file_ratio: round(one / rOne),
      loadavg_1m_before: round(load0),
      loadavg_1m_after: round(loadavg()[0]),
    };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    if (rsyncd?.pid) rsyncd.kill('SIGTERM');
    await c?.destroy();
    await rm(work, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench:sync failed: ${(err as Error).stack ?? err}\n`);
  process.exit(1);
});
