// `npm run bench:registry`: image distribution over a capped network, omni's peer-to-peer
// registry against a central registry (Debian's `docker-registry`, distribution 2.8).
//
// Eight omnid nodes, each in its own network namespace (test/bench/netlab.ts: veths into a bridge
// on a private 10.x.y.0/24, a `tc` token bucket of --cap-mbit on every host's link, each way).
// An image of about --image-mb MB (random, incompressible layers, an OCI layout this script
// writes) is pushed with skopeo to node n1's /v2/ (its loopback, inside its namespace), then the
// seven other nodes pull it at once: each GETs the manifest and every blob from its own /v2/ on
// its own loopback (the node fetches the pieces from its peers) and reads them fully. The same
// run then starts `docker-registry` in a namespace of its own with the same cap, pushes the same
// kind of image to it, and the seven nodes' namespaces pull from it at once (curl).
//
// Figures: omni_distribute_s and central_distribute_s (first request to last byte on the last
// node), speedup (central / omni), per_host_cap_utilisation (image bytes delivered to the pulling
// nodes / (omni_distribute_s × cap × pulling nodes): 1 is every pulling host's link full all
// the time), single_pull_ratio (one node pulling alone from one holder, omni / central; the
// median of --trials pulls of distinct images), push_s (skopeo copy to n1), and the CPU the
// servers used meanwhile (all nodes share this machine's cores: omni's transfer is encrypted
// twice, pnet and noise, and runs in JavaScript). The last line is one JSON object with these and
// the parameters.
//
// Needs root (namespaces, tc); installs iproute2, curl, skopeo and docker-registry with apt-get when
// one is missing. Flags: --cap-mbit N (50), --image-mb N (50), --nodes N (8), --replicas N (1:
// the push leaves the image on n1 only; 2 would put a second copy on another node first),
// --trials N (3), --settle-s N (5: wait after the cluster is healthy), --echo (node output).
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir, availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { NetLab, labAvailable, sweepAbandonedLabs } from './netlab.js';
import { makeImage, type Image } from './oci-image.js';
import { procStatFields } from './load.js';

const { values } = parseArgs({
  options: {
    'cap-mbit': { type: 'string' },
    'image-mb': { type: 'string' },
    nodes: { type: 'string' },
    replicas: { type: 'string' },
    'settle-s': { type: 'string' },
    trials: { type: 'string' },
    echo: { type: 'boolean' },
  },
});
const CAP_MBIT = Number(values['cap-mbit'] ?? 50);
const IMAGE_MB = Number(values['image-mb'] ?? 50);
const NODES = Number(values.nodes ?? 8);
const REPLICAS = Number(values.replicas ?? 1);
const SETTLE_MS = Number(values['settle-s'] ?? 5) * 1000;
const TRIALS = Number(values.trials ?? 3);
if (!Number.isInteger(TRIALS) || TRIALS < 1 || TRIALS > 9 || !(SETTLE_MS >= 0) || !(CAP_MBIT > 0) || !(IMAGE_MB > 0) || !Number.isInteger(NODES) || NODES < 2 || NODES > 50 || !Number.isInteger(REPLICAS) || REPLICAS < 1) {
  console.error('usage: npm run bench:registry -- [--cap-mbit 50] [--image-mb 50] [--nodes 8] [--replicas 1] [--trials 3] [--settle-s 5] [--echo]');
  process.exit(2);
}
/** A pull that takes longer than this is a failure (the benchmark stops by itself). */
const PULL_TIMEOUT_S = 900;
const REGISTRY_PORT = 5000;
const CENTRAL_OCTET = 100;
const REPO = 'bench/img';

const log = (s: string) => console.log(s);
const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

// ------------------------------------------------------------------ prerequisites

