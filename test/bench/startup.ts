// `npm run bench:startup [-- --runs 10]`: what starting the CLI and the daemon costs (issue 13).
// A 3-node omnid cluster on loopback (init + 2 joins, through LocalCluster, i.e. bin/omnid), then:
//   - `bin/omni --help`, `bin/omni version`, `bin/omnid --version`: process start to exit;
//   - `bin/omnid start --help`: the same with all of the daemon's code loaded (the process start-up
//     cost every omnid start pays before its own work);
//   - `bin/omni status` against the running cluster (its config file, as a user would);
//   - a follower stopped (SIGTERM) and started again (`omnid start`): spawn → its "omnid: started"
//     line, and spawn → its API answers `GET /v1/status`.
//   - `node -e 0` with the same Node: the floor (Node's own start) the CLI's figures sit on.
// Wall-clock figures on whatever else the host runs, and the CPU time the process used (less
// sensitive to a busy host; 10 ms resolution): median and min of N batches, each the mean of
// RUNS_PER_BATCH runs started one after another by one sh (test/bench/load.ts). Human lines first, then
// one JSON object as the last line. Linux (/proc, sh's `times`). Never asserted in tests.
import { parseArgs } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { commandFigure, cpuMsOf, timeCommand, timeCommands, type CommandFigure, type CommandSample } from './load.js';

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

function show(label: string, f: CommandFigure): void {
  const n = (x: number) => String(x).padStart(5);
  console.log(`${label.padEnd(40)} wall median ${n(f.medianMs)} ms (min ${n(f.minMs)}, max ${n(f.maxMs)})  cpu median ${n(f.cpuMedianMs)} ms (min ${n(f.cpuMinMs)})  ${f.runs} runs`);
}

const NODE = join(ROOT, 'node_modules', '.bin', 'node');
const c = await LocalCluster.create();
try {
  const nodeStart = await timeCommands(NODE, ['-e', '0'], RUNS);
  show('node -e 0 (Node alone, the floor)', nodeStart);
  const help = await timeCommands(OMNI, ['--help'], RUNS);
  show('omni --help', help);
  const version = await timeCommands(OMNI, ['version'], RUNS);
  show('omni version', version);
  const omnidVersion = await timeCommands(OMNID, ['--version'], RUNS);
  show('omnid --version', omnidVersion);
  const omnidLoaded = await timeCommands(OMNID, ['start', '--help'], RUNS);
  show('omnid start --help (daemon code loaded)', omnidLoaded);

  const t0 = performance.now();
  await c.init('node1');
  await c.join('node2');
  await c.join('node3');
  const formMs = Math.round(performance.now() - t0);
  console.log(`3-node cluster formed (init + 2 joins, one after the other) in ${formMs} ms`);
  const cliEnv = { ...process.env, OMNI_CONFIG: join(c.rootDir, 'omni-cli.json') };
  await waitFor('omni status answers', () => timeCommand(OMNI, ['status'], cliEnv).then(() => true), 30_000, 200);
  const status = await timeCommands(OMNI, ['status'], RUNS, cliEnv);
  show('omni status (3-node cluster)', status);

  const toStarted: CommandSample[] = [];
  const toApi: CommandSample[] = [];
  for (let i = 0; i < RESTARTS; i++) {
    await c.kill('node3', 'SIGTERM');
    const t1 = performance.now();
    const node = await c.restart('node3');
    toStarted.push({ wallMs: performance.now() - t1, cpuMs: cpuMsOf([node.proc.pid!]) });
    const client = c.client('node3');
    try {
      await waitFor('node3 API answers', () => client.get('/v1/status').then(() => true), 30_000, 10);
    } finally {
      client.close();
    }
    toApi.push({ wallMs: performance.now() - t1, cpuMs: cpuMsOf([node.proc.pid!]) });
  }
  const started = commandFigure(toStarted);
  const api = commandFigure(toApi);
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
      node_start_ms: nodeStart.medianMs,
      omnid_start_to_started_ms: started.medianMs,
      omnid_start_to_api_ms: api.medianMs,
      omnid_start_to_api_cpu_ms: api.cpuMedianMs,
      cluster_form_ms: formMs,
      figures: { nodeStart, help, version, omnidVersion, omnidLoaded, status, started, api },
    }),
  );
} finally {
  await c.destroy();
}
