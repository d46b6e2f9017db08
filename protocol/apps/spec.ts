// The app spec: validated with clear errors that name the offending field, defaults applied.
// Pure (no I/O). Accepts human-friendly sizes ("512M", "1G") and CPU ("500m").
import { canonicalTimeZone, parseCron } from './cron-expr.js';
import { withLabDefaults, type LabSpec } from './lab.js';
import { parseBuildCommand } from '../forge/build-request.js';

/**
 * publish (absent: not published): the service mesh answers on this port on every node and routes
 * each connection to a serving replica anywhere (Swarm's routing mesh) — unlike hostPort, which
 * binds only on the nodes that run a task. See protocol/net/ and node/net/.
 */
/** protocol: 'udp' for a UDP port (absent: TCP); the mesh relays its datagrams, publish and names alike. */
export interface PortSpec { name: string; port: number; hostPort: number; publish?: number; protocol?: 'udp' }
/**
 * Service networking (absent: none): apps with the same network name reach each other by any
 * alias and the container port (`http://api:8080`), load-balanced over serving replicas wherever
 * they run. Aliases default to [app name]. See README "Service networking".
 */
export interface NetworkSpec { name: string; aliases: string[] }
export const MAX_NETWORK_ALIASES = 8;
/** Networks one app may be on (`networks:`). */
export const MAX_NETWORKS_PER_APP = 8;

/** The networks an app is on: `networks`, or the one `network`, or none. */
export function networksOf(spec: Pick<AppSpec, 'network' | 'networks'>): NetworkSpec[] {
  return spec.networks ?? (spec.network ? [spec.network] : []);
}
/**
 * startPeriodMs: failures during the first startPeriodMs of a run are not counted (a success
 * counts at once), as Compose's start_period. inContainer (command checks of the docker driver
 * only; absent: false): the command runs inside the task's container (docker exec), as Docker's
 * HEALTHCHECK does; otherwise it runs on the node.
 */
export interface HealthCheckSpec { type: 'http' | 'tcp' | 'command'; port: string; path: string; command: string[]; intervalMs: number; timeoutMs: number; retries: number; startPeriodMs: number; inContainer?: boolean }
/**
 * A file given to every task (compose secrets and configs): the docker driver mounts it
 * read-only at `target` in the container; a process task finds it in its task directory, its
 * path in OMNI_SECRET_FILE_<NAME> / OMNI_CONFIG_FILE_<NAME> (and OMNI_SECRETS_DIR). `data` is
 * base64. A secret's content is never shown by the API or the CLI, nor logged.
 */
export interface TaskFileSpec {
  kind: 'secret' | 'config';
  name: string;
  target: string;
  /** The content in base64; '' once a secret is sealed. */
  data: string;
  mode: number;
  /** A secret's content sealed with the cluster's key (node/apps/secret-seal.ts): v1.<nonce>.<ciphertext>. */
  sealed?: string;
  /** sha256 (hex) of a sealed secret's content. */
  sha256?: string;
}
export const MAX_TASK_FILES = 32;
export const MAX_TASK_FILE_BYTES = 64 * 1024;
export const MAX_TASK_FILES_TOTAL_BYTES = 256 * 1024;
/** Container options (docker driver): what docker run --user, --hostname and STOPSIGNAL accept. */
const CONTAINER_USER = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31})?$/;
const HOSTNAME = /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const STOP_SIGNAL = /^(SIG[A-Z0-9+-]{1,12}|[A-Z][A-Z0-9]{1,10}|[1-9]\d?)$/;
export const MAX_STOP_TIMEOUT_MS = 10 * 60_000;
/** The spec fields the docker driver gets as they are (TaskConfig fields of the same names). */
export const CONTAINER_OPTIONS = ['entrypoint', 'user', 'workingDir', 'hostname', 'stopSignal', 'shmSizeMB', 'ulimits', 'tmpfs', 'readOnly', 'capDrop'] as const;
const CAPABILITY = /^(CAP_)?[A-Z][A-Z_]{1,30}$/;
/** The resource names docker run --ulimit takes (setrlimit's, lower-case without RLIMIT_). */
export const ULIMIT_NAMES = ['core', 'cpu', 'data', 'fsize', 'locks', 'memlock', 'msgqueue', 'nice', 'nofile', 'nproc', 'rss', 'rtprio', 'rttime', 'sigpending', 'stack'];
const MAX_ULIMIT = 2 ** 53;

function readUlimits(e: Errors, v: unknown): Record<string, { soft: number; hard: number }> | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return e.add('ulimits', 'a mapping of name to {soft, hard}');
  const out: Record<string, { soft: number; hard: number }> = {};
  for (const [name, l] of Object.entries(v)) {
    const ok = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= -1 && n <= MAX_ULIMIT;
    if (!ULIMIT_NAMES.includes(name)) e.add(`ulimits.${name}`, `not a limit docker sets (${ULIMIT_NAMES.join(', ')})`);
    else if (!isObj(l) || !ok(l.soft) || !ok(l.hard) || (l.hard !== -1 && (l.soft === -1 || l.soft > l.hard))) e.add(`ulimits.${name}`, 'must be {soft, hard}: whole numbers, -1 unlimited, soft not above hard');
    else out[name] = { soft: l.soft, hard: l.hard };
  }
  return out;
}