function ensurePackages(): void {
  const need: [string, string][] = [
    ['iproute2', '/usr/sbin/tc'],
    ['curl', '/usr/bin/curl'],
    ['skopeo', '/usr/bin/skopeo'],
    ['docker-registry', '/usr/bin/docker-registry'],
  ];
  const missing = need.filter(([, bin]) => !existsSync(bin) && !existsSync(bin.replace('/usr', ''))).map(([pkg]) => pkg);
  if (missing.length === 0) return;
  if (process.getuid?.() !== 0) throw new Error(`missing ${missing.join(', ')} (apt-get install -y ${missing.join(' ')})`);
  log(`installing ${missing.join(', ')} with apt-get...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env });
  execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: 'ignore', env });
}

// ------------------------------------------------------------------ pulls

/**
 * One node's pull, inside its namespace: the manifest, then every blob at once (as docker pulls
 * layers in parallel), each read to its end with curl. Resolves with the seconds it took.
 */
async function pull(lab: NetLab, host: string, baseUrl: string, repo: string, image: Image, creds?: string): Promise<number> {
  const t0 = performance.now();
  const get = async (path: string, expectBytes: number | undefined, accept?: string) => {
    const out = await lab.run(host, [
      'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code} %{size_download}', '--max-time', String(PULL_TIMEOUT_S),
      ...(creds ? ['-u', creds] : []),
      ...(accept ? ['-H', `Accept: ${accept}`] : []),
      `${baseUrl}/v2/${repo}/${path}`,
    ]);
    const [code, size] = out.trim().split(' ').map(Number);
    if (code !== 200 || (expectBytes !== undefined && size !== expectBytes)) {
      // Once more, to show what the registry says (an error body is small).
      const body = await lab.run(host, ['curl', '-sS', '--max-filesize', '65536', ...(creds ? ['-u', creds] : []), `${baseUrl}/v2/${repo}/${path}`]).catch((e: Error) => e.message);
      throw new Error(`${host}: GET ${path}: HTTP ${code}, ${size} bytes${expectBytes !== undefined ? ` (${expectBytes} expected)` : ''} (curl said ${JSON.stringify(out.slice(0, 200))}): ${body.slice(0, 400)}`);
    }
  };
  await get(`manifests/${image.manifestDigest}`, undefined, 'application/vnd.oci.image.manifest.v1+json');
  await Promise.all(image.blobs.map((b) => get(`blobs/${b.digest}`, b.sizeBytes)));
  return (performance.now() - t0) / 1000;
}

async function pushWithSkopeo(lab: NetLab, host: string, image: Image, dest: string, creds?: string): Promise<number> {
  const t0 = performance.now();
  await lab.run(host, ['skopeo', 'copy', '--quiet', '--dest-tls-verify=false', ...(creds ? ['--dest-creds', creds] : []), `oci:${image.dir}:1`, `docker://${dest}`]);
  return (performance.now() - t0) / 1000;
}

interface Distribution {
  seconds: number;
  perNodeS: Record<string, number>;
  rxBytes: number;
  /** CPU seconds the servers (omnid processes, or docker-registry) used meanwhile. */
  serverCpuS: number;
}

/** CPU seconds (user + system) a process has used so far; 0 once it is gone. */
function cpuSeconds(pid: number | undefined): number {
  try {
    const fields = procStatFields(pid!);
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
  } catch {
    return 0;
  }
}
const CLOCK_TICKS_PER_S = 100;

/** Every puller at once; the time until the last has the whole image, the bytes their links received, the servers' CPU. */
async function distribute(lab: NetLab, pullers: string[], serverPids: (number | undefined)[], pullOne: (host: string) => Promise<number>): Promise<Distribution> {
  const before = pullers.map((h) => lab.counters(h).rxBytes);
  const cpu0 = serverPids.reduce<number>((n, p) => n + cpuSeconds(p), 0);
  const t0 = performance.now();
  const times = await Promise.all(pullers.map((h) => pullOne(h)));
  const seconds = (performance.now() - t0) / 1000;
  const serverCpuS = serverPids.reduce<number>((n, p) => n + cpuSeconds(p), 0) - cpu0;
  const after = pullers.map((h) => lab.counters(h).rxBytes);
  return {
    seconds,
    perNodeS: Object.fromEntries(pullers.map((h, i) => [h, round(times[i])])),
    rxBytes: after.reduce((n, a, i) => n + a - before[i], 0),
    serverCpuS,
  };
}

// ------------------------------------------------------------------ the two systems

interface Images {
  /** One per trial of the single pull (a node that pulled an image holds it: the next trial needs another). */
  singles: Image[];
  dist: Image;
}

/** Median of the single-pull trials: one node pulls each image alone. */
async function singlePulls(label: string, what: string, images: Image[], pullOne: (img: Image) => Promise<number>): Promise<number> {
  const times: number[] = [];
  for (const img of images) {
    const t = await pullOne(img);
    times.push(t);
    log(`${label}: ${what} in ${round(t)} s (${round(mbit(img.totalBytes) / t, 1)} Mbit/s)`);
  }
  return [...times].sort((a, b) => a - b)[Math.floor(times.length / 2)];
}

interface RegistryView {
  transfers: { digest: string; sizeBytes: number; servedBy: Record<string, number>; dropped: Record<string, string>; ok: boolean; badPieces: number }[];
}

interface OmniFigures {
  pushS: number;
  singleS: number;
  dist: Distribution;
  /** Pieces each node served to the others during the distribution. */
  servedPieces: Record<string, number>;
}

async function omni(lab: NetLab, names: string[], images: Images): Promise<OmniFigures> {
  const c = await LocalCluster.create({
    hostOf: (n) => lab.host(n).ip,
    launcherOf: (n) => lab.launcher(n),
    flags: ['--registry', `127.0.0.1:${REGISTRY_PORT}`, '--registry-replicas', String(REPLICAS)],
    echo: values.echo === true,
  });
  // On Ctrl-C the lab kills the nodes; their data dirs go too.
  lab.addCleanup(() => rmSync(c.rootDir, { recursive: true, force: true }));
  try {
    const t0 = performance.now();
    await c.init(names[0]);
    await Promise.all(names.slice(1).map((n) => c.join(n)));
    const client = c.client(names[0]);
    try {
      await waitFor(
        `${names.length} nodes up`,
        async () => {
          const { nodes } = await client.get<{ nodes: { name: string; status: string }[] }>('/v1/nodes');
          return nodes.filter((x) => x.status === 'up').length === names.length;
        },
        120_000,
        250,
      );
    } finally {
      client.close();
    }
    log(`omni: ${names.length} nodes up after ${round((performance.now() - t0) / 1000, 1)} s`);
    // Measure a settled cluster: voters promoted, the root retired, then a moment for the last
    // catch-ups (8 nodes share this machine's cores; a node still joining costs the others CPU).
    await waitFor(
      'a healthy cluster with its root retired',
      async () => {
        const cl = c.client(names[names.length - 1]);
        try {
          const st = await cl.get<{ health: string; rootRetired: boolean }>('/v1/status');
          return st.health === 'healthy' && st.rootRetired;
        } finally {
          cl.close();
        }
      },
      120_000,
      250,
    );
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    const creds = `bench:${c.adminToken}`;
    const dest = (img: string) => `127.0.0.1:${REGISTRY_PORT}/${REPO}:${img}`;
    for (const [i, img] of images.singles.entries()) await pushWithSkopeo(lab, names[0], img, dest(`single${i}`), creds);
    const pushS = await pushWithSkopeo(lab, names[0], images.dist, dest('dist'), creds);
    log(`omni: pushed ${mb(images.dist.totalBytes)} MB to ${names[0]} in ${round(pushS)} s (skopeo copy, --registry-replicas ${REPLICAS})`);
    const local = `http://127.0.0.1:${REGISTRY_PORT}`;
    const singleS = await singlePulls('omni', `${names[1]} alone pulled an image from ${names[0]}`, images.singles, (img) => pull(lab, names[1], local, REPO, img, creds));
    const pullers = names.slice(1);
    const dist = await distribute(lab, pullers, [...c.nodes.values()].map((n) => n.proc.pid), (h) => pull(lab, h, local, REPO, images.dist, creds));
    log(`omni: ${pullers.length} nodes pulled it at once in ${round(dist.seconds)} s (per node: ${Object.entries(dist.perNodeS).map(([h, s]) => `${h} ${s}`).join(', ')})`);
    const servedPieces = await whoServed(c, pullers, images.dist);
    log(`omni: pieces served per node during the distribution: ${Object.entries(servedPieces).map(([h, n]) => `${h} ${n}`).join(', ')}`);
    return { pushS, singleS, dist, servedPieces };
  } catch (err) {
    for (const n of c.nodes.values()) if (!n.running || values.echo) log(`--- ${n.name} (exited: ${!n.running})\n${n.lines.slice(-20).join('\n')}`);
    throw err;
  } finally {
    await c.destroy();
  }
}

/** From every puller's /v1/registry: how many pieces of the distributed image each node served. */
async function whoServed(c: LocalCluster, pullers: string[], image: Image): Promise<Record<string, number>> {
  const ids = new Map<string, string>();
  const client = c.client(pullers[0]);
  try {
    const { nodes } = await client.get<{ nodes: { name: string; id: string }[] }>('/v1/nodes');
    for (const n of nodes) ids.set(n.id, n.name);
  } finally {
    client.close();
  }
  const digests = new Set(image.blobs.map((b) => b.digest));
  const served: Record<string, number> = {};
  for (const h of pullers) {
    const cl = c.client(h);
    try {
      const v = await cl.get<RegistryView>('/v1/registry');
      for (const t of v.transfers) {
        if (!digests.has(t.digest)) continue;
        for (const [peer, n] of Object.entries(t.servedBy)) {
          const name = ids.get(peer) ?? peer.slice(-8);
          served[name] = (served[name] ?? 0) + n;
        }
      }
    } finally {
      cl.close();
    }
  }
  return Object.fromEntries(Object.entries(served).sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true })));
}

