// `npm run bench:startup [-- --runs 10]`: what starting the CLI and the daemon costs (issue 13).
// A 3-node omnid cluster on loopback (init + 2 joins, through LocalCluster, i.e. bin/omnid), then:
//   - `bin/omni --help`, `bin/omni version`, `bin/omnid --version`: process start to exit;
//   - `bin/omni status` against the running cluster (its config file, as a user would);
//   - a follower stopped (SIGTERM) and started again (`omnid start`): spawn → its "omnid: started"
//     line, and spawn → its API answers `GET /v1/status`.
// Wall-clock figures on whatever else the host runs: median and min of N runs. Human lines first,
// then one JSON object as the last line. Never asserted in tests.
import { parseArgs } from 'node:util';
import { execFile } from 'node:child_process';
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

interface Figure {
  medianMs: number;
  minMs: number;
  maxMs: number;
  runs: number;
}

function figure(samples: number[]): Figure {
  const s = [...samples].sort((a, b) => a - b);
  return { medianMs: Math.round(s[Math.floor((s.length - 1) / 2)]), minMs: Math.round(s[0]), maxMs: Math.round(s[s.length - 1]), runs: s.length };
}

function show(label: string, f: Figure): void {
  console.log(`${label.padEnd(44)} median ${String(f.medianMs).padStart(5)} ms  min ${String(f.minMs).padStart(5)}  max ${String(f.maxMs).padStart(5)}  (${f.runs} runs)`);
}

/** Wall time of one process run (start → exit); fails on a non-zero exit. */
function timeRun(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: 60_000 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stderr}`));
      else resolve(performance.now() - t0);
    });
  });
}

async function timeRuns(file: string, args: string[], env?: NodeJS.ProcessEnv): Promise<Figure> {
  await timeRun(file, args, env); // warm: file cache, a rebuild of a stale dist/
  const samples: number[] = [];
  for (let i = 0; i < RUNS; i++) samples.push(await timeRun(file, args, env));
  return figure(samples);
}

const c = await LocalCluster.create();
try {
  const help = await timeRuns(OMNI, ['--help']);
  show('omni --help', help);
  const version = await timeRuns(OMNI, ['version']);
  show('omni version', version);
  const omnidVersion = await timeRuns(OMNID, ['--version']);
  show('omnid --version', omnidVersion);

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

  const toStarted: number[] = [];
  const toApi: number[] = [];
  for (let i = 0; i < RESTARTS; i++) {
    await c.kill('node3', 'SIGTERM');
    const t1 = performance.now();
    await c.restart('node3');
    toStarted.push(performance.now() - t1);
    const client = c.client('node3');
    try {
      await waitFor('node3 API answers', () => client.get('/v1/status').then(() => true), 30_000, 10);
    } finally {
      client.close();
    }
    toApi.push(performance.now() - t1);
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
      omni_status_ms: status.medianMs,
      omnid_start_to_started_ms: started.medianMs,
      omnid_start_to_api_ms: api.medianMs,
      cluster_form_ms: formMs,
      figures: { help, version, omnidVersion, status, started, api },
    }),
  );
} finally {
  await c.destroy();
}