function readTmpfs(e: Errors, v: unknown): { path: string; sizeMB?: number }[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length > 16) return e.add('tmpfs', 'a list of at most 16 {path, sizeMB?}');
  const out: { path: string; sizeMB?: number }[] = [];
  v.forEach((t, i) => {
    if (!isObj(t) || typeof t.path !== 'string' || !t.path.startsWith('/') || t.path.length > 1024 || /[\0\n:,]/.test(t.path)) return void e.add(`tmpfs[${i}].path`, 'an absolute path (no : or ,)');
    if (t.sizeMB !== undefined && (typeof t.sizeMB !== 'number' || !Number.isInteger(t.sizeMB) || t.sizeMB < 1 || t.sizeMB > 1_048_576)) return void e.add(`tmpfs[${i}].sizeMB`, 'whole MiB from 1');
    out.push({ path: t.path, ...(t.sizeMB !== undefined ? { sizeMB: t.sizeMB } : {}) });
  });
  return out;
}
export interface Constraint { attribute: string; op: '==' | '!=' | 'exists'; value: string }
export interface AppSpec {
  name: string;
  image?: string;
  command?: string[];
  args: string[];
  /**
   * docker only: replaces the image's ENTRYPOINT (args become its arguments, the image's CMD is
   * not used — as `docker run --entrypoint` and Compose's entrypoint); [] runs without one.
   */
  entrypoint?: string[];
  /** docker only: the user the container runs as (`NAME`, `UID`, `UID:GID`), as docker run --user. */
  user?: string;
  /** docker only: the container's working directory (absolute), over the image's WORKDIR. */
  workingDir?: string;
  /** docker only: the container's host name. */
  hostname?: string;
  /** docker only: the signal that asks the task to stop (default SIGTERM), as STOPSIGNAL. */
  stopSignal?: string;
  /** How long a task has between the stop signal and SIGKILL (default 5 s, at most 10 min). */
  stopTimeoutMs?: number;
  /** docker only: /dev/shm's size in MiB (Docker's default 64). */
  shmSizeMB?: number;
  /** docker only: resource limits of the container's processes, as docker run --ulimit (-1: unlimited). */
  ulimits?: Record<string, { soft: number; hard: number }>;
  /** docker only: tmpfs mounts (memory-backed, empty at each start), with a size cap in MiB. */
  tmpfs?: { path: string; sizeMB?: number }[];
  /** docker only: the container's root file system read-only (mounts stay as they are). */
  readOnly?: boolean;
  /** docker only: capabilities dropped from Docker's default set (ALL: every one). Adding is not offered. */
  capDrop?: string[];
  env: Record<string, string>;
  ports: PortSpec[];
  /**
   * Reserved for placement by the scheduler and, unless limit is false, enforced by the docker
   * driver as the container's CPU and memory limits (limit false: reserved only, as a Compose
   * service without limits — absent: true). diskMB: the workspace's disk size (reserved by the
   * scheduler, enforced for the synced workspace); absent: none reserved.
   */
  resources: { cpu: number; memoryMB: number; gpus: number; diskMB?: number; limit?: boolean };
  replicas: number;
  constraints: Constraint[];
  antiAffinity: boolean;
  /**
   * global: one task on every node that is up, eligible and matches the constraints and driver
   * (Swarm's global mode, Nomad's system jobs) — replicas follows the nodes, anti-affinity is on.
   */
  mode?: 'global';
  spreadBy: string;
  placement: 'binpack' | 'spread';
  healthCheck?: HealthCheckSpec;
  restart: { policy: 'always' | 'on-failure' | 'never'; maxRestarts: number; delayMs: number };
  volumes: { name: string; path: string }[];
  /** Files (secrets, configs) each task gets: see TaskFileSpec. Absent: none. */
  files?: TaskFileSpec[];
  /** forge: a build (issue 15) run in omnid by node/apps/drivers/forge.ts; command is its request (protocol/forge/build-request.ts). */
  driver: 'docker' | 'process' | 'mock' | 'forge';
  /**
   * minHealthyMs: a task counts as up (for rolling updates, `omni run`/`deploy` and the reset of
   * the reschedule counter) once it has served — running, health check passing — this long without
   * a restart (Nomad's min_healthy_time).
   */
  update: { parallel: number; healthyTimeoutMs: number; autoRollback: boolean; minHealthyMs: number };
  /**
   * App-level backoff for replacing tasks that failed (gave up restarting, could not start): the
   * n-th consecutive replacement waits delayMs·2^(n-1), at most maxDelayMs; after `attempts`
   * replacements without the app running stable, the app turns `failed` (terminal).
   */
  reschedule: { attempts: number; delayMs: number; maxDelayMs: number };
  /**
   * At most once: each replica runs on at most one node at any moment, across partitions, crashes
   * and leader changes (singletons, one-shot jobs, cron runs). The node running one holds a lease
   * renewed by a quorum read (EXCLUSIVE_LEASE_MS) and stops it when the lease lapses; the leader
   * places a replacement only once the old task is known stopped or its node has been silent for
   * twice the lease; updates stop the old task before starting the new one. Absent: false.
   */
  exclusive?: boolean;
  /**
   * 'service' (absent: today's long-running apps, replaced and restarted forever) or 'job': each
   * of `replicas` tasks runs to completion once; exit 0 is success (terminal, never run again), a
   * failure is retried as a new task after a backoff, at most `job.retries` failures per run.
   */
  type?: AppType;
  /** Jobs and cron apps (each cron run is a job run): retries and backoff. */
  job?: JobSpec;
  /**
   * A schedule: present exactly for type 'cron' (each fire runs the app as a job) and for a
   * service with `schedule` (each fire runs `command` as a job sharing the service's image, env,
   * volumes and resources).
   */
  cron?: CronSpec;
  /** Labs only (present exactly when type is 'lab'): a notebook server, protocol/apps/lab.ts. */
  lab?: LabSpec;
  /** Service networking: see NetworkSpec. */
  network?: NetworkSpec;
  /**
   * On several networks at once (2 to MAX_NETWORKS_PER_APP, names unique; never with `network`):
   * its aliases are names on each, and its tasks see the names of all of them (networksOf).
   */
  networks?: NetworkSpec[];
}

export type AppType = 'service' | 'job' | 'cron' | 'lab';
export type ConcurrencyPolicy = 'forbid' | 'allow' | 'replace';
export interface CronSpec {
  /** A cron expression: 5 fields, or 6 with seconds first (parsed by croner). */
  schedule: string;
  /** IANA time zone the expression is read in (default UTC). */
  timeZone: string;
  /** A fire while a run is still going: forbid (skip it, the default), allow (run both) or replace (stop the old run). */
  concurrencyPolicy: ConcurrencyPolicy;
  /** A scheduled time not fired within this many seconds is missed (absent: one late catch-up run is always fired). */
  startingDeadlineSeconds?: number;
  /** Finished runs kept in the history: successful and failed (missed and skipped times count as failed). */
  historyLimit: { successful: number; failed: number };
  /** Created with the schedule OFF (`omni schedule enable` turns it on). */
  suspend: boolean;
  /** A service's schedule: the command each fire runs. Absent for a type cron app (it runs its own command or image). */
  command?: string[];
}
export const DEFAULT_HISTORY_LIMIT = { successful: 3, failed: 1 };
export const MAX_HISTORY_LIMIT = 50;
export const MAX_STARTING_DEADLINE_S = 7 * 24 * 3600;
/**
 * retries: failures allowed per run before the job is failed (Kubernetes' backoffLimit): a run
 * places at most replicas + retries tasks. The n-th failure waits backoffMs·2^(n-1), at most
 * maxBackoffMs, before its retry is placed.
 */
export interface JobSpec {
  retries: number;
  backoffMs: number;
  maxBackoffMs: number;
  /** activeDeadlineSeconds (Kubernetes' name) in ms: a run not finished this long after it started fails, its tasks stopped. */
  deadlineMs?: number;
  /** At most this many tasks of a run at once (Kubernetes' parallelism); absent: all replicas at once. */
  parallelism?: number;
  /** ttlSecondsAfterFinished (Kubernetes' name) in ms, type job only: the app is removed this long after its run finished. */
  ttlMs?: number;
}
export const MAX_ACTIVE_DEADLINE_S = 30 * 24 * 3600;
export const DEFAULT_JOB: JobSpec = { retries: 3, backoffMs: 1000, maxBackoffMs: 60_000 };
export const MAX_JOB_RETRIES = 100;

