// `npm run bench:startup [-- --runs 10]`: what starting the CLI and the daemon costs (issue 13).
// A 3-node omnid cluster on loopback (init + 2 joins, through LocalCluster, i.e. bin/omnid), then:
//   - `bin/omni --help`, `bin/omni version`, `bin/omnid --version`: process start to exit;
//   - `bin/omnid start --help`: the same with all of the daemon's code loaded (the process start-up
//     cost every omnid start pays before its own work);
//   - `bin/omni status` against the running cluster (its config file, as a user would);
//   - a follower stopped (SIGTERM) and started again (`omnid start`): spawn → its "omnid: started"
//     line, and spawn → its API answers `GET /v1/status`.
// Wall-clock figures on whatever else the host runs, and the CPU time the process used (less
// sensitive to a busy host; 10 ms resolution): median and min of N runs. Human lines first, then
// one JSON object as the last line. Linux (/proc, sh's `times`). Never asserted in tests.
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';

const { values } = parseArgs({ options: { runs: { type: 'string' }, restarts: { type: 'string' }, help: { type: 'boolean' } } });
if (values.help) {
  process.stdout.write('usage: npm run bench:startup [-- --runs 10 (CLI runs per figure)] [--restarts 3 (daemon restarts)]\n');
  process.exit(0);
}
const RUNS = Number(values.runs ?? 10);
const RESTARTS = Number(values.restarts ?? 3);
if (!(RUNS >= 1 && RESTARTS >= 1)) throw new Error('--runs and --restarts must be at least 1');

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const OMNI = join(ROOT, 'bin', 'omni');
const OMNID = join(ROOT, 'bin', 'omnid');

interface Sample {
  wallMs: number;
  cpuMs: number;
}

interface Figure {
  medianMs: number;
  minMs: number;
  maxMs: number;
  cpuMedianMs: number;
  cpuMinMs: number;
  runs: number;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)];
}

function figure(samples: Sample[]): Figure {
  const wall = samples.map((x) => x.wallMs);
  const cpu = samples.map((x) => x.cpuMs);
  return { medianMs: Math.round(median(wall)), minMs: Math.round(Math.min(...wall)), maxMs: Math.round(Math.max(...wall)), cpuMedianMs: Math.round(median(cpu)), cpuMinMs: Math.round(Math.min(...cpu)), runs: samples.length };
}

function show(label: string, f: Figure): void {
  const n = (x: number) => String(x).padStart(5);
  console.log(`${label.padEnd(40)} wall median ${n(f.medianMs)} ms (min ${n(f.minMs)}, max ${n(f.maxMs)})  cpu median ${n(f.cpuMedianMs)} ms (min ${n(f.cpuMinMs)})  ${f.runs} runs`);
}

/** sh's `times`, children line ("0m0.090000s 0m0.050000s"): user + system ms. */
function parseTimes(line: string): number {
  const m = /^(\d+)m([\d.]+)s (\d+)m([\d.]+)s$/.exec(line.trim());
  if (!m) throw new Error(`unexpected output of times: ${JSON.stringify(line)}`);
  return (Number(m[1]) * 60 + Number(m[2]) + Number(m[3]) * 60 + Number(m[4])) * 1000;
}

/** One process run (start → exit), through sh to read its CPU time; fails on a non-zero exit. */
function timeRun(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<Sample> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile('sh', ['-c', '"$@"; s=$?; times >&2; exit $s', 'sh', file, ...args], { env, timeout: 60_000 }, (err, _stdout, stderr) => {
      const wallMs = performance.now() - t0;
      if (err) return reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ wallMs, cpuMs: parseTimes(stderr.trimEnd().split('\n').at(-1) ?? '') });
    });
  });
}

async function timeRuns(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Figure> {
  await timeRun(file, args, env); // warm: file cache, a rebuild of a stale dist/
  const samples: Sample[] = [];
  for (let i = 0; i < RUNS; i++) samples.push(await timeRun(file, args, env));
  return figure(samples);
}

/** CPU time (user + system) a running process used so far (/proc/PID/stat, clock ticks of 10 ms). */
function cpuMsOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const c = await LocalCluster.create();
try {
  const help = await timeRuns(OMNI, ['--help']);
  show('omni --help', help);
  const version = await timeRuns(OMNI, ['version']);
  show('omni version', version);
  const omnidVersion = await timeRuns(OMNID, ['--version']);
  show('omnid --version', omnidVersion);
  const omnidLoaded = await timeRuns(OMNID, ['start', '--help']);
  show('omnid start --help (daemon code loaded)', omnidLoaded);

  const t0 = performance.now();
  await c.init('node1');
  await c.join('node2');
  await c.join('node3');
  const formMs = Math.round(performance.now() - t0);
  console.log(`3-node cluster formed (init + 2 joins, one after the other) in ${formMs} ms`);
  const cliEnv = { ...process.env, OMNI_CONFIG: join(c.rootDir, 'omni-cli.json') };
  await waitFor('omni status answers', () => timeRun(OMNI, ['status'], cliEnv).then(() => true), 30_000, 200);
  const status = await timeRuns(OMNI, ['status'], cliEnv);
  show('omni status (3-node cluster)', status);

  const toStarted: Sample[] = [];
  const toApi: Sample[] = [];
  for (let i = 0; i < RESTARTS; i++) {
    await c.kill('node3', 'SIGTERM');
    const t1 = performance.now();
    const node = await c.restart('node3');
    toStarted.push({ wallMs: performance.now() - t1, cpuMs: cpuMsOf(node.proc.pid!) });
    const client = c.client('node3');
    try {
      await waitFor('node3 API answers', () => client.get('/v1/status').then(() => true), 30_000, 10);
    } finally {
      client.close();
    }
    toApi.push({ wallMs: performance.now() - t1, cpuMs: cpuMsOf(node.proc.pid!) });
  }
  const started = figure(toStarted);
  const api = figure(toApi);
  show('omnid start: spawn → "omnid: started"', started);
  show('omnid start: spawn → API answers', api);
  console.log(
    JSON.stringify({
      omni_help_ms: help.medianMs,
      omni_version_ms: version.medianMs,
      omnid_version_ms: omnidVersion.medianMs,
      omnid_loaded_ms: omnidLoaded.medianMs,
      omnid_loaded_cpu_ms: omnidLoaded.cpuMedianMs,
      omni_status_ms: status.medianMs,
      omnid_start_to_started_ms: started.medianMs,
      omnid_start_to_api_ms: api.medianMs,
      omnid_start_to_api_cpu_ms: api.cpuMedianMs,
      cluster_form_ms: formMs,
      figures: { help, version, omnidVersion, omnidLoaded, status, started, api },
    }),
  );
} finally {
  await c.destroy();
}
