// omni run: start an app from an image or a command in one line (like docker run), or from a
// source directory: omni run DIR builds it with Forge (reusing the image of the same source
// digest) and deploys the image pinned by digest, with the ports, health check and start command
// the detection or .omni/build.yaml gives (runSpecFromBuild); again with the same source, the app
// is left as it is; with changed source, it is rolled to the new digest.
import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { parse, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { submit } from './deploy.js';
import { readEnvFile } from './app-io.js';
import { BUILD_FLAGS, buildFlags, forgeBuild, reportStepFailed } from './build.js';
import type { BuildResult } from '../../node/forge/builder.js';
import { StepFailed } from '../../node/forge/runner.js';
import { OmniError } from '../../node/errors.js';
import { isRepositoryName } from '../../protocol/registry/reference.js';
import { CONFIG_PATH } from '../../protocol/project/config.js';
import { findProjectDir, loadProject, runProject } from './project.js';
import type { ApiClient } from '../../node/api/client.js';

const USAGE = `usage: omni run --name NAME [flags] IMAGE [ARGS...]
       omni run --name NAME [flags] -- COMMAND [ARGS...]
       omni run [--name NAME] [flags] DIR [ARGS...]

  --name NAME            app name (required, but for DIR: the directory's name by default)
  --port [NAME=]PORT[:HOSTPORT][/udp]  port the app listens on (repeatable; host port auto if
                         omitted; /udp: a UDP port, relayed by the mesh too)
  --publish [PORTNAME=]P port P on every node routes to a healthy replica (default: the first port)
  --network NAME         service networking: apps of network NAME reach this one by name
                         (repeatable: on several networks, its tasks see the names of all)
  --alias NAME           its names on the network(s) (repeatable; default: the app name)
  --env KEY=VALUE        environment (repeatable);  --env-file FILE
  --replicas N           (default 1)
  --cpu CORES            e.g. 0.5 or 500m;  --memory SIZE  e.g. 256M, 1G
  --limit                --cpu and --memory are hard limits for the process driver too (its
                         own cgroup: a CPU quota, the OOM killer at the memory size; root); the
                         docker driver always limits
  --constraint EXPR      e.g. arch==amd64, label.zone==a, node.name!=n3 (repeatable)
  --spread               at most one replica per node (anti-affinity)
  --health-http PATH     HTTP health check on the first port
  --restart POLICY       always | on-failure | never (default always; services only)
  --job                  a job (same as --type job): each replica runs to completion once;
                         exit 0 succeeded (never run again), a failure is retried as a new
                         task after a backoff (1 s doubling, at most 60 s); waits until it
                         finished and exits 0 if it succeeded, 1 if it failed
  --cron EXPR            a cron app (type cron, schedule EXPR): each time the
                         schedule fires, the app runs as a job (retries, backoff, history);
                         5 fields, or 6 with seconds first: --cron '*/5 * * * * *'
  --time-zone TZ         cron: the IANA time zone the expression is read in (default UTC)
  --concurrency POLICY   cron: forbid (default: skip a fire while a run goes on) | allow | replace
  --starting-deadline S  cron: a run not started within S seconds of its time is missed
  --type TYPE            service (default) | job | cron
  --retries N            jobs and cron runs: failures retried per run (default 3)
  --deadline S           jobs and cron runs: a run still going S seconds after it started
                         fails and its tasks stop (activeDeadlineSeconds)
  --parallelism N        jobs and cron runs: at most N of a run's replicas at once
  --ttl S                jobs: remove the app S seconds after its run finished
                         (ttlSecondsAfterFinished; default: kept until omni rm)
  --exclusive            at most once: each replica runs on one node at a time, even across
                         partitions and crashes (its node stops it when cut off from the quorum
                         for a lease, 10 s; a replacement starts only after that); stop-first updates
  --driver NAME          docker | process (default: docker for an image, process for a command)
  --entrypoint PROGRAM   an image's ENTRYPOINT replaced by PROGRAM (ARGS its arguments; the image's
                         CMD is not used), '' for none — as docker run --entrypoint
  --user, -u USER[:GROUP]  --workdir, -w DIR  --hostname NAME  --stop-signal SIGNAL:
                         the container's (an image), as docker run's
  --stop-timeout SECONDS between the stop signal and SIGKILL (default 5, at most 600)
  --global               one task on every node that is up and fits (constraints, driver),
                         following the nodes as they come and go — Swarm's global mode
  --replace              replace an app of the same name (a rolling update to this spec);
                         without it an existing name is refused (CONFLICT), as docker run --name does
  --detach, -d           don't wait for the app to be healthy;  --timeout SECONDS (default 120)

Waits until every replica is healthy and stable (update.minHealthyMs, 5 s by default, without
a restart); a crash loop is reported with its cause, exit code and last output lines (exit 1).
A command's $PORT, \${PORT}, $OMNI_PORT_<NAME> (any variable of the task's own environment)
are expanded by Omni — quote them so your shell does not: -- redis-server --port '$PORT'.
$$ is a literal $.

omni run with no arguments in a project directory (one with .omni/config.yaml, here or in a
parent; or omni run DIR of one) runs the project's app as the config says (omni config --help;
README, Project directories): creates or reuses it, builds it first when it has no command or
image, waits until it is IDLE (healthy), then follows its logs (Ctrl-C stops following; the app
keeps running); a lab prints its URL and token instead, a job is followed until it finished
(exit 0 succeeded, 1 failed). Safe to interrupt and run again: it decides from the app's state.
Only --detach, --timeout (default 300), the build flags and the connection flags apply there.

DIR (an existing directory; write ./NAME when an image could be meant): the source is built with
Forge as omni build does (see omni build --help; the image of the same source is reused) into
the cluster's registry, REPOSITORY:sha-<source digest>, and the app runs that image pinned by
digest, with the ports, health check (HTTP when .omni/build.yaml has health:, else TCP on the
first port) and start command detection or .omni/build.yaml gives (--port, --health-http and
ARGS override them). Unlike IMAGE, an existing app of the same name is updated (a rolling
update to the new digest; unchanged source leaves it as it is), unless it runs an image of
another repository (then --replace is needed).
  --repo REPOSITORY      where the image goes (default: the app's name)
  --rebuild, --runner host|docker, --max-source SIZE, --registry URL, --quiet: as omni build
${CONNECTION_HELP}
`;

/** --stop-timeout SECONDS (whole, 0-600) in ms. */
function stopTimeoutMs(v: string): number {
  if (!/^\d+$/.test(v) || Number(v) > 600) throw new UsageError(`--stop-timeout must be whole seconds from 0 to 600, got ${v}`);
  return Number(v) * 1000;
}

/** Whether the positional names a source directory (rather than an image). */
export function isSourceDir(arg: string): boolean {
  try {
    return statSync(arg).isDirectory();
  } catch {
    if (arg.startsWith('./') || arg.startsWith('../') || arg.startsWith('/') || arg === '.' || arg === '..') throw new UsageError(`${arg}: no such directory`);
    return false;
  }
}

/** An app name from a directory name: lower case, letters/digits/-, starting with a letter, at most 40. */
export function appNameFromDir(dir: string): string {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, 40)
    .replace(/-+$/, '');
  return name || 'app';
}