interface CentralFigures {
  singleS: number;
  dist: Distribution;
}

async function central(lab: NetLab, names: string[], images: Images, work: string): Promise<CentralFigures> {
  const host = lab.host('central');
  const storage = join(work, 'central-storage');
  await mkdir(storage, { recursive: true });
  const config = join(work, 'central-config.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      'http:',
      `  addr: 0.0.0.0:${REGISTRY_PORT}`,
      '',
    ].join('\n'),
  );
  const proc = lab.spawn('central', ['docker-registry', 'serve', config]);
  try {
    await waitFor('docker-registry up', async () => (await lab.run('central', ['curl', '-sf', '-o', '/dev/null', `http://127.0.0.1:${REGISTRY_PORT}/v2/`]).then(() => true)), 30_000, 200);
    for (const [i, img] of images.singles.entries()) await pushWithSkopeo(lab, 'central', img, `127.0.0.1:${REGISTRY_PORT}/${REPO}:single${i}`);
    await pushWithSkopeo(lab, 'central', images.dist, `127.0.0.1:${REGISTRY_PORT}/${REPO}:dist`);
    const url = `http://${host.ip}:${REGISTRY_PORT}`;
    const singleS = await singlePulls('central', `${names[1]} alone pulled an image from docker-registry`, images.singles, (img) => pull(lab, names[1], url, REPO, img));
    const pullers = names.slice(1);
    const dist = await distribute(lab, pullers, [proc.pid], (h) => pull(lab, h, url, REPO, images.dist));
    log(`central: ${pullers.length} nodes pulled it at once in ${round(dist.seconds)} s (per node: ${Object.entries(dist.perNodeS).map(([h, s]) => `${h} ${s}`).join(', ')})`);
    return { singleS, dist };
  } finally {
    proc.kill('SIGTERM');
  }
}