/**
 * The lease of a node running exclusive tasks: it renews it with a linearizable read (a quorum
 * answered) at least every EXCLUSIVE_LEASE_MS / 4 and stops them once EXCLUSIVE_LEASE_MS passed
 * since the start of its last successful renewal; the leader waits for twice this after the
 * last message it had from the node before placing a replacement elsewhere.
 */
export const EXCLUSIVE_LEASE_MS = 10_000;
export type SpecResult = { ok: true; spec: AppSpec } | { ok: false; errors: { field: string; message: string }[] };

export const MAX_REPLICAS = 1000;
export const MAX_PORTS = 16;
export const MAX_ENV_VARS = 256;
export const MAX_ENV_VALUE_CHARS = 32 * 1024;
export const MAX_ARGV = 256;
export const MAX_ARG_CHARS = 8192;
export const MAX_CONSTRAINTS = 32;
export const MAX_VOLUMES = 16;

const TOP_FIELDS = ['name', 'image', 'command', 'args', 'entrypoint', 'user', 'workingDir', 'hostname', 'stopSignal', 'stopTimeoutMs', 'shmSizeMB', 'ulimits', 'tmpfs', 'readOnly', 'capDrop', 'env', 'ports', 'resources', 'replicas', 'constraints', 'antiAffinity', 'mode', 'spreadBy', 'placement', 'healthCheck', 'restart', 'volumes', 'driver', 'update', 'reschedule', 'exclusive', 'type', 'retries', 'backoff', 'schedule', 'timeZone', 'concurrencyPolicy', 'startingDeadlineSeconds', 'historyLimit', 'suspend', 'network', 'networks', 'files', 'activeDeadlineSeconds', 'parallelism', 'ttlSecondsAfterFinished'];
const CRON_FIELDS = ['timeZone', 'concurrencyPolicy', 'startingDeadlineSeconds', 'historyLimit', 'suspend'];
const NAME = /^[a-z][a-z0-9-]{0,39}$/;
const PORT_NAME = /^[a-z][a-z0-9-]{0,14}$/;
const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
const LABEL_KEY = /^[a-zA-Z0-9._/-]{1,63}$/;

class Errors {
  list: { field: string; message: string }[] = [];
  add(field: string, message: string): undefined {
    this.list.push({ field, message });
    return undefined;
  }
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);

function int(e: Errors, v: unknown, field: string, min: number, max: number, dflt: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) return e.add(field, `must be a whole number from ${min} to ${max}`) ?? dflt;
  return v;
}

function str(e: Errors, v: unknown, field: string, maxChars: number, dflt = ''): string {
  if (v === undefined) return dflt;
  if (typeof v !== 'string' || v.length > maxChars) return e.add(field, `must be a string of at most ${maxChars} characters`) ?? dflt;
  return v;
}

function argv(e: Errors, v: unknown, field: string): string[] | undefined {
  if (v === undefined) return undefined;
  const arr = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(arr) || arr.length > MAX_ARGV || arr.some((a) => typeof a !== 'string' || a.length > MAX_ARG_CHARS)) {
    return e.add(field, `must be a list of at most ${MAX_ARGV} strings`);
  }
  return arr as string[];
}

function known(e: Errors, o: Obj, field: string, allowed: string[]): void {
  for (const k of Object.keys(o)) {
    if (allowed.includes(k)) continue;
    const near = allowed.find((a) => a.startsWith(k) || k.startsWith(a));
    e.add(field ? `${field}.${k}` : k, `unknown field '${k}'${near ? ` (did you mean '${near}'?)` : ''}`);
  }
}

/** "512M", "1G", "256Mi", 512 (MB) → MB. */
export function parseMemoryMB(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) ? v : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]i?B?|[kmgt])?$/i.exec(v.trim());
  if (!m) return undefined;
  const unit = (m[2] ?? 'M')[0].toUpperCase();
  const factor = { K: 1 / 1024, M: 1, G: 1024, T: 1024 * 1024 }[unit as 'M']!;
  return Math.ceil(Number(m[1]) * factor);
}

/** 0.5, "0.5", "500m" → cores. */
export function parseCpu(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(m)?$/.exec(v.trim());
  if (!m) return undefined;
  return m[2] ? Number(m[1]) / 1000 : Number(m[1]);
}

export function parseConstraint(s: string): Constraint | undefined {
  const m = /^\s*([a-zA-Z0-9._/-]+)\s*(==|!=)\s*(\S.*?)\s*$/.exec(s);
  const attrOk = (a: string) => a === 'arch' || a === 'node.name' || (a.startsWith('label.') && LABEL_KEY.test(a.slice(6)));
  if (m) return attrOk(m[1]) ? { attribute: m[1], op: m[2] as '==' | '!=', value: m[3] } : undefined;
  const t = s.trim();
  // driver.NAME: the node can run that driver (its fingerprint), e.g. driver.docker for a build that needs an engine.
  if (/^driver\.[a-z][a-z0-9-]{0,31}$/.test(t)) return { attribute: t, op: 'exists', value: '' };
  return t.startsWith('label.') && LABEL_KEY.test(t.slice(6)) ? { attribute: t, op: 'exists', value: '' } : undefined;
}