/**
 * The spec fields a Forge build gives an app: its image pinned by digest, its ports (the first one
 * named http), a health check (the build's HTTP check, else TCP on the first port).
 */
export function runSpecFromBuild(r: Pick<BuildResult, 'repository' | 'digest' | 'run'>): { image: string; ports: { name: string; port: number }[]; healthCheck?: Record<string, unknown> } {
  const ports = r.run.ports.map((port, i) => ({ name: i === 0 ? 'http' : `p${i}`, port }));
  const h = r.run.health;
  const hp = h ? (ports.find((p) => p.port === h.port) ?? ports[0]) : ports[0];
  const healthCheck = h && hp ? { type: 'http', port: hp.name, path: h.path, intervalMs: h.intervalMs } : hp ? { type: 'tcp', port: hp.name } : undefined;
  return { image: `${r.repository}@${r.digest}`, ports, ...(healthCheck ? { healthCheck } : {}) };
}


export async function run(argv: string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const flagArgs = dash >= 0 ? argv.slice(0, dash) : argv;
  const command = dash >= 0 ? argv.slice(dash + 1) : undefined;
  const { values, positionals } = parse(
    flagArgs,
    {
      ...CONNECTION_FLAGS,
      name: { type: 'string' }, port: { type: 'string', multiple: true }, env: { type: 'string', multiple: true }, 'env-file': { type: 'string' },
      replicas: { type: 'string' }, cpu: { type: 'string' }, memory: { type: 'string' }, limit: { type: 'boolean' }, constraint: { type: 'string', multiple: true },
      spread: { type: 'boolean' }, 'health-http': { type: 'string' }, restart: { type: 'string' }, driver: { type: 'string' },
      detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' }, replace: { type: 'boolean' }, exclusive: { type: 'boolean' },
      job: { type: 'boolean' }, type: { type: 'string' }, retries: { type: 'string' }, deadline: { type: 'string' }, parallelism: { type: 'string' }, ttl: { type: 'string' },
      cron: { type: 'string' }, 'time-zone': { type: 'string' }, concurrency: { type: 'string' }, 'starting-deadline': { type: 'string' },
      network: { type: 'string', multiple: true }, alias: { type: 'string', multiple: true }, publish: { type: 'string', multiple: true },
      repo: { type: 'string' }, entrypoint: { type: 'string' }, user: { type: 'string', short: 'u' }, workdir: { type: 'string', short: 'w' },
      hostname: { type: 'string' }, 'stop-signal': { type: 'string' }, 'stop-timeout': { type: 'string' }, global: { type: 'boolean' }, ...BUILD_FLAGS,
    },
    USAGE,
  );
  // A project directory (.omni/config.yaml): no arguments in it (or a parent), or DIR holding one.
  const projectDir = command ? undefined : positionals.length === 0 ? findProjectDir(process.cwd()) : positionals.length === 1 && isSourceDir(positionals[0]) && existsSync(join(positionals[0], CONFIG_PATH)) ? resolve(positionals[0]) : undefined;
  if (projectDir) return runProjectDir(values, projectDir);
  const sourceDir = !command && positionals.length > 0 && isSourceDir(positionals[0]) ? resolve(positionals[0]) : undefined;
  if (sourceDir && values.name === undefined) values.name = appNameFromDir(sourceDir);
  if (!sourceDir) for (const f of ['repo', ...Object.keys(BUILD_FLAGS)]) if (values[f] !== undefined) throw new UsageError(`--${f} is for omni run DIR (a source directory)`);
  if (!values.name) throw new UsageError(`--name is required\n\n${USAGE}`);
  if (!command && positionals.length === 0) throw new UsageError(`give an IMAGE, a DIR, or -- COMMAND\n\n${USAGE}`);
  if (command && command.length === 0) throw new UsageError('nothing after --');
  const env: Record<string, string> = values['env-file'] ? await readEnvFile(values['env-file'] as string) : {};
  for (const e of (values.env as string[] | undefined) ?? []) {
    const eq = e.indexOf('=');
    if (eq <= 0) throw new UsageError(`--env must be KEY=VALUE, got ${e}`);
    env[e.slice(0, eq)] = e.slice(eq + 1);
  }
  const ports = ((values.port as string[] | undefined) ?? []).map((p, i) => {
    const m = /^(?:([a-z][a-z0-9-]*)=)?(\d+)(?::(\d+))?(?:\/(tcp|udp))?$/.exec(p);
    if (!m) throw new UsageError(`--port must be [NAME=]PORT[:HOSTPORT][/udp], got ${p}`);
    return { name: m[1] ?? (i === 0 ? 'http' : `p${i}`), port: Number(m[2]), ...(m[3] ? { hostPort: Number(m[3]) } : {}), ...(m[4] === 'udp' ? { protocol: 'udp' } : {}) };
  });
  for (const p of (values.publish as string[] | undefined) ?? []) {
    const m = /^(?:([a-z][a-z0-9-]*)=)?(\d+)$/.exec(p);
    if (!m) throw new UsageError(`--publish must be [PORTNAME=]PORT, got ${p}`);
    const target = m[1] === undefined ? ports[0] : ports.find((q) => q.name === m[1]);
    if (!target) throw new UsageError(m[1] === undefined ? '--publish needs a --port' : `--publish ${p}: no --port named ${m[1]}`);
    (target as { publish?: number }).publish = Number(m[2]);
  }
  if (values.alias && !values.network) throw new UsageError('--alias needs --network');
  const attachments = ((values.network as string[] | undefined) ?? []).map((name) => ({ name, ...(values.alias ? { aliases: values.alias } : {}) }));
  const network = attachments.length === 1 ? attachments[0] : undefined;
  const networks = attachments.length > 1 ? attachments : undefined;
  if (values.job && values.cron !== undefined) throw new UsageError('--job and --cron disagree: --cron runs a job at each fire of its schedule');
  const type = values.job ? 'job' : values.cron !== undefined ? 'cron' : (values.type as string | undefined);
  if (values.job && values.type && values.type !== 'job') throw new UsageError(`--job and --type ${values.type} disagree`);
  if (values.cron !== undefined && values.type && values.type !== 'cron') throw new UsageError(`--cron and --type ${values.type} disagree`);
  if (type === 'cron' && values.cron === undefined) throw new UsageError("--type cron needs --cron EXPR (e.g. --cron '0 3 * * *')");
  for (const f of ['time-zone', 'concurrency', 'starting-deadline']) if (values[f] !== undefined && type !== 'cron') throw new UsageError(`--${f} is for a cron app (--cron EXPR)`);
  if (values['starting-deadline'] !== undefined && !/^\d+$/.test(values['starting-deadline'] as string)) throw new UsageError(`--starting-deadline must be whole seconds, got ${values['starting-deadline']}`);
  if (values.limit && (values.cpu === undefined || values.memory === undefined)) throw new UsageError('--limit needs both --cpu and --memory (a missing one would be limited to its default: 0.1 CPU or 64M)');
  if (values.retries !== undefined && !/^\d+$/.test(values.retries as string)) throw new UsageError(`--retries must be a whole number, got ${values.retries}`);
  if (values.deadline !== undefined && !/^[1-9]\d*$/.test(values.deadline as string)) throw new UsageError(`--deadline must be whole seconds (at least 1), got ${values.deadline}`);
  if (values.parallelism !== undefined && !/^[1-9]\d*$/.test(values.parallelism as string)) throw new UsageError(`--parallelism must be a whole number (at least 1), got ${values.parallelism}`);
  if (values.ttl !== undefined && !/^\d+$/.test(values.ttl as string)) throw new UsageError(`--ttl must be whole seconds, got ${values.ttl}`);
  if (values.global && values.replicas !== undefined) throw new UsageError('--global runs one task per node: no --replicas');
  if (values.ttl !== undefined && type !== 'job') throw new UsageError('--ttl is for a job (--job): a finished job is removed after it');
  const spec: Record<string, unknown> = {
    name: values.name,
    ...(command ? { command } : { image: positionals[0], args: positionals.slice(1) }),
    ...(values.entrypoint !== undefined ? { entrypoint: values.entrypoint === '' ? [] : [values.entrypoint as string] } : {}),
    ...(values.user !== undefined ? { user: values.user } : {}),
    ...(values.workdir !== undefined ? { workingDir: values.workdir } : {}),
    ...(values.hostname !== undefined ? { hostname: values.hostname } : {}),
    ...(values['stop-signal'] !== undefined ? { stopSignal: values['stop-signal'] } : {}),
    ...(values['stop-timeout'] !== undefined ? { stopTimeoutMs: stopTimeoutMs(values['stop-timeout'] as string) } : {}),
    env,
    ports,
    ...(values.global ? { mode: 'global' } : { replicas: values.replicas !== undefined ? Number(values.replicas) : 1 }),
    resources: { ...(values.cpu ? { cpu: values.cpu } : {}), ...(values.memory ? { memory: values.memory } : {}), ...(values.limit ? { limit: true } : {}) },
    constraints: values.constraint ?? [],
    antiAffinity: values.spread === true,
    ...(values['health-http'] ? { healthCheck: { type: 'http', port: ports[0]?.name ?? 'http', path: values['health-http'] } } : {}),
    ...(values.restart ? { restart: { policy: values.restart } } : {}),
    ...(values.driver ? { driver: values.driver } : {}),
    ...(values.exclusive ? { exclusive: true } : {}),
    ...(type ? { type } : {}),
    ...(values.retries !== undefined ? { retries: Number(values.retries) } : {}),
    ...(values.deadline !== undefined ? { activeDeadlineSeconds: Number(values.deadline) } : {}),
    ...(values.parallelism !== undefined ? { parallelism: Number(values.parallelism) } : {}),
    ...(values.ttl !== undefined ? { ttlSecondsAfterFinished: Number(values.ttl) } : {}),
    ...(type === 'cron' ? { schedule: values.cron } : {}),
    ...(values['time-zone'] !== undefined ? { timeZone: values['time-zone'] } : {}),
    ...(values.concurrency !== undefined ? { concurrencyPolicy: values.concurrency } : {}),
    ...(values['starting-deadline'] !== undefined ? { startingDeadlineSeconds: Number(values['starting-deadline']) } : {}),
    ...(network ? { network } : {}),
    ...(networks ? { networks } : {}),
  };
  if (sourceDir) return runSource(values, sourceDir, spec, positionals.slice(1));
  // A job has no ports or health check: leave the empty list out so the server's check reads naturally.
  if ((type === 'job' || type === 'cron') && ports.length === 0) delete spec.ports;
  return submit(values, spec, { createOnly: values.replace !== true });
}