const mb = (bytes: number) => round(bytes / 1e6, 1);
const mbit = (bytes: number) => (bytes * 8) / 1e6;

// ------------------------------------------------------------------ main

const avail = labAvailable();
if (!avail.ok) {
  console.error(`bench:registry: ${avail.why}; run it as root`);
  process.exit(1);
}
ensurePackages();
const swept = sweepAbandonedLabs();
if (swept) log(`removed ${swept} namespace(s) left by an earlier run`);

const work = await mkdtemp(join(tmpdir(), 'omni-bench-registry-'));
const lab = new NetLab(CAP_MBIT);
lab.addCleanup(() => rmSync(work, { recursive: true, force: true }));
let exitCode = 0;
try {
  const singles: Image[] = [];
  for (let i = 0; i < TRIALS; i++) singles.push(await makeImage(join(work, `single${i}`), IMAGE_MB, `single${i}`));
  const images: Images = { singles, dist: await makeImage(join(work, 'dist'), IMAGE_MB, 'dist') };
  log(`image: ${mb(images.dist.totalBytes)} MB (${images.dist.blobs.length - 1} random layers + config); ${NODES} hosts capped at ${CAP_MBIT} Mbit/s each way`);
  lab.start();
  const names = Array.from({ length: NODES }, (_, i) => `n${i + 1}`);
  names.forEach((n, i) => lab.addHost(n, i + 1));
  lab.addHost('central', CENTRAL_OCTET);
  log(`lab: namespaces on ${lab.subnet}.0/24 (id ${lab.id})`);

  // Other work on the machine takes CPU from the omnid processes (omni's transfer is CPU-bound here; docker-registry's is not).
  const loadAtStart = loadavg()[0];
  log(`load average (1 min) at start: ${round(loadAtStart)} on ${availableParallelism()} cores`);
  const o = await omni(lab, names, images);
  const ce = await central(lab, names, images, work);

  const pullers = NODES - 1;
  const capBytesPerS = (CAP_MBIT * 1e6) / 8;
  const utilisation = (images.dist.totalBytes * pullers) / (o.dist.seconds * capBytesPerS * pullers);
  const wireUtilisation = o.dist.rxBytes / (o.dist.seconds * capBytesPerS * pullers);
  const ideal = images.dist.totalBytes / capBytesPerS;
  const figures = {
    omni_distribute_s: round(o.dist.seconds),
    central_distribute_s: round(ce.dist.seconds),
    speedup: round(ce.dist.seconds / o.dist.seconds),
    per_host_cap_utilisation: round(utilisation),
    single_pull_ratio: round(o.singleS / ce.singleS),
    push_s: round(o.pushS),
    omni_single_pull_s: round(o.singleS),
    central_single_pull_s: round(ce.singleS),
    omni_wire_rx_utilisation: round(wireUtilisation),
    omni_cpu_busy: round(o.dist.serverCpuS / (o.dist.seconds * availableParallelism())),
    central_cpu_busy: round(ce.dist.serverCpuS / (ce.dist.seconds * availableParallelism())),
    cores: availableParallelism(),
    load_avg_1m_at_start: round(loadAtStart),
    central_wire_rx_mb: mb(ce.dist.rxBytes),
    omni_wire_rx_mb: mb(o.dist.rxBytes),
    ideal_distribute_s: round(ideal),
    nodes: NODES,
    pulling_nodes: pullers,
    cap_mbit: CAP_MBIT,
    image_bytes: images.dist.totalBytes,
    layers: images.dist.blobs.length - 1,
    replicas: REPLICAS,
    single_pull_trials: TRIALS,
  };
  const rows: [string, string, string][] = [
    ['', 'omni', 'docker-registry'],
    [`${pullers} nodes pull at once (s)`, String(figures.omni_distribute_s), String(figures.central_distribute_s)],
    [`one node pulls alone (s, median of ${TRIALS})`, String(figures.omni_single_pull_s), String(figures.central_single_pull_s)],
    ['bytes the pullers received (MB)', String(figures.omni_wire_rx_mb), String(figures.central_wire_rx_mb)],
    [`server CPU meanwhile (of ${figures.cores} cores)`, `${Math.round(figures.omni_cpu_busy * 100)} %`, `${Math.round(figures.central_cpu_busy * 100)} %`],
  ];
  const w = [0, 1, 2].map((i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) log(r.map((x, i) => x.padEnd(w[i])).join('  '));
  log(`speedup ${figures.speedup} (goal >= 3); per-host cap utilisation ${figures.per_host_cap_utilisation} (goal >= 0.7; the floor is ${figures.ideal_distribute_s} s, every puller's link full); single pull ratio ${figures.single_pull_ratio} (goal <= 1.1); push ${figures.push_s} s`);
  console.log(JSON.stringify(figures));
} catch (err) {
  console.error(`bench:registry failed: ${(err as Error).stack ?? err}`);
  exitCode = 1;
} finally {
  lab.destroy();
  await rm(work, { recursive: true, force: true });
}
process.exit(exitCode);