export function validateAppSpec(input: unknown): SpecResult {
  if (isObj(input) && input.type === 'lab') return validateLab(input);
  const e = new Errors();
  if (!isObj(input)) return { ok: false, errors: [{ field: '(spec)', message: 'must be an object of app fields' }] };
  known(e, input, '', TOP_FIELDS);
  const name = typeof input.name === 'string' && NAME.test(input.name) ? input.name : (e.add('name', 'required: lowercase letters, digits and -, starting with a letter, at most 40 characters'), 'invalid');
  const image = input.image === undefined ? undefined : str(e, input.image, 'image', 512) || (e.add('image', 'must not be empty'), undefined);
  const command = argv(e, input.command, 'command');
  if (command && command.length === 0) e.add('command', 'must not be empty');
  if ((image === undefined) === (command === undefined)) e.add(image === undefined ? 'image' : 'command', 'give exactly one of image or command');
  const args = argv(e, input.args, 'args') ?? [];
  const entrypoint = argv(e, input.entrypoint, 'entrypoint');
  const env: Record<string, string> = {};
  if (input.env !== undefined) {
    if (!isObj(input.env) || Object.keys(input.env).length > MAX_ENV_VARS) e.add('env', `must be a mapping of at most ${MAX_ENV_VARS} variables`);
    else for (const [k, v] of Object.entries(input.env)) {
      if (!ENV_KEY.test(k)) e.add(`env.${k}`, 'variable names are letters, digits and _, not starting with a digit');
      else if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') e.add(`env.${k}`, 'must be a string');
      else if (String(v).length > MAX_ENV_VALUE_CHARS) e.add(`env.${k}`, `longer than ${MAX_ENV_VALUE_CHARS} characters`);
      else env[k] = String(v);
    }
  }
  const ports = readPorts(e, input.ports);
  const resources = readResources(e, input.resources);
  const replicas = int(e, input.replicas, 'replicas', 0, MAX_REPLICAS, 1);
  const constraints: Constraint[] = [];
  if (input.constraints !== undefined) {
    if (!Array.isArray(input.constraints) || input.constraints.length > MAX_CONSTRAINTS) e.add('constraints', `must be a list of at most ${MAX_CONSTRAINTS} expressions`);
    else input.constraints.forEach((c, i) => {
      const parsed = typeof c === 'string' ? parseConstraint(c) : undefined;
      if (parsed) constraints.push(parsed);
      else e.add(`constraints[${i}]`, 'expected arch==VALUE, node.name!=VALUE, label.KEY==VALUE, label.KEY or driver.NAME');
    });
  }
  const antiAffinity = input.antiAffinity === undefined ? false : typeof input.antiAffinity === 'boolean' ? input.antiAffinity : (e.add('antiAffinity', 'must be true or false'), false);
  const mode = input.mode === undefined || input.mode === 'replicated' ? undefined : input.mode === 'global' ? ('global' as const) : (e.add('mode', 'must be replicated or global'), undefined);
  if (mode === 'global' && input.replicas !== undefined) e.add('replicas', 'not with mode global: one task per node');
  if (mode === 'global' && input.type !== undefined && input.type !== 'service') e.add('mode', 'global is for a service (one task on every node)');
  if (mode === 'global' && input.volumes !== undefined && Array.isArray(input.volumes) && input.volumes.length > 0) e.add('volumes', 'not with mode global: a volume lives on one node (its tasks elsewhere would never start)');
  const exclusive = input.exclusive === undefined ? false : typeof input.exclusive === 'boolean' ? input.exclusive : (e.add('exclusive', 'must be true or false'), false);
  const spreadBy = str(e, input.spreadBy, 'spreadBy', 63);
  if (spreadBy && !LABEL_KEY.test(spreadBy)) e.add('spreadBy', 'must be a node label key');
  const placement = input.placement === undefined ? 'binpack' : input.placement === 'binpack' || input.placement === 'spread' ? input.placement : (e.add('placement', 'must be binpack or spread'), 'binpack');
  const healthCheck = readHealth(e, input.healthCheck, ports);
  const restart = readRestart(e, input.restart);
  const volumes = readVolumes(e, input.volumes);
  const files = readFiles(e, input.files);
  const driver = input.driver === undefined ? (image !== undefined ? 'docker' : 'process') : ['docker', 'process', 'mock', 'forge'].includes(input.driver as string) ? (input.driver as AppSpec['driver']) : (e.add('driver', 'must be docker, process, mock or forge'), 'process');
  if (driver === 'docker' && image === undefined && command !== undefined) e.add('driver', 'the docker driver needs an image');
  if (driver === 'process' && command === undefined && image !== undefined) e.add('driver', 'the process driver runs a command, not an image');
  if (entrypoint !== undefined && driver !== 'docker') e.add('entrypoint', "only for the docker driver (an image's ENTRYPOINT); a command's first word is its program");
  const user = input.user === undefined ? undefined : typeof input.user === 'string' && CONTAINER_USER.test(input.user) ? input.user : (e.add('user', 'a user name or UID, optionally :GROUP or :GID (at most 64 characters)'), undefined);
  const workingDir = input.workingDir === undefined ? undefined : typeof input.workingDir === 'string' && input.workingDir.startsWith('/') && input.workingDir.length <= 1024 && !/[\0\n]/.test(input.workingDir) ? input.workingDir : (e.add('workingDir', 'an absolute path of at most 1,024 characters'), undefined);
  const hostname = input.hostname === undefined ? undefined : typeof input.hostname === 'string' && HOSTNAME.test(input.hostname) ? input.hostname : (e.add('hostname', 'a host name: letters, digits, - and ., at most 253 characters'), undefined);
  const stopSignal = input.stopSignal === undefined ? undefined : typeof input.stopSignal === 'string' && STOP_SIGNAL.test(input.stopSignal) ? input.stopSignal : (e.add('stopSignal', 'a signal name (SIGINT, SIGQUIT, …) or number'), undefined);
  const stopTimeoutMs = input.stopTimeoutMs === undefined ? undefined : int(e, input.stopTimeoutMs, 'stopTimeoutMs', 0, MAX_STOP_TIMEOUT_MS, 0);
  const shmSizeMB = input.shmSizeMB === undefined ? undefined : int(e, input.shmSizeMB, 'shmSizeMB', 1, 65_536, 64);
  const ulimits = readUlimits(e, input.ulimits);
  const tmpfs = readTmpfs(e, input.tmpfs);
  const readOnly = input.readOnly === undefined ? undefined : typeof input.readOnly === 'boolean' ? input.readOnly : (e.add('readOnly', 'must be true or false'), undefined);
  const capDrop = input.capDrop === undefined ? undefined : Array.isArray(input.capDrop) && input.capDrop.length <= 64 && input.capDrop.every((c) => typeof c === 'string' && CAPABILITY.test(c)) ? (input.capDrop as string[]) : (e.add('capDrop', 'a list of capability names (NET_RAW, CHOWN, …, or ALL)'), undefined);
  for (const [field, v] of [['user', user], ['workingDir', workingDir], ['hostname', hostname], ['stopSignal', stopSignal], ['shmSizeMB', shmSizeMB], ['ulimits', ulimits], ['tmpfs', tmpfs], ['readOnly', readOnly], ['capDrop', capDrop]] as const) {
    if (v !== undefined && driver !== 'docker') e.add(field, 'only for the docker driver (a container option)');
  }
  if (healthCheck?.inContainer && driver !== 'docker') e.add('healthCheck.inContainer', 'only for the docker driver (a process task has no container: its check runs on the node)');
  if (files.length > 0 && driver !== 'docker' && driver !== 'process') e.add('files', 'only for the docker and process drivers');
  if (driver === 'forge') {
    if (command === undefined) e.add('driver', 'the forge driver runs a build: command must be a forge-build request');
    else {
      const b = parseBuildCommand([...command, ...args]);
      if (!b.ok) e.add('command', `forge build: ${b.message}`);
    }
    if (input.type !== 'job') e.add('type', 'a forge build is a job (type: job)');
    if (input.ports !== undefined) e.add('ports', 'a forge build listens on nothing');
    if (input.volumes !== undefined) e.add('volumes', 'a forge build has no volumes');
  }
  const update = readUpdate(e, input.update);
  const reschedule = readReschedule(e, input.reschedule);
  const type: AppType = input.type === undefined ? 'service' : input.type === 'service' || input.type === 'job' || input.type === 'cron' ? input.type : (e.add('type', 'must be service, job, cron or lab'), 'service');
  let job: JobSpec | undefined;
  let cron: CronSpec | undefined;
  if (type === 'cron') {
    if (input.schedule === undefined) e.add('schedule', "required for type cron: a cron expression such as '0 3 * * *' (5 fields) or '*/10 * * * * *' (6, seconds first)");
    else if (typeof input.schedule !== 'string') e.add('schedule', "for type cron: a cron expression string such as '0 3 * * *' (the {cron, command} form is a service's schedule)");
    else cron = readCron(e, input, '', input.schedule);
  } else if (type === 'job') {
    for (const f of ['schedule', ...CRON_FIELDS]) if (input[f] !== undefined) e.add(f, 'a job runs once: use type cron for a schedule');
  } else {
    for (const f of CRON_FIELDS) if (input[f] !== undefined) e.add(f, 'for a service, put it inside schedule: {cron, command, ...}; or use type cron');
    if (input.schedule !== undefined) {
      if (!isObj(input.schedule)) e.add('schedule', 'for a service: {cron, command, timeZone?, concurrencyPolicy?, startingDeadlineSeconds?, historyLimit?, suspend?}');
      else {
        const sch = input.schedule;
        known(e, sch, 'schedule', ['cron', 'command', ...CRON_FIELDS]);
        const expr = sch.cron;
        if (typeof expr !== 'string') e.add('schedule.cron', "required: a cron expression such as '0 3 * * *'");
        const cmd = typeof sch.command === 'string' ? ['sh', '-c', sch.command] : argv(e, sch.command, 'schedule.command');
        if (!cmd || cmd.length === 0) e.add('schedule.command', 'required: the command each fire runs (a string runs through sh -c, or a list of arguments)');
        else if (typeof sch.command === 'string' && sch.command.length > MAX_ARG_CHARS) e.add('schedule.command', `longer than ${MAX_ARG_CHARS} characters`);
        if (typeof expr === 'string' && cmd && cmd.length > 0) {
          cron = readCron(e, sch, 'schedule.', expr);
          if (cron) cron.command = cmd;
        }
      }
    }
  }
  if (type === 'job' || type === 'cron') {
    // A job runs to completion: nothing listens, nothing is restarted in place or rolled.
    const notForJobs: [string, string][] = [
      ['ports', 'a job has no ports: it runs to completion (use type service for a server)'],
      ['healthCheck', 'a job has no health check: its exit code says whether it succeeded'],
      ['restart', 'not used by jobs: a failed job task is retried as a new task (see retries and backoff)'],
      ['reschedule', 'not used by jobs: use retries and backoff'],
      ['update', 'not used by jobs: a new version starts a new run (no rolling update)'],
    ];
    for (const [f, why] of notForJobs) if (input[f] !== undefined) e.add(f, type === 'cron' ? why.replace(/\bjobs?\b/g, (w) => (w === 'job' ? 'cron run' : 'cron runs')) : why);
    if (replicas < 1) e.add('replicas', `a ${type === 'cron' ? 'cron run' : 'job'} runs at least 1 task`);
    job = { ...DEFAULT_JOB, retries: int(e, input.retries, 'retries', 0, MAX_JOB_RETRIES, DEFAULT_JOB.retries) };
    if (input.activeDeadlineSeconds !== undefined) job.deadlineMs = int(e, input.activeDeadlineSeconds, 'activeDeadlineSeconds', 1, MAX_ACTIVE_DEADLINE_S, 0) * 1000;
    if (input.parallelism !== undefined) job.parallelism = int(e, input.parallelism, 'parallelism', 1, MAX_REPLICAS, 1);
    if (input.ttlSecondsAfterFinished !== undefined) {
      if (type === 'cron') e.add('ttlSecondsAfterFinished', 'only for type job (a cron app stays; historyLimit bounds the runs it keeps)');
      else job.ttlMs = int(e, input.ttlSecondsAfterFinished, 'ttlSecondsAfterFinished', 0, MAX_ACTIVE_DEADLINE_S, 0) * 1000;
    }
    if (input.backoff !== undefined) {
      if (!isObj(input.backoff)) e.add('backoff', 'must be {delayMs, maxDelayMs}');
      else {
        known(e, input.backoff, 'backoff', ['delayMs', 'maxDelayMs']);
        job.backoffMs = int(e, input.backoff.delayMs, 'backoff.delayMs', 0, 3_600_000, DEFAULT_JOB.backoffMs);
        job.maxBackoffMs = int(e, input.backoff.maxDelayMs, 'backoff.maxDelayMs', 0, 24 * 3_600_000, Math.max(DEFAULT_JOB.maxBackoffMs, job.backoffMs));
        if (job.maxBackoffMs < job.backoffMs) e.add('backoff.maxDelayMs', `must be at least backoff.delayMs (${job.backoffMs})`);
      }
    }
  } else {
    if (input.retries !== undefined) e.add('retries', 'only for type job or cron (a service restarts per restart and reschedule)');
    if (input.backoff !== undefined) e.add('backoff', 'only for type job or cron (a service uses reschedule.delayMs)');
    if (input.activeDeadlineSeconds !== undefined) e.add('activeDeadlineSeconds', 'only for type job or cron (a run that takes longer fails)');
    if (input.parallelism !== undefined) e.add('parallelism', 'only for type job or cron (how many of a run\'s tasks run at once)');
    if (input.ttlSecondsAfterFinished !== undefined) e.add('ttlSecondsAfterFinished', 'only for type job (a finished job is removed after it)');
  }
  const network = readNetwork(e, input.network, name, 'network');
  const networks = readNetworks(e, input.networks, name);
  if (network && networks) e.add('networks', 'give network (one) or networks (several), not both');
  if (e.list.length > 0) return { ok: false, errors: e.list };
  const spec: AppSpec = { name, args, env, ports, resources, replicas, constraints, antiAffinity, spreadBy, placement, restart, volumes, driver, update, reschedule };
  if (exclusive) spec.exclusive = true;
  if (mode) {
    spec.mode = mode;
    spec.antiAffinity = true;
  }
  if (job) {
    // Never restarted in place: the orchestrator retries a failed job task as a new task.
    spec.type = type;
    spec.job = job;
    spec.restart = { policy: 'never', maxRestarts: 0, delayMs: 0 };
  }
  if (cron) spec.cron = cron;
  if (image !== undefined) spec.image = image;
  if (command !== undefined) spec.command = command;
  // the fields given (an absent one stays out of the record, as before)
  const given = { entrypoint, user, workingDir, hostname, stopSignal, stopTimeoutMs, shmSizeMB, ulimits, tmpfs, readOnly, capDrop };
  for (const [k, v] of Object.entries(given)) if (v !== undefined) Object.assign(spec, { [k]: v });
  if (healthCheck) spec.healthCheck = healthCheck;
  if (network) spec.network = network;
  // one network is written as `network` (the form every earlier version reads)
  if (networks) {
    if (networks.length === 1) spec.network = networks[0];
    else spec.networks = networks;
  }
  if (files.length > 0) spec.files = files;
  return { ok: true, spec };
}