/** omni run DIR: build (or reuse), then create or update the app with the image pinned by digest. */
async function runSource(values: Record<string, unknown>, dir: string, spec: Record<string, unknown>, args: string[]): Promise<number> {
  const name = spec.name as string;
  const repo = (values.repo as string | undefined) ?? name;
  if (!isRepositoryName(repo)) throw new UsageError(`--repo ${repo}: not a repository name (lower case letters, digits, . _ - and / between parts)`);
  buildFlags(values);
  const client = connect(values);
  let r: BuildResult;
  try {
    r = await forgeBuild(client, values, { dir, repo, tags: [], label: `building ${basename(dir)}` });
    // An app of this name that runs another repository's image is not replaced without --replace.
    if (values.replace !== true) {
      const cur = await client.raw('GET', `/v1/apps/${encodeURIComponent(name)}`);
      const image = cur.status === 200 ? ((cur.body as { spec?: { image?: string } }).spec?.image ?? null) : undefined;
      if (image !== undefined && (image === null || !image.startsWith(`${repo}@`))) {
        throw new OmniError('CONFLICT', `an app named ${name} already runs ${image ?? 'a command'}, not an image of ${repo}: use --replace to replace it with this build, or pick another --name`, { app: name });
      }
    }
  } catch (err) {
    client.close();
    if (err instanceof StepFailed) return reportStepFailed(err, values.json === true, 'omni run');
    throw err;
  }
  client.close();
  for (const w of r.warnings) if (!values.json) process.stderr.write(`warning: ${w}\n`);
  const fromBuild = runSpecFromBuild(r);
  const full: Record<string, unknown> = { ...spec, image: fromBuild.image, args };
  if ((spec.ports as unknown[]).length === 0) full.ports = fromBuild.ports;
  if (spec.healthCheck === undefined && (spec.ports as unknown[]).length === 0 && fromBuild.healthCheck) full.healthCheck = fromBuild.healthCheck;
  const build = { repository: r.repository, digest: r.digest, sourceDigest: r.sourceDigest, reused: r.reused, type: r.type };
  if (!values.json) process.stderr.write(`${name}: ${r.reused ? 'reused' : 'built'} ${r.repository}@${r.digest} (${r.type}, source ${r.sourceDigest.slice(0, 19)}…)\n`);
  return submit(values, full, { extra: { image: fromBuild.image, build }, onResult: values.json ? undefined : () => process.stdout.write(`image ${fromBuild.image}\n`) });
}

