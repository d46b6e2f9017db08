// `npm run bench:apps`: (1) deploy latency — `omni run` of a local image on a 3-node loopback
// cluster until its port answers HTTP, against a raw `docker run -p` of the same image in the
// same run (median of 10 each); (2) scheduler throughput — 100,000 tasks placed on 5,000
// simulated nodes, in-process; (3) rescheduling — the orchestrator's decision for 1,000 tasks
// whose node was lost (pure reconcile + scheduler), plus the real cluster's time from kill -9
// of a node to its tasks running elsewhere; (4) scale-out — an app of one replica scaled to 20
// until all 20 run, against Docker Swarm's `docker service scale` on the same engine (a
// single-node swarm on the private engine; null when it cannot be started), median of 3 each.
// Prints figures, then one JSON line. Asserts nothing.
// Uses DOCKER_HOST, or starts a private dockerd (scripts/dockerd-private.sh) when it can.
import { execFileSync, execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import Docker from 'dockerode';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { SchedulerState, type SchedNode, type SchedTask } from '../../protocol/apps/scheduler.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import { reconcileApp } from '../../protocol/apps/reconcile.js';
import type { AppRecord, TaskRecord } from '../../protocol/apps/model.js';
import { median, log } from './load.js';

const TRIALS = Number(process.env.BENCH_TRIALS ?? 10);
const SCALE_TRIALS = Number(process.env.BENCH_SCALE_TRIALS ?? 3);
const SCALE_TO = 20;
const run = promisify(execFile);
const IMAGE = 'omni-test/busybox:1';
const HTTPD = ['sh', '-c', 'mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www'];
const GiB = 1024 ** 3;
/** docker-proxy accepts a connection before the app listens and then stalls it: keep probes short (both sides alike). */
const PROBE_TIMEOUT_MS = 100;

function spec(over: Record<string, unknown>): AppSpec {
  const r = validateAppSpec(over);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}

function httpOk(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/', timeout: PROBE_TIMEOUT_MS }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
    req.end();
  });
}

async function untilHttp(port: () => Promise<number | undefined>, timeoutMs = 60_000): Promise<void> {
  await waitFor('HTTP 200', async () => {
    const p = await port();
    return p !== undefined && (await httpOk(p));
  }, timeoutMs, 10);
}

// ------------------------------------------------------------------ scheduler, in-process

function schedulerThroughput(): number {
  const nodes: SchedNode[] = Array.from({ length: 5000 }, (_, i) => ({ id: `node-${String(i).padStart(5, '0')}`, name: `n${i}`, status: 'up', arch: i % 10 === 0 ? 'arm64' : 'amd64', labels: { zone: `z${i % 5}` }, cpu: 32, memoryBytes: 128 * GiB, gpus: i % 50 === 0 ? 4 : 0 }));
  const s = new SchedulerState(nodes, []);
  const specs = Array.from({ length: 1000 }, (_, a) => spec({ name: `app-${a}`, command: ['x'], replicas: 100, ports: [{ name: 'http', port: 80 }], resources: { cpu: [0.1, 0.25, 0.5][a % 3], memoryMB: [64, 256, 512][a % 3] }, antiAffinity: a % 4 === 0, placement: a % 2 ? 'binpack' : 'spread', constraints: a % 7 === 0 ? ['arch==amd64'] : [] }));
  const t0 = performance.now();
  let placed = 0;
  for (let a = 0; a < specs.length; a++) placed += s.place({ app: specs[a].name, version: 1, count: 100, spec: specs[a] }).placements.length;
  const ms = performance.now() - t0;
  log(`scheduler: placed ${placed} of 100000 tasks on 5000 nodes in ${Math.round(ms)} ms`);
  return Math.round(placed / (ms / 1000));
}