/** The schedule fields (top level of a cron app, inside `schedule` of a service); prefix names them in errors. */
function readCron(e: Errors, o: Obj, prefix: string, expr: string): CronSpec | undefined {
  const field = prefix ? `${prefix}cron` : 'schedule';
  let timeZone = 'UTC';
  if (o.timeZone !== undefined) {
    const tz = typeof o.timeZone === 'string' ? canonicalTimeZone(o.timeZone) : undefined;
    if (tz === undefined) e.add(`${prefix}timeZone`, 'must be an IANA time zone name such as Europe/Paris, America/New_York or UTC');
    else timeZone = tz;
  }
  const parsed = parseCron(expr, timeZone);
  if (!parsed.ok) e.add(field, `not a valid cron expression ('${expr.slice(0, 64)}'): ${parsed.error}`);
  const cp = o.concurrencyPolicy;
  const concurrencyPolicy = cp === undefined ? 'forbid' : cp === 'forbid' || cp === 'allow' || cp === 'replace' ? cp : (e.add(`${prefix}concurrencyPolicy`, 'must be forbid (skip a fire while a run goes on), allow or replace'), 'forbid');
  const startingDeadlineSeconds = o.startingDeadlineSeconds === undefined ? undefined : int(e, o.startingDeadlineSeconds, `${prefix}startingDeadlineSeconds`, 1, MAX_STARTING_DEADLINE_S, 0);
  const historyLimit = { ...DEFAULT_HISTORY_LIMIT };
  if (o.historyLimit !== undefined) {
    if (typeof o.historyLimit === 'number') historyLimit.successful = historyLimit.failed = int(e, o.historyLimit, `${prefix}historyLimit`, 0, MAX_HISTORY_LIMIT, 3);
    else if (!isObj(o.historyLimit)) e.add(`${prefix}historyLimit`, '{successful, failed} or one number for both');
    else {
      known(e, o.historyLimit, `${prefix}historyLimit`, ['successful', 'failed']);
      historyLimit.successful = int(e, o.historyLimit.successful, `${prefix}historyLimit.successful`, 0, MAX_HISTORY_LIMIT, DEFAULT_HISTORY_LIMIT.successful);
      historyLimit.failed = int(e, o.historyLimit.failed, `${prefix}historyLimit.failed`, 0, MAX_HISTORY_LIMIT, DEFAULT_HISTORY_LIMIT.failed);
    }
  }
  const suspend = o.suspend === undefined ? false : typeof o.suspend === 'boolean' ? o.suspend : (e.add(`${prefix}suspend`, 'must be true or false'), false);
  if (!parsed.ok) return undefined;
  const c: CronSpec = { schedule: expr.trim(), timeZone, concurrencyPolicy, historyLimit, suspend };
  if (startingDeadlineSeconds !== undefined) c.startingDeadlineSeconds = startingDeadlineSeconds;
  return c;
}