/** The flags `omni run` takes in a project directory (the rest is in .omni/config.yaml). */
const PROJECT_FLAGS = new Set(['addr', 'token', 'ca', 'json', 'detach', 'timeout', ...Object.keys(BUILD_FLAGS)]);

/** omni run in a project directory: the flow of project.ts, with Forge's build when the config has no command or image. */
async function runProjectDir(values: Record<string, unknown>, dir: string): Promise<number> {
  for (const [k, v] of Object.entries(values)) {
    if (v !== undefined && !PROJECT_FLAGS.has(k)) throw new UsageError(`--${k}: in a project directory the app is what ${CONFIG_PATH} says; change it with omni config set (omni config --help)`);
  }
  const p = loadProject(dir);
  const name = p.config.name;
  const build = async (client: ApiClient, spec: Record<string, unknown>): Promise<Record<string, unknown>> => {
    const repo = p.config.build.repo ?? name;
    if (values.runner === undefined && p.config.build.runner) values.runner = p.config.build.runner;
    if (values['max-source'] === undefined && p.config.build.maxSource) values['max-source'] = p.config.build.maxSource;
    buildFlags(values);
    const r = await forgeBuild(client, values, { dir, repo, tags: [], label: `building ${basename(dir)}` });
    for (const w of r.warnings) if (!values.json) process.stderr.write(`warning: ${w}\n`);
    const cur = await client.raw('GET', `/v1/apps/${encodeURIComponent(name)}`);
    const image = cur.status === 200 ? ((cur.body as { spec?: { image?: string } }).spec?.image ?? null) : undefined;
    if (image !== undefined && (image === null || !image.startsWith(`${repo}@`))) {
      throw new OmniError('CONFLICT', `an app named ${name} already runs ${image ?? 'a command'}, not an image of ${repo}: omni rm ${name}, or set another name (omni config set name=…)`, { app: name });
    }
    if (!values.json) process.stderr.write(`${name}: ${r.reused ? 'reused' : 'built'} ${r.repository}@${r.digest} (${r.type}, source ${r.sourceDigest.slice(0, 19)}…)\n`);
    const fromBuild = runSpecFromBuild(r);
    const full: Record<string, unknown> = { ...spec, image: fromBuild.image };
    const isJob = spec.type === 'job' || spec.type === 'cron';
    if (!isJob && spec.ports === undefined) full.ports = fromBuild.ports;
    if (!isJob && spec.healthCheck === undefined && spec.ports === undefined && fromBuild.healthCheck) full.healthCheck = fromBuild.healthCheck;
    return full;
  };
  try {
    return await runProject(values, p, build);
  } catch (err) {
    if (err instanceof StepFailed) return reportStepFailed(err, values.json === true, 'omni run');
    throw err;
  }
}