function rescheduleDecisionMs(): number {
  const nodes: SchedNode[] = Array.from({ length: 200 }, (_, i) => ({ id: `node-${String(i).padStart(4, '0')}`, name: `n${i}`, status: i === 0 ? 'down' : 'up', arch: 'amd64', labels: {}, cpu: 64, memoryBytes: 256 * GiB, gpus: 0 }));
  const apps = Array.from({ length: 10 }, (_, a) => spec({ name: `svc-${a}`, command: ['x'], replicas: 100, resources: { cpu: 0.1, memoryMB: 64 } }));
  const tasksByApp = apps.map((sp) => Array.from({ length: 100 }, (_, i): TaskRecord => ({ id: `${sp.name}-${i}`, app: sp.name, version: 1, nodeId: 'node-0000', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' })));
  const held: SchedTask[] = [];
  let n = 0;
  const t0 = performance.now();
  const scheduler = new SchedulerState(nodes, held);
  for (let a = 0; a < apps.length; a++) {
    const record: AppRecord = { name: apps[a].name, version: 1, previousVersion: 0, latestVersion: 1, state: 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [] };
    const out = reconcileApp({ app: record, specs: new Map([[1, apps[a]]]), tasks: tasksByApp[a], statuses: new Map(), scheduler, nodes, volumePins: new Map(), nowMs: 1, newTaskId: () => `new-${n++}` });
    if (out.upserts.filter((t) => t.desired === 'run').length !== 100) throw new Error(`app ${a}: not all rescheduled`);
  }
  return Math.round((performance.now() - t0) * 10) / 10;
}

// ------------------------------------------------------------------ docker and the cluster

async function dockerEngine(): Promise<{ docker: Docker; stop: () => void } | undefined> {
  if (process.env.DOCKER_HOST) return { docker: new Docker({ socketPath: process.env.DOCKER_HOST.replace(/^unix:\/\//, '') }), stop: () => undefined };
  try {
    const dir = mkdtempSync('/tmp/omni-bench-dockerd-');
    const out = execFileSync('bash', ['scripts/dockerd-private.sh', 'start', dir], { encoding: 'utf8', timeout: 120_000 });
    const host = out.split('\n').find((l) => l.startsWith('DOCKER_HOST='))!.slice('DOCKER_HOST='.length).trim();
    process.env.DOCKER_HOST = host;
    return {
      docker: new Docker({ socketPath: host.replace(/^unix:\/\//, '') }),
      stop: () => {
        execFileSync('bash', ['scripts/dockerd-private.sh', 'stop', dir], { timeout: 60_000 });
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    log(`docker: no engine (${(err as Error).message.split('\n')[0]}); deploy figures are null`);
    return undefined;
  }
}

async function dockerRunMs(docker: Docker): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < TRIALS; i++) {
    const t0 = performance.now();
    const c = await docker.createContainer({ Image: IMAGE, Cmd: HTTPD, ExposedPorts: { '8080/tcp': {} }, HostConfig: { PortBindings: { '8080/tcp': [{ HostPort: '' }] }, Init: true } });
    await c.start();
    const info = await c.inspect();
    const port = Number(info.NetworkSettings.Ports['8080/tcp']?.[0]?.HostPort);
    await untilHttp(async () => port);
    out.push(Math.round(performance.now() - t0));
    await c.remove({ force: true });
  }
  return out;
}

async function omniRunMs(c: LocalCluster): Promise<number[]> {
  const client = c.client('b1');
  const out: number[] = [];
  try {
    for (let i = 0; i < TRIALS; i++) {
      const name = `bench-${i}`;
      const t0 = performance.now();
      const r = await client.raw('POST', '/v1/apps', { name, image: IMAGE, args: HTTPD, ports: [{ name: 'http', port: 8080 }], resources: { cpu: 0.1, memory: '32M' } });
      if (r.status !== 201) throw new Error(`omni run: ${JSON.stringify(r.body)}`);
      // Like the docker side (which probes once `docker start` returned): probe once the task runs.
      await untilHttp(async () => (await client.get<{ tasks: { hostPorts: number[]; desired: string; state: string }[] }>(`/v1/apps/${name}?stale=true`)).tasks.find((t) => t.desired === 'run' && t.state === 'running')?.hostPorts[0]);
      out.push(Math.round(performance.now() - t0));
      await client.raw('DELETE', `/v1/apps/${name}`);
      // The docker side removes its container before the next trial; so does this side.
      await waitFor('app removed', async () => (await client.raw('GET', `/v1/apps/${name}?stale=true`)).status === 404, 60_000, 20);
    }
  } finally {
    client.close();
  }
  return out;
}

/** omni: an app of 1 replica (docker driver) scaled to SCALE_TO; ms until every replica runs. */
async function omniScaleMs(c: LocalCluster): Promise<number[]> {
  const client = c.client('b1');
  const out: number[] = [];
  type View = { tasks: { desired: string; state: string }[] };
  const running = async (name: string) => (await client.get<View>(`/v1/apps/${name}?stale=true`)).tasks.filter((t) => t.desired === 'run' && t.state === 'running').length;
  try {
    for (let i = 0; i < SCALE_TRIALS; i++) {
      const name = `scale-${i}`;
      const r = await client.raw('POST', '/v1/apps', { name, image: IMAGE, args: HTTPD, replicas: 1, resources: { cpu: 0.01, memory: '16M' } });
      if (r.status !== 201) throw new Error(`omni run: ${JSON.stringify(r.body)}`);
      await waitFor('1 running', async () => (await running(name)) === 1, 60_000, 20);
      const t0 = performance.now();
      const s = await client.raw('POST', `/v1/apps/${name}/scale`, { replicas: SCALE_TO });
      if (s.status >= 300) throw new Error(`omni scale: ${JSON.stringify(s.body)}`);
      await waitFor(`${SCALE_TO} running`, async () => (await running(name)) === SCALE_TO, 120_000, 20);
      out.push(Math.round(performance.now() - t0));
      await client.raw('DELETE', `/v1/apps/${name}`);
      await waitFor('app removed', async () => (await client.raw('GET', `/v1/apps/${name}?stale=true`)).status === 404, 120_000, 50);
    }
  } finally {
    client.close();
  }
  return out;
}

/** Docker Swarm on the same engine: a service of 1 replica scaled to SCALE_TO; ms until every task runs. */
async function swarmScaleMs(): Promise<number[] | undefined> {
  const dk = async (...args: string[]) => (await run('docker', args, { timeout: 120_000, maxBuffer: 8 * 1024 * 1024 })).stdout.trim();
  try {
    await dk('swarm', 'init', '--advertise-addr', '127.0.0.1');
  } catch (err) {
    log(`swarm: cannot start a single-node swarm on this engine (${(err as Error).message.split('\n').slice(-2).join(' ').slice(0, 300)}); swarm figures are null`);
    return undefined;
  }
  const out: number[] = [];
  try {
    const running = async (svc: string) => (await dk('service', 'ps', svc, '--filter', 'desired-state=running', '--format', '{{.CurrentState}}')).split('\n').filter((l) => l.startsWith('Running')).length;
    for (let i = 0; i < SCALE_TRIALS; i++) {
      const svc = `omni-bench-scale-${i}`;
      await dk('service', 'create', '--detach', '--no-resolve-image', '--name', svc, '--replicas', '1', '--limit-memory', '16M', IMAGE, ...HTTPD);
      await waitFor('1 running', async () => (await running(svc)) === 1, 60_000, 20);
      const t0 = performance.now();
      await dk('service', 'scale', '--detach', `${svc}=${SCALE_TO}`);
      await waitFor(`${SCALE_TO} running`, async () => (await running(svc)) === SCALE_TO, 120_000, 20);
      out.push(Math.round(performance.now() - t0));
      await dk('service', 'rm', svc);
      await waitFor('service containers gone', async () => (await dk('ps', '-q', '--filter', `label=com.docker.swarm.service.name=${svc}`)) === '', 120_000, 100);
    }
  } finally {
    await dk('swarm', 'leave', '--force').catch(() => undefined);
  }
  return out;
}

/** Real cluster: kill -9 the node running a 30-task app; time until all 30 run elsewhere. */
async function clusterRescheduleMs(c: LocalCluster): Promise<number> {
  const client = c.client('b1');
  try {
    const app = { name: 'moving', command: ['sleep', '3600'], replicas: 30, resources: { cpu: 0.01, memoryMB: 8 }, driver: 'process' };
    await client.raw('POST', '/v1/apps', app);
    type View = { tasks: { node: string; desired: string; state: string }[] };
    const v = await waitFor('30 running', async () => {
      const x = await client.get<View>('/v1/apps/moving');
      return x.tasks.filter((t) => t.desired === 'run' && t.state === 'running').length === 30 ? x : undefined;
    }, 120_000, 200);
    const counts = new Map<string, number>();
    for (const t of v.tasks) counts.set(t.node, (counts.get(t.node) ?? 0) + 1);
    const victim = [...counts.entries()].filter(([n]) => n !== 'b1').sort((a, b) => b[1] - a[1])[0][0];
    log(`reschedule: killing ${victim}, which runs ${counts.get(victim)} of the 30 tasks`);
    const t0 = performance.now();
    await c.kill(victim);
    await waitFor('moved', async () => {
      const x = await client.get<View>('/v1/apps/moving?stale=true');
      const live = x.tasks.filter((t) => t.desired === 'run');
      return live.length === 30 && live.every((t) => t.node !== victim && t.state === 'running');
    }, 120_000, 50);
    return Math.round(performance.now() - t0);
  } finally {
    client.close();
  }
}

const placementsPerS = schedulerThroughput();
const reschedule1000Ms = rescheduleDecisionMs();
log(`scheduler: ${placementsPerS} placements/s; rescheduling 1000 tasks of a lost node: ${reschedule1000Ms} ms of decision time`);

let omniMs: number[] | undefined;
let dockerMs: number[] | undefined;
let clusterMoveMs: number | undefined;
let omniScale: number[] | undefined;
let swarmScale: number[] | undefined;
const engine = await dockerEngine();
const c = await LocalCluster.create({ flags: ['--down-after-ms', '2000', '--heartbeat-ms', '250'] });
try {
  await c.init('b1');
  await c.join('b2');
  await c.join('b3');
  const client = c.client('b1');
  await waitFor('cluster formed', async () => {
    const s = await client.get<{ voters: string[]; rootRetired: boolean }>('/v1/status');
    return s.voters.length === 3 && s.rootRetired;
  }, 60_000);
  client.close();
  if (engine) {
    dockerMs = await dockerRunMs(engine.docker);
    log(`docker run -p → HTTP 200: ${dockerMs.join(', ')} ms`);
    omniMs = await omniRunMs(c);
    log(`omni run → HTTP 200:      ${omniMs.join(', ')} ms`);
    omniScale = await omniScaleMs(c);
    log(`omni: scale 1 → ${SCALE_TO} replicas until all run: ${omniScale.join(', ')} ms`);
    swarmScale = await swarmScaleMs();
    if (swarmScale) log(`swarm: docker service scale 1 → ${SCALE_TO} until all run: ${swarmScale.join(', ')} ms`);
  }
  clusterMoveMs = await clusterRescheduleMs(c);
  log(`cluster: kill -9 of a node → its tasks running elsewhere: ${clusterMoveMs} ms (down-after 2000 ms)`);
} finally {
  await c.destroy();
  engine?.stop();
}

const omniP50 = omniMs ? median(omniMs) : null;
const dockerP50 = dockerMs ? median(dockerMs) : null;
console.log(`deploy until HTTP 200, median of ${TRIALS}: omni run ${omniP50 ?? '-'} ms, docker run ${dockerP50 ?? '-'} ms, ratio ${omniP50 && dockerP50 ? (omniP50 / dockerP50).toFixed(2) : '-'} (goal ≤ 1.5)`);
console.log(`scheduler: ${placementsPerS} placements/s (100,000 tasks on 5,000 nodes; goal ≥ 10,000/s)`);
console.log(`reschedule 1,000 tasks of a lost node: ${reschedule1000Ms} ms decision time; real 3-node cluster, 30 tasks: ${clusterMoveMs ?? '-'} ms from kill -9`);
const scaleP50 = omniScale ? median(omniScale) : null;
const swarmScaleP50 = swarmScale ? median(swarmScale) : null;
console.log(`scale 1 → ${SCALE_TO} replicas until all run, median of ${SCALE_TRIALS}: omni ${scaleP50 ?? '-'} ms, swarm ${swarmScaleP50 ?? '-'} ms (goal < 2000 ms)`);
console.log(JSON.stringify({ scale_1_to_20_ms: scaleP50, swarm_scale_1_to_20_ms: swarmScaleP50, omni_run_ms_p50: omniP50, docker_run_ms_p50: dockerP50, deploy_ratio: omniP50 && dockerP50 ? Math.round((omniP50 / dockerP50) * 100) / 100 : null, placements_per_s: placementsPerS, reschedule_1000_ms: reschedule1000Ms, cluster_reschedule_30_ms: clusterMoveMs ?? null }));