/** A network or alias name: a DNS label (lowercase letters, digits, -), at most 63 characters. */
const NET_NAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function readNetwork(e: Errors, v: unknown, appName: string, field: string): NetworkSpec | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return e.add(field, 'must be {name, aliases?}');
  known(e, v, field, ['name', 'aliases']);
  const name = typeof v.name === 'string' && NET_NAME.test(v.name) ? v.name : e.add(`${field}.name`, 'required: lowercase letters, digits and -, at most 63 characters');
  let aliases = [appName];
  if (v.aliases !== undefined) {
    if (!Array.isArray(v.aliases) || v.aliases.length === 0 || v.aliases.length > MAX_NETWORK_ALIASES) e.add(`${field}.aliases`, `must be a list of 1 to ${MAX_NETWORK_ALIASES} names`);
    else {
      aliases = [];
      v.aliases.forEach((a, i) => {
        if (typeof a !== 'string' || !NET_NAME.test(a) || a === 'localhost') e.add(`${field}.aliases[${i}]`, 'must be a host name: lowercase letters, digits and -, at most 63 characters (not localhost)');
        else if (!aliases.includes(a)) aliases.push(a);
      });
    }
  }
  return name === undefined ? undefined : { name, aliases };
}

/** `networks`: a list of {name, aliases?}, names unique. */
function readNetworks(e: Errors, v: unknown, appName: string): NetworkSpec[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_NETWORKS_PER_APP) return e.add('networks', `must be a list of 1 to ${MAX_NETWORKS_PER_APP} {name, aliases?}`);
  const out: NetworkSpec[] = [];
  v.forEach((n, i) => {
    const net = readNetwork(e, n, appName, `networks[${i}]`);
    if (!net) return;
    if (out.some((o) => o.name === net.name)) e.add(`networks[${i}].name`, `network ${net.name} is listed twice`);
    else out.push(net);
  });
  return out.length === v.length ? out : undefined;
}

function readPorts(e: Errors, v: unknown): PortSpec[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_PORTS) return e.add('ports', `must be a list of at most ${MAX_PORTS} ports`) ?? [];
  const out: PortSpec[] = [];
  v.forEach((p, i) => {
    const f = `ports[${i}]`;
    const o: Obj = typeof p === 'number' ? { name: i === 0 ? 'http' : `p${i}`, port: p } : isObj(p) ? p : {};
    if (!isObj(p) && typeof p !== 'number') return e.add(f, 'must be {name, port, hostPort?, publish?} or a port number');
    known(e, o, f, ['name', 'port', 'hostPort', 'publish', 'protocol']);
    const name = typeof o.name === 'string' && PORT_NAME.test(o.name) ? o.name : (e.add(`${f}.name`, 'required: lowercase letters, digits and -, at most 15'), 'x');
    if (out.some((q) => q.name === name)) e.add(`${f}.name`, `duplicate port name ${name}`);
    const port: PortSpec = { name, port: int(e, o.port, `${f}.port`, 1, 65535, 0), hostPort: int(e, o.hostPort, `${f}.hostPort`, 0, 65535, 0) };
    if (o.protocol !== undefined && o.protocol !== 'tcp' && o.protocol !== 'udp') e.add(`${f}.protocol`, 'must be tcp or udp');
    if (o.protocol === 'udp') port.protocol = 'udp';
    if (o.publish !== undefined) {
      port.publish = int(e, o.publish, `${f}.publish`, 1, 65535, 0);
      if (out.some((q) => q.publish === port.publish && q.protocol === port.protocol)) e.add(`${f}.publish`, `port ${port.publish}${port.protocol === 'udp' ? '/udp' : ''} is published twice`);
    }
    out.push(port);
  });
  return out;
}

function readResources(e: Errors, v: unknown): AppSpec['resources'] {
  const r: AppSpec['resources'] = { cpu: 0.1, memoryMB: 64, gpus: 0 };
  if (v === undefined) return r;
  if (!isObj(v)) return e.add('resources', 'must be {cpu, memory or memoryMB, gpus, disk or diskMB, limit}') ?? r;
  known(e, v, 'resources', ['cpu', 'memory', 'memoryMB', 'gpus', 'disk', 'diskMB', 'limit']);
  if (v.cpu !== undefined) {
    const cpu = parseCpu(v.cpu);
    if (cpu === undefined || !(cpu > 0) || cpu > 1024) e.add('resources.cpu', 'must be a number of cores above 0 (e.g. 0.5 or "500m")');
    else r.cpu = cpu;
  }
  const mem = v.memoryMB ?? v.memory;
  if (mem !== undefined) {
    const mb = parseMemoryMB(mem);
    if (mb === undefined || !(mb >= 1) || mb > 1024 ** 4) e.add(v.memoryMB !== undefined ? 'resources.memoryMB' : 'resources.memory', 'must be a size like 256M or 2G (at least 1 MB)');
    else r.memoryMB = mb;
  }
  r.gpus = int(e, v.gpus, 'resources.gpus', 0, 64, 0);
  const disk = v.diskMB ?? v.disk;
  if (disk !== undefined) {
    const mb = parseMemoryMB(disk);
    if (mb === undefined || !(mb >= 1) || mb > 1024 ** 4) e.add(v.diskMB !== undefined ? 'resources.diskMB' : 'resources.disk', 'must be a size like 500M or 10G (at least 1 MB)');
    else r.diskMB = mb;
  }
  if (v.limit === false) return { ...r, limit: false };
  if (v.limit === true) return { ...r, limit: true };
  if (v.limit !== undefined && v.limit !== true) e.add('resources.limit', 'must be true or false');
  return r;
}

function readHealth(e: Errors, v: unknown, ports: PortSpec[]): HealthCheckSpec | undefined {
  if (v === undefined) return undefined;
  if (!isObj(v)) return e.add('healthCheck', 'must be {type: http|tcp|command, ...}');
  known(e, v, 'healthCheck', ['type', 'port', 'path', 'command', 'intervalMs', 'timeoutMs', 'retries', 'startPeriodMs', 'inContainer']);
  const type = v.type === 'http' || v.type === 'tcp' || v.type === 'command' ? v.type : (e.add('healthCheck.type', 'must be http, tcp or command'), 'http');
  const port = str(e, v.port, 'healthCheck.port', 15, ports[0]?.name ?? '');
  if (type !== 'command' && !ports.some((p) => p.name === port)) e.add('healthCheck.port', ports.length ? `must name one of the ports (${ports.map((p) => p.name).join(', ')})` : 'an http/tcp check needs a port in ports');
  else if (type !== 'command' && ports.find((p) => p.name === port)?.protocol === 'udp') e.add('healthCheck.port', `${port} is a UDP port: an ${type} check needs a TCP port (or use a command check)`);
  const path = str(e, v.path, 'healthCheck.path', 1024, '/');
  if (type === 'http' && !path.startsWith('/')) e.add('healthCheck.path', 'must start with /');
  const command = argv(e, v.command, 'healthCheck.command') ?? [];
  if (type === 'command' && command.length === 0) e.add('healthCheck.command', 'required for a command check');
  return {
    type, port, path, command,
    intervalMs: int(e, v.intervalMs, 'healthCheck.intervalMs', 100, 3_600_000, 2000),
    timeoutMs: int(e, v.timeoutMs, 'healthCheck.timeoutMs', 50, 600_000, 1000),
    retries: int(e, v.retries, 'healthCheck.retries', 1, 100, 3),
    startPeriodMs: int(e, v.startPeriodMs, 'healthCheck.startPeriodMs', 0, 3_600_000, 0),
    ...(v.inContainer === undefined || v.inContainer === false ? {} : v.inContainer === true ? (type === 'command' ? { inContainer: true } : e.add('healthCheck.inContainer', 'only for a command check') ?? {}) : e.add('healthCheck.inContainer', 'must be true or false') ?? {}),
  };
}

const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
/** A sealed secret (node/apps/secret-seal.ts): version, 12-byte nonce, ciphertext with its 16-byte tag, base64url. */
const SEALED = /^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]{22,}$/;
const SEAL_TAG_BYTES = 16;
const MAX_SEALED_CHARS = 100_000;

function readFiles(e: Errors, v: unknown): TaskFileSpec[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_TASK_FILES) return e.add('files', `must be a list of at most ${MAX_TASK_FILES} files`) ?? [];
  let total = 0;
  const targets = new Set<string>();
  const out = v.flatMap((x, i): TaskFileSpec[] => {
    const at = `files[${i}]`;
    if (!isObj(x)) return e.add(at, 'must be {kind, name, target, data, mode}') ?? [];
    known(e, x, at, ['kind', 'name', 'target', 'data', 'mode', 'sealed', 'sha256']);
    const kind = x.kind === 'secret' || x.kind === 'config' ? x.kind : (e.add(`${at}.kind`, 'must be secret or config'), 'config');
    const name = typeof x.name === 'string' && FILE_NAME.test(x.name) ? x.name : (e.add(`${at}.name`, 'required: letters, digits, _ . -, at most 64'), '');
    const t = x.target;
    const target = typeof t === 'string' && t.startsWith('/') && t.length <= 1024 && t !== '/' && !t.split('/').some((p) => p === '..' || p === '.') && !t.includes('\0') && !t.endsWith('/') ? t : (e.add(`${at}.target`, 'required: an absolute file path without . or .. parts'), '');
    if (target && targets.has(target)) e.add(`${at}.target`, `${target} is the target of two files`);
    targets.add(target);
    const mode = int(e, x.mode, `${at}.mode`, 0, 0o777, 0o444);
    // A secret may come sealed (as the API shows it): its content is then counted from the ciphertext.
    if (x.sealed !== undefined && (x.data === undefined || x.data === '')) {
      const sealed = kind === 'secret' && typeof x.sealed === 'string' && SEALED.test(x.sealed) && x.sealed.length <= MAX_SEALED_CHARS ? x.sealed : (e.add(`${at}.sealed`, kind === 'secret' ? 'must be a sealed secret v1.<nonce>.<ciphertext>' : 'only a secret is sealed'), '');
      const sha256 = x.sha256 === undefined || (typeof x.sha256 === 'string' && /^[0-9a-f]{64}$/.test(x.sha256)) ? (x.sha256 as string | undefined) : (e.add(`${at}.sha256`, 'must be 64 hex digits'), undefined);
      const bytes = Math.max(0, Math.floor(((sealed.split('.')[2] ?? '').length * 3) / 4) - SEAL_TAG_BYTES);
      if (bytes > MAX_TASK_FILE_BYTES) e.add(`${at}.sealed`, `larger than ${MAX_TASK_FILE_BYTES} bytes`);
      total += bytes;
      return [{ kind, name, target, data: '', mode, sealed, ...(sha256 !== undefined ? { sha256 } : {}) }];
    }
    if (x.sealed !== undefined || x.sha256 !== undefined) e.add(at, 'give either data or sealed (with sha256), not both');
    const data = typeof x.data === 'string' && x.data.length % 4 === 0 && BASE64.test(x.data) ? x.data : (e.add(`${at}.data`, 'required: the content in base64'), '');
    const bytes = Math.floor((data.length * 3) / 4) - (data.endsWith('==') ? 2 : data.endsWith('=') ? 1 : 0);
    if (bytes > MAX_TASK_FILE_BYTES) e.add(`${at}.data`, `larger than ${MAX_TASK_FILE_BYTES} bytes`);
    total += bytes;
    return [{ kind, name, target, data, mode }];
  });
  if (total > MAX_TASK_FILES_TOTAL_BYTES) e.add('files', `larger than ${MAX_TASK_FILES_TOTAL_BYTES} bytes together`);
  return out;
}

function readRestart(e: Errors, v: unknown): AppSpec['restart'] {
  const r: AppSpec['restart'] = { policy: 'always', maxRestarts: 10, delayMs: 1000 };
  if (v === undefined) return r;
  if (!isObj(v)) return e.add('restart', 'must be {policy, maxRestarts, delayMs}') ?? r;
  known(e, v, 'restart', ['policy', 'maxRestarts', 'delayMs']);
  if (v.policy !== undefined) {
    if (v.policy === 'always' || v.policy === 'on-failure' || v.policy === 'never') r.policy = v.policy;
    else e.add('restart.policy', 'must be always, on-failure or never');
  }
  r.maxRestarts = int(e, v.maxRestarts, 'restart.maxRestarts', 0, 1_000_000, 10);
  r.delayMs = int(e, v.delayMs, 'restart.delayMs', 0, 3_600_000, 1000);
  return r;
}

function readVolumes(e: Errors, v: unknown): AppSpec['volumes'] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.length > MAX_VOLUMES) return e.add('volumes', `must be a list of at most ${MAX_VOLUMES} volumes`) ?? [];
  return v.flatMap((x, i) => {
    if (!isObj(x)) return e.add(`volumes[${i}]`, 'must be {name, path}') ?? [];
    known(e, x, `volumes[${i}]`, ['name', 'path']);
    const name = typeof x.name === 'string' && PORT_NAME.test(x.name) ? x.name : (e.add(`volumes[${i}].name`, 'required: lowercase letters, digits and -'), '');
    const path = typeof x.path === 'string' && x.path.startsWith('/') && x.path.length <= 1024 ? x.path : (e.add(`volumes[${i}].path`, 'required: an absolute path'), '');
    return [{ name, path }];
  });
}

/** Default update.minHealthyMs: long enough to see a crash loop's first restart, short enough for `omni run`. */
export const DEFAULT_MIN_HEALTHY_MS = 5000;

function readUpdate(e: Errors, v: unknown): AppSpec['update'] {
  const u = { parallel: 1, healthyTimeoutMs: 30_000, autoRollback: true, minHealthyMs: DEFAULT_MIN_HEALTHY_MS };
  if (v === undefined) return u;
  if (!isObj(v)) return e.add('update', 'must be {parallel, healthyTimeoutMs, autoRollback, minHealthyMs}') ?? u;
  known(e, v, 'update', ['parallel', 'healthyTimeoutMs', 'autoRollback', 'minHealthyMs']);
  u.parallel = int(e, v.parallel, 'update.parallel', 1, MAX_REPLICAS, 1);
  u.healthyTimeoutMs = int(e, v.healthyTimeoutMs, 'update.healthyTimeoutMs', 1000, 3_600_000, 30_000);
  if (v.autoRollback !== undefined) u.autoRollback = typeof v.autoRollback === 'boolean' ? v.autoRollback : (e.add('update.autoRollback', 'must be true or false'), true);
  u.minHealthyMs = int(e, v.minHealthyMs, 'update.minHealthyMs', 0, 3_600_000, Math.min(DEFAULT_MIN_HEALTHY_MS, Math.floor(u.healthyTimeoutMs / 2)));
  if (u.minHealthyMs >= u.healthyTimeoutMs) e.add('update.minHealthyMs', `must be below update.healthyTimeoutMs (${u.healthyTimeoutMs})`);
  return u;
}

function readReschedule(e: Errors, v: unknown): AppSpec['reschedule'] {
  const r = { attempts: 5, delayMs: 1000, maxDelayMs: 60_000 };
  if (v === undefined) return r;
  if (!isObj(v)) return e.add('reschedule', 'must be {attempts, delayMs, maxDelayMs}') ?? r;
  known(e, v, 'reschedule', ['attempts', 'delayMs', 'maxDelayMs']);
  r.attempts = int(e, v.attempts, 'reschedule.attempts', 0, 1000, 5);
  r.delayMs = int(e, v.delayMs, 'reschedule.delayMs', 0, 3_600_000, 1000);
  r.maxDelayMs = int(e, v.maxDelayMs, 'reschedule.maxDelayMs', 0, 24 * 3_600_000, Math.max(60_000, r.delayMs));
  if (r.maxDelayMs < r.delayMs) e.add('reschedule.maxDelayMs', `must be at least reschedule.delayMs (${r.delayMs})`);
  return r;
}

/** Canonical JSON (sorted keys): equal specs give equal strings. */
export function specDigest(spec: AppSpec): string {
  const canon = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canon);
    if (isObj(v)) return Object.fromEntries(Object.keys(v).sort().filter((k) => v[k] !== undefined).map((k) => [k, canon(v[k])]));
    return v;
  };
  return JSON.stringify(canon(spec));
}

/** A lab: its defaults (lab.ts), then validated as a service of one replica. */
function validateLab(input: Obj): SpecResult {
  const d = withLabDefaults(input);
  const r = validateAppSpec(d.spec);
  const errors = [...d.errors, ...(r.ok ? [] : r.errors)];
  if (!r.ok || errors.length > 0 || !d.lab) return { ok: false, errors };
  return { ok: true, spec: { ...r.spec, type: 'lab', lab: d.lab } };
}
