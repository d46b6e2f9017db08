// Docker driver: one container per task through the local engine (dockerode over a unix socket).
// An image missing on the node is pulled from this node's own registry (the cluster's registry,
// node/registry/) when it is there — by digest when the app pinned one; otherwise (Omni never
// pulls from a public registry) it is an IMAGE_NOT_FOUND error. Containers are named omni-<taskId> and labelled omni.task / omni.app /
// omni.version (+ omni.owner, the node that made them), which is how recover() finds them after the
// agent restarts. Restart policy is "no": the agent decides restarts.
import { hostname } from 'node:os';
import { request as httpRequest } from 'node:http';
import { readFile } from 'node:fs/promises';
import { spawn } from 'node:child_process';
import { installScript, processTree, readProcStat } from './host-scripts.js';
import { leaseFilePath } from '../lease-file.js';
import type Docker from 'dockerode';
import { OmniError } from '../../errors.js';
import { envSuffix } from './process.js';
import { EXEC_OUTPUT_MAX_BYTES, stampLine, type ExecResult, type LogOptions, type TaskConfig, type TaskDriver, type TaskStatus } from './types.js';
import { loadOnce } from '../../load-once.js';

export const LABEL_TASK = 'omni.task';
export const LABEL_APP = 'omni.app';
export const LABEL_VERSION = 'omni.version';
export const LABEL_OWNER = 'omni.owner';
/** Where a task's synced workspace is mounted in its container (TaskConfig.workDir). */
export const WORKSPACE_PATH = '/workspace';
const DEFAULT_SOCKET = '/var/run/docker.sock';
const PING_TIMEOUT_MS = 3_000;
/** Bounded container logs (json-file driver): 2 files of 10 MB. */
const LOG_MAX_SIZE = '10m';
const LOG_MAX_FILES = '2';
/** Longer output lines are split. */
const LOG_LINE_MAX_CHARS = 64 * 1024;
/** cgroup v1 refuses memory limits below this. */
const MIN_MEMORY_BYTES = 6 * 1024 * 1024;
const TASK_ID_RE = /^[a-z0-9-]{1,63}$/;

/**
 * dockerode (with docker-modem and ssh2) is loaded on the driver's first engine call, not when
 * omnid starts: ~0.1 s of CPU at every start otherwise, before the API answers (issue 13).
 */
export const loadDockerode: () => Promise<typeof Docker> = loadOnce(async () => (await import('dockerode')).default);

/**
 * The engine's `GET /_ping` over its unix socket: resolves when it answers 200, else throws (no
 * answer within `timeoutMs`, another status, or no socket).
 */
export function pingEngine(socketPath: string, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ socketPath, path: '/_ping', method: 'GET', timeout: timeoutMs, agent: false }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve();
      else reject(new Error(`the engine answered /_ping with HTTP ${res.statusCode}`));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer to /_ping within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

export interface DockerDriverOptions {
  /** Engine socket; default: DOCKER_HOST (unix://…) or /var/run/docker.sock. */
  socketPath?: string;
  /** Node name used in error messages (default: the host name). */
  nodeName?: string;
  /**
   * Scope of this driver's containers (label omni.owner): several omnid on one host can share an
   * engine without recovering (and destroying) each other's containers. Unset: every Omni container.
   */
  owner?: string;
  /**
   * This node's registry as its engine reaches it (loopback host:port) and a credential for it;
   * undefined when the node serves none. Missing images are pulled from there.
   */
  registry?: () => LocalRegistry | undefined;
  /**
   * Where this node's exclusive lease file lives and its watchdog script is installed (the data
   * dir). Unset: exclusive tasks are refused (nothing could stop them while omnid is down).
   */
  leaseDir?: string;
}

export interface LocalRegistry {
  hostPort: string;
  username: string;
  password: string;
  /** Starts fetching every blob of `image` this node lacks from its peers (the engine's pull then joins those transfers). */
  prefetch?(image: string): Promise<unknown>;
}

const LEASE_WATCHDOG_URL = new URL('./lease-watchdog.sh', import.meta.url);

/** How long pulling an image from the local registry may take. */
const PULL_TIMEOUT_MS = 10 * 60 * 1000;

/** The engine socket from DOCKER_HOST (unix://PATH) or the default; throws for tcp:// and others. */
export function dockerSocketPath(env: NodeJS.ProcessEnv = process.env): string {
  const host = env.DOCKER_HOST;
  if (!host) return DEFAULT_SOCKET;
  if (host.startsWith('unix://')) return host.slice('unix://'.length);
  if (host.startsWith('/')) return host;
  throw new OmniError('UNAVAILABLE', `DOCKER_HOST=${host} is not supported: Omni talks to the local engine over a unix socket (unix:///path/docker.sock)`);
}

/** Container name of a task. */
export function containerName(taskId: string): string {
  return `omni-${taskId}`;
}

interface DockerApiError {
  statusCode?: number;
  reason?: string;
  json?: { message?: string } | null;
  message?: string;
  code?: string;
}

function errStatus(e: unknown): number | undefined {
  return (e as DockerApiError)?.statusCode;
}

function errMessage(e: unknown): string {
  const d = e as DockerApiError;
  const m = d?.json?.message ?? d?.message ?? String(e);
  return m.replace(/^\(HTTP code \d+\) [a-z ]+ - /, '').trim();
}

/** Docker times ("2026-01-02T03:04:05.123456789Z"; zero time = year 1) → epoch ms. */
function dockerTimeMs(t: string | undefined): number | undefined {
  if (!t) return undefined;
  const ms = Date.parse(t);
  return Number.isFinite(ms) && ms > 0 ? ms : undefined;
}

/**
 * Demultiplexes docker's attach/log stream (8-byte frame headers: stream, 0, 0, 0, size BE32) into
 * text lines, per stream, each still carrying docker's timestamp prefix.
 */
export class DockerLogDemux {
  private buf: Buffer = Buffer.alloc(0);
  private readonly partial = ['', '', ''];

  push(chunk: Buffer): string[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: string[] = [];
    while (this.buf.length >= 8) {
      const size = this.buf.readUInt32BE(4);
      if (this.buf.length < 8 + size) break;
      const kind = this.buf[0] <= 2 ? this.buf[0] : 1;
      const text = this.partial[kind] + this.buf.toString('utf8', 8, 8 + size);
      this.buf = this.buf.subarray(8 + size);
      const parts = text.split('\n');
      let rest = parts.pop() ?? '';
      for (const p of parts) out.push(p.endsWith('\r') ? p.slice(0, -1) : p);
      while (rest.length > LOG_LINE_MAX_CHARS) {
        out.push(rest.slice(0, LOG_LINE_MAX_CHARS));
        rest = rest.slice(LOG_LINE_MAX_CHARS);
      }
      this.partial[kind] = rest;
    }
    return out;
  }

  end(): string[] {
    const out = this.partial.filter((p) => p !== '');
    this.partial.fill('');
    return out;
  }
}

const TS_RE = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d) /;

/** "2026-…Z text" → time (ms) and text. */
function splitTimestamp(line: string): { atMs: number | undefined; text: string } {
  const m = TS_RE.exec(line);
  if (!m) return { atMs: undefined, text: line };
  const frac = m[2] ? m[2].slice(0, 4) : '';
  return { atMs: Date.parse(m[1] + frac + m[3]), text: line.slice(m[0].length) };
}

type InspectInfo = Docker.ContainerInspectInfo;

export class DockerDriver implements TaskDriver {
  readonly name = 'docker' as const;
  readonly socketPath: string | undefined;
  readonly nodeName: string;
  readonly owner: string | undefined;
  private readonly configError: string | undefined;
  private engineClient: Promise<Docker> | undefined;
  private readonly registry: (() => LocalRegistry | undefined) | undefined;
  private readonly leaseDir: string | undefined;

  constructor(opts: DockerDriverOptions = {}) {
    this.registry = opts.registry;
    this.leaseDir = opts.leaseDir;
    let socketPath = opts.socketPath;
    let configError: string | undefined;
    if (socketPath === undefined) {
      try {
        socketPath = dockerSocketPath();
      } catch (e) {
        configError = (e as Error).message;
      }
    }
    this.socketPath = socketPath;
    this.configError = configError;
    this.nodeName = opts.nodeName ?? hostname();
    this.owner = opts.owner;
  }

  /** The engine client (dockerode loaded on first use). */
  private engine(): Promise<Docker> {
    this.engineClient ??= loadDockerode().then(
      (Dockerode) => new Dockerode({ socketPath: this.socketPath ?? DEFAULT_SOCKET }),
      (e: unknown) => {
        this.engineClient = undefined;
        throw e;
      },
    );
    return this.engineClient;
  }

  async available(): Promise<{ ok: true } | { ok: false; reason: string }> {
    if (this.configError) return { ok: false, reason: this.configError };
    try {
      // Without dockerode: omnid asks this at every start (its node record lists the drivers), and
      // loading dockerode for it cost ~25 ms of CPU before the node could register (issue 13).
      await pingEngine(this.socketPath ?? DEFAULT_SOCKET, PING_TIMEOUT_MS);
      return { ok: true };
    } catch (e) {
      return { ok: false, reason: `the Docker engine at unix://${this.socketPath} does not answer (${errMessage(e)}); start dockerd or set DOCKER_HOST=unix:///path/docker.sock` };
    }
  }

  /** Runs an engine call, turning transport failures into UNAVAILABLE. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.configError) throw new OmniError('UNAVAILABLE', this.configError);
    try {
      return await fn();
    } catch (e) {
      if (e instanceof OmniError) throw e;
      if (errStatus(e) === undefined) {
        throw new OmniError('UNAVAILABLE', `${what}: the Docker engine at unix://${this.socketPath} does not answer (${errMessage(e)})`);
      }
      throw e;
    }
  }

  private checkId(taskId: string): void {
    if (!TASK_ID_RE.test(taskId)) throw new OmniError('INVALID_ARGUMENT', `invalid task id ${JSON.stringify(taskId)} (want [a-z0-9-], at most 63 chars)`);
  }

  /** The task's container, if it exists and is Omni's (and this owner's). */
  private async inspectRaw(taskId: string): Promise<InspectInfo | undefined> {
    this.checkId(taskId);
    const info = await this.call(`inspect ${taskId}`, async () => {
      try {
        return await (await this.engine()).getContainer(containerName(taskId)).inspect();
      } catch (e) {
        if (errStatus(e) === 404) return undefined;
        throw e;
      }
    });
    if (!info) return undefined;
    const labels = info.Config?.Labels ?? {};
    if (labels[LABEL_TASK] !== taskId) return undefined;
    if (this.owner !== undefined && labels[LABEL_OWNER] !== this.owner) return undefined;
    return info;
  }

  private status(taskId: string, info: InspectInfo): TaskStatus {
    const s = info.State;
    const startedAtMs = dockerTimeMs(s.StartedAt) ?? dockerTimeMs(info.Created) ?? 0;
    if (s.Running || s.Restarting || s.Paused) {
      const st: TaskStatus = { taskId, state: 'running', exitCode: null, startedAtMs };
      if (s.Paused) st.reason = 'paused';
      const gpus = (info.HostConfig?.DeviceRequests ?? []).flatMap((d) => (d.DeviceIDs ?? []).map(Number)).filter((n) => Number.isInteger(n) && n >= 0);
      if (gpus.length > 0) st.gpus = gpus;
      return st;
    }
    const neverStarted = s.Status === 'created';
    const st: TaskStatus = { taskId, state: 'exited', exitCode: neverStarted ? null : s.ExitCode, startedAtMs };
    const exitedAtMs = dockerTimeMs(s.FinishedAt);
    if (exitedAtMs !== undefined) st.exitedAtMs = exitedAtMs;
    const reason = s.OOMKilled ? 'OOMKilled' : s.Error ? s.Error : neverStarted ? 'created, never started' : undefined;
    if (reason) st.reason = reason;
    return st;
  }

  private async hasImage(image: string): Promise<boolean> {
    try {
      await (await this.engine()).getImage(image).inspect();
      return true;
    } catch (e) {
      if (errStatus(e) === 404) return false;
      throw e;
    }
  }

  /**
   * The image reference to create the container from: `image` when the engine has it; else the
   * same repository (and tag or digest) in this node's registry, pulled from there (the registry
   * fetches missing blobs from its peers). IMAGE_NOT_FOUND when neither has it.
   */
  private async requireImage(image: string): Promise<string> {
    return this.call(`image ${image}`, async () => {
      if (await this.hasImage(image)) return image;
      const reg = this.registry?.();
      const local = reg ? localRegistryRef(image, reg.hostPort) : undefined;
      if (reg && local) {
        if (await this.hasImage(local)) return local;
        // Every missing blob is asked of the peers at once, before the engine asks for any
        // (it asks for a few layers at a time); its pull joins those transfers.
        void reg.prefetch?.(image);
        const pulled = await this.pull(local, reg);
        if (pulled === true) return local;
        throw new OmniError('IMAGE_NOT_FOUND', `image ${image} is not present on node ${this.nodeName} and could not be pulled from its registry (${pulled}); push it there or load it with docker load`, { image, node: this.nodeName });
      }
      throw new OmniError('IMAGE_NOT_FOUND', `image ${image} is not present on node ${this.nodeName}; push it to the cluster's registry or load it with docker load / docker import`, { image, node: this.nodeName });
    });
  }

  /** Pulls `ref` with the registry's credential: true, or why it failed. */
  private async pull(ref: string, reg: LocalRegistry): Promise<true | string> {
    const authconfig = { username: reg.username, password: reg.password, serveraddress: reg.hostPort };
    try {
      const docker = await this.engine();
      const stream = (await docker.pull(ref, { authconfig })) as NodeJS.ReadableStream;
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no end after ${PULL_TIMEOUT_MS} ms`)), PULL_TIMEOUT_MS);
        docker.modem.followProgress(stream, (err: Error | null, events: { error?: string }[]) => {
          clearTimeout(timer);
          const failed = events?.find((e) => e.error);
          if (err || failed) reject(err ?? new Error(failed!.error));
          else resolve();
        });
      });
      return true;
    } catch (e) {
      return errMessage(e).slice(0, 300);
    }
  }

  async start(cfg: TaskConfig): Promise<TaskStatus> {
    this.checkId(cfg.taskId);
    if (!cfg.image) throw new OmniError('INVALID_ARGUMENT', `task ${cfg.taskId}: the docker driver needs an image`);
    if (cfg.memoryBytes > 0 && cfg.memoryBytes < MIN_MEMORY_BYTES) {
      throw new OmniError('INVALID_ARGUMENT', `task ${cfg.taskId}: memory limit ${cfg.memoryBytes} B is below Docker's minimum of 6 MiB`);
    }
    const [image, existing] = await Promise.all([this.requireImage(cfg.image), this.inspectRaw(cfg.taskId)]);
    if (existing) {
      if (this.status(cfg.taskId, existing).state === 'running') throw new OmniError('CONFLICT', `task ${cfg.taskId} is already running (container ${containerName(cfg.taskId)})`);
      await this.destroy(cfg.taskId);
    }

    const env: Record<string, string> = { ...cfg.env, OMNI_TASK_ID: cfg.taskId };
    if (cfg.ports.length > 0) env.PORT = String(cfg.ports[0].containerPort);
    for (const p of cfg.ports) env[`OMNI_PORT_${envSuffix(p.name)}`] = String(p.containerPort);
    for (const v of cfg.volumes) env[`OMNI_VOLUME_${envSuffix(v.name)}`] = v.path;
    // The synced workspace at /workspace (a lab's workspace volume is already it), and the working
    // directory there unless the image sets a WORKDIR of its own (its code lives there).
    const workspaceBind = cfg.workDir && !cfg.volumes.some((v) => v.path === WORKSPACE_PATH) ? [`${cfg.workDir}:${WORKSPACE_PATH}`] : [];
    let workingDir: string | undefined;
    if (cfg.workDir) {
      env.OMNI_WORKSPACE = WORKSPACE_PATH;
      const imageWorkdir = await (await this.engine())
        .getImage(image)
        .inspect()
        .then((i) => (i.Config?.WorkingDir ?? '') as string)
        .catch(() => '');
      if (imageWorkdir === '' || imageWorkdir === '/') workingDir = WORKSPACE_PATH;
    }
    const exposed: Record<string, object> = {};
    const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {};
    for (const p of cfg.ports) {
      const key = `${p.containerPort}/${p.udp ? 'udp' : 'tcp'}`;
      exposed[key] = {};
      (bindings[key] ??= []).push({ HostIp: cfg.hostPortsLoopbackOnly ? '127.0.0.1' : '0.0.0.0', HostPort: String(p.hostPort) });
    }
    const labels: Record<string, string> = { ...cfg.labels, [LABEL_TASK]: cfg.taskId, [LABEL_APP]: cfg.app, [LABEL_VERSION]: String(cfg.version) };
    if (this.owner !== undefined) labels[LABEL_OWNER] = this.owner;
    const hostConfig: Docker.HostConfig = {
      PortBindings: bindings,
      // Service networking: the network's hosts file (names → docker VIPs, node/net/mesh.ts) is the
      // container's /etc/hosts (docker then keeps its own out); rewritten in place as services change.
      // Secrets and configs: one read-only file each at its target.
      Binds: [...cfg.volumes.map((v) => `${v.hostPath}:${v.path}`), ...workspaceBind, ...(cfg.hostsFile ? [`${cfg.hostsFile}:/etc/hosts:ro`] : []), ...(cfg.resolvConf ? [`${cfg.resolvConf}:/etc/resolv.conf:ro`] : []), ...(cfg.files ?? []).map((f) => `${f.hostPath}:${f.target}:ro`)],
      Init: true, // a PID-1 app would ignore SIGTERM; docker-init forwards it
      RestartPolicy: { Name: 'no' },
      LogConfig: { Type: 'json-file', Config: { 'max-size': LOG_MAX_SIZE, 'max-file': LOG_MAX_FILES } },
    };
    if (cfg.memoryBytes > 0) {
      hostConfig.Memory = cfg.memoryBytes;
      hostConfig.MemorySwap = cfg.memoryBytes; // no swap beyond the limit
    }
    if (cfg.cpu > 0) hostConfig.NanoCpus = Math.round(cfg.cpu * 1e9);

    const create: Docker.ContainerCreateOptions = {
      name: containerName(cfg.taskId),
      Image: image,
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: labels,
      ExposedPorts: exposed,
      Tty: false,
      OpenStdin: false,
      HostConfig: hostConfig,
    };
    if (cfg.command && cfg.command.length > 0) create.Cmd = cfg.command;
    if (cfg.user !== undefined) create.User = cfg.user;
    if (cfg.hostname !== undefined) create.Hostname = cfg.hostname;
    if (cfg.stopSignal !== undefined) create.StopSignal = cfg.stopSignal;
    if (cfg.workingDir !== undefined) workingDir = cfg.workingDir;
    if (cfg.shmSizeMB !== undefined) hostConfig.ShmSize = cfg.shmSizeMB * 1024 * 1024;
    if (cfg.ulimits !== undefined) hostConfig.Ulimits = Object.entries(cfg.ulimits).map(([Name, l]) => ({ Name, Soft: l.soft, Hard: l.hard }));
    if (cfg.tmpfs !== undefined) hostConfig.Tmpfs = Object.fromEntries(cfg.tmpfs.map((t) => [t.path, t.sizeMB !== undefined ? `size=${t.sizeMB}m` : '']));
    if (cfg.readOnly) hostConfig.ReadonlyRootfs = true;
    if (cfg.capDrop !== undefined) hostConfig.CapDrop = cfg.capDrop;
    // the devices the agent picked (the NVIDIA container toolkit on the node serves the request)
    if (cfg.gpus !== undefined && cfg.gpus.length > 0) hostConfig.DeviceRequests = [{ Driver: 'nvidia', DeviceIDs: cfg.gpus.map(String), Capabilities: [['gpu']] }];
    // [""] is how the engine is told "no ENTRYPOINT" (docker run --entrypoint ''); [] would keep the image's
    if (cfg.entrypoint !== undefined) create.Entrypoint = cfg.entrypoint.length > 0 ? cfg.entrypoint : [''];
    if (workingDir) create.WorkingDir = workingDir;

    const container = await this.call(`create ${cfg.taskId}`, async () => {
      try {
        return await (await this.engine()).createContainer(create);
      } catch (e) {
        if (errStatus(e) === 409) throw new OmniError('CONFLICT', `task ${cfg.taskId}: container ${containerName(cfg.taskId)} already exists`);
        throw new OmniError('START_FAILED', `task ${cfg.taskId}: docker could not create the container: ${errMessage(e)}`);
      }
    });
    await this.call(`start ${cfg.taskId}`, async () => {
      try {
        await container.start();
      } catch (e) {
        await container.remove({ force: true }).catch(() => undefined);
        throw new OmniError('START_FAILED', `task ${cfg.taskId}: docker could not start the container: ${errMessage(e)}`);
      }
    });
    const info = await this.inspectRaw(cfg.taskId);
    if (!info) throw new OmniError('START_FAILED', `task ${cfg.taskId}: the container vanished right after it started`);
    if (cfg.exclusive) await this.watchLease(cfg.taskId, container, info.State?.Pid ?? 0);
    return this.status(cfg.taskId, info);
  }

  /**
   * An exclusive container gets a watchdog outside omnid (lease-watchdog.sh, detached): it kills
   * the container's init process once the node's lease lapses, also while omnid is down. It
   * needs the engine on this host (the container's pid visible here); otherwise the container
   * is removed and the start refused — an exclusive task nothing could stop must not run.
   */
  private async watchLease(taskId: string, container: Docker.Container, pid: number): Promise<void> {
    const refuse = async (why: string): Promise<never> => {
      await container.remove({ force: true }).catch(() => undefined);
      throw new OmniError('START_FAILED', `task ${taskId}: exclusive tasks need ${why}`);
    };
    if (!this.leaseDir) return refuse('a lease file (this driver was created without a data dir)');
    const stat = pid > 0 ? readProcStat(pid) : undefined;
    if (!stat) return refuse(`the Docker engine on this host (the container's init process, pid ${pid}, is not visible here): its lease watchdog kills that process when the lease lapses`);
    const script = await installScript(this.leaseDir, LEASE_WATCHDOG_URL, 'lease-watchdog');
    const child = spawn('/bin/sh', [script, leaseFilePath(this.leaseDir), String(pid), stat.startTicks], { detached: true, stdio: 'ignore' });
    if (child.pid === undefined) {
      await new Promise((r) => child.once('error', r));
      return refuse('/bin/sh for the lease watchdog');
    }
    child.unref();
  }

  async stop(taskId: string, timeoutMs: number): Promise<void> {
    const info = await this.inspectRaw(taskId);
    if (!info) return;
    await this.call(`stop ${taskId}`, async () => {
      try {
        // docker's grace period is whole seconds; then SIGKILL
        await (await this.engine()).getContainer(info.Id).stop({ t: Math.max(0, Math.ceil(timeoutMs / 1000)) });
      } catch (e) {
        const code = errStatus(e);
        if (code === 304 || code === 404) return; // already stopped / gone
        throw new OmniError('INTERNAL', `task ${taskId}: docker could not stop the container: ${errMessage(e)}`);
      }
    });
  }

  async destroy(taskId: string): Promise<void> {
    const info = await this.inspectRaw(taskId);
    if (!info) return;
    await this.call(`remove ${taskId}`, async () => {
      try {
        await (await this.engine()).getContainer(info.Id).remove({ force: true, v: true });
      } catch (e) {
        const code = errStatus(e);
        if (code === 404 || (code === 409 && /in progress/i.test(errMessage(e)))) return;
        throw new OmniError('INTERNAL', `task ${taskId}: docker could not remove the container: ${errMessage(e)}`);
      }
    });
  }

  async inspect(taskId: string): Promise<TaskStatus | undefined> {
    const info = await this.inspectRaw(taskId);
    return info ? this.status(taskId, info) : undefined;
  }

  async recover(): Promise<TaskStatus[]> {
    const label = this.owner !== undefined ? [`${LABEL_OWNER}=${this.owner}`, LABEL_TASK] : [LABEL_TASK];
    const list = await this.call('list containers', async () => (await this.engine()).listContainers({ all: true, filters: { label } }));
    const out: TaskStatus[] = [];
    for (const c of list) {
      const taskId = c.Labels?.[LABEL_TASK];
      if (!taskId || !TASK_ID_RE.test(taskId)) continue;
      if (!c.Names?.includes(`/${containerName(taskId)}`)) continue;
      const st = await this.inspect(taskId);
      if (st) out.push(st);
    }
    return out.sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
  }

  /**
   * The addresses of this driver's running containers on the engine's networks, each with its
   * task (the service mesh asks which task a connection to a docker VIP comes from).
   */
  async containerAddresses(): Promise<Map<string, string>> {
    const label = this.owner !== undefined ? [`${LABEL_OWNER}=${this.owner}`, LABEL_TASK] : [LABEL_TASK];
    const list = await this.call('list containers', async () => (await this.engine()).listContainers({ filters: { label, status: ['running'] } }));
    const out = new Map<string, string>();
    for (const c of list) {
      const taskId = c.Labels?.[LABEL_TASK];
      if (!taskId || !TASK_ID_RE.test(taskId)) continue;
      for (const n of Object.values(c.NetworkSettings?.Networks ?? {})) if (n?.IPAddress) out.set(n.IPAddress, taskId);
    }
    return out;
  }

  async *logs(taskId: string, opts: LogOptions): AsyncIterable<string> {
    const info = await this.inspectRaw(taskId);
    if (!info) throw new OmniError('NOT_FOUND', `no container for task ${taskId} on node ${this.nodeName}`);
    const container = (await this.engine()).getContainer(info.Id);
    const q: Docker.ContainerLogsOptions = { stdout: true, stderr: true, timestamps: true };
    if (opts.sinceMs !== undefined) q.since = Math.floor(opts.sinceMs / 1000); // whole seconds; refined below
    if (opts.tail !== undefined) q.tail = Math.max(0, Math.floor(opts.tail));
    const keep = (line: string): string | undefined => {
      const { atMs, text } = splitTimestamp(line);
      if (opts.sinceMs !== undefined && atMs !== undefined && atMs < opts.sinceMs) return undefined;
      return opts.stamped ? stampLine(atMs, text) : text;
    };
    const demux = new DockerLogDemux();

    if (!opts.follow) {
      const raw = await this.call(`logs ${taskId}`, () => container.logs({ ...q, follow: false }));
      const buf = Buffer.isBuffer(raw) ? raw : Buffer.from(raw as unknown as string, 'binary');
      for (const line of [...demux.push(buf), ...demux.end()]) {
        const t = keep(line);
        if (t !== undefined) yield t;
      }
      return;
    }

    if (opts.signal?.aborted) return;
    const q2: Docker.ContainerLogsOptions & { follow: true } = { ...q, follow: true };
    if (opts.signal) q2.abortSignal = opts.signal;
    const stream = await this.call(`logs ${taskId}`, () => container.logs(q2));
    const onAbort = () => (stream as unknown as { destroy?: () => void }).destroy?.();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for await (const chunk of stream as AsyncIterable<Buffer | string>) {
        for (const line of demux.push(typeof chunk === 'string' ? Buffer.from(chunk, 'binary') : chunk)) {
          const t = keep(line);
          if (t !== undefined) yield t;
        }
      }
      for (const line of demux.end()) {
        const t = keep(line);
        if (t !== undefined) yield t;
      }
    } catch (e) {
      if (opts.signal?.aborted) return;
      throw e;
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      onAbort();
    }
  }

  /**
   * Runs argv inside the task's running container (docker exec, with the container's env and
   * user), as Docker's HEALTHCHECK does. Output: stdout and stderr, the last
   * EXEC_OUTPUT_MAX_BYTES. Past timeoutMs the answer is exitCode null and the process inside is
   * killed with its children (Docker's own HEALTHCHECK leaves a timed-out check running, so a
   * check that hangs piles up a process every interval): see killExec.
   */
  async exec(taskId: string, argv: string[], timeoutMs: number): Promise<ExecResult> {
    const info = await this.inspectRaw(taskId);
    if (!info || !info.State.Running) throw new OmniError('NOT_FOUND', `task ${taskId} is not running on node ${this.nodeName}`);
    const container = (await this.engine()).getContainer(info.Id);
    const exec = await this.call(`exec ${taskId}`, () => container.exec({ Cmd: argv, AttachStdout: true, AttachStderr: true, Tty: false }));
    const stream = (await this.call(`exec ${taskId}`, () => exec.start({ hijack: true, stdin: false }))) as NodeJS.ReadableStream & { destroy(): void };
    const demux = new FrameDemux(EXEC_OUTPUT_MAX_BYTES);
    const ended = new Promise<boolean>((resolve) => {
      stream.on('data', (c: Buffer) => demux.push(c));
      stream.once('end', () => resolve(true));
      stream.once('close', () => resolve(true));
      stream.once('error', () => resolve(true));
    });
    let timer: NodeJS.Timeout | undefined;
    const done = await Promise.race([ended, new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)))]);
    clearTimeout(timer);
    if (!done) stream.destroy();
    const output = demux.text();
    if (!done) {
      await this.killExec(exec, info.Id);
      return { exitCode: null, output };
    }
    const st = await this.call(`exec ${taskId}`, () => exec.inspect());
    return { exitCode: st.Running ? null : (st.ExitCode ?? null), output };
  }

  /**
   * Kills a timed-out exec and its descendants by their host pids (the engine has no call for
   * it). The pid the engine gives is only trusted when /proc/<pid>/cgroup names the container:
   * an engine in another pid namespace, or a pid reused meanwhile, is left alone.
   */
  private async killExec(exec: Docker.Exec, containerId: string): Promise<void> {
    const st = await exec.inspect().catch(() => undefined);
    if (!st?.Running || !st.Pid) return;
    const cgroup = await readFile(`/proc/${st.Pid}/cgroup`, 'utf8').catch(() => '');
    if (!cgroup.includes(containerId)) return;
    for (const pid of processTree(st.Pid).reverse()) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone already, or not ours to kill
      }
    }
  }

  async stats(taskId: string): Promise<{ cpuPercent: number; memoryBytes: number } | undefined> {
    const info = await this.inspectRaw(taskId);
    if (!info || !info.State.Running) return undefined;
    // one sample with precpu filled in: the engine waits ~1 s between its two readings
    const s = await this.call(`stats ${taskId}`, async () => (await this.engine()).getContainer(info.Id).stats({ stream: false }));
    const cpuDelta = s.cpu_stats.cpu_usage.total_usage - (s.precpu_stats?.cpu_usage?.total_usage ?? 0);
    const sysDelta = (s.cpu_stats.system_cpu_usage ?? 0) - (s.precpu_stats?.system_cpu_usage ?? 0);
    const cpus = s.cpu_stats.online_cpus || s.cpu_stats.cpu_usage.percpu_usage?.length || 1;
    const cpuPercent = sysDelta > 0 && cpuDelta >= 0 ? (cpuDelta / sysDelta) * cpus * 100 : 0;
    const m = s.memory_stats ?? {};
    const stats = (m as { stats?: Record<string, number> }).stats ?? {};
    const cache = stats.cache ?? stats.inactive_file ?? 0;
    const memoryBytes = Math.max(0, (m.usage ?? 0) - cache);
    return { cpuPercent, memoryBytes };
  }
}

/**
 * `repo[:tag]` or `repo@sha256:…` (no registry host, or a loopback one) as a reference in the
 * local registry at hostPort; undefined for an image of another registry.
 */
/**
 * The payload of a non-TTY exec stream (frames of [stream, 0, 0, 0, size (BE32)] + payload),
 * stdout and stderr together, keeping only the last `max` bytes.
 */
export class FrameDemux {
  private pending = Buffer.alloc(0);
  private out = Buffer.alloc(0);
  private left = 0; // payload bytes of the current frame still to come
  constructor(private readonly max: number) {}
  push(chunk: Buffer): void {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = Buffer.alloc(0);
    while (buf.length > 0) {
      if (this.left > 0) {
        const n = Math.min(this.left, buf.length);
        this.keep(buf.subarray(0, n));
        this.left -= n;
        buf = buf.subarray(n);
        continue;
      }
      if (buf.length < 8) {
        this.pending = Buffer.from(buf);
        return;
      }
      this.left = buf.readUInt32BE(4);
      buf = buf.subarray(8);
    }
  }
  private keep(b: Buffer): void {
    this.out = Buffer.concat([this.out, b]);
    if (this.out.length > this.max) this.out = this.out.subarray(this.out.length - this.max);
  }
  text(): string {
    return this.out.toString('utf8');
  }
}

export function localRegistryRef(image: string, hostPort: string): string | undefined {
  const m = /^(?:((?:localhost|127\.\d+\.\d+\.\d+)(?::\d+)?)\/)?([a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*)(?::([\w][\w.-]{0,127}))?(?:@(sha256:[a-f0-9]{64}))?$/.exec(image);
  if (!m) return undefined;
  const [, , repo, tag, digest] = m;
  // A first component with a dot or a port names another registry (e.g. ghcr.io/x): not ours.
  if (!m[1] && repo.includes('/') && /[.:]/.test(repo.split('/')[0])) return undefined;
  return `${hostPort}/${repo}${digest ? `@${digest}` : `:${tag ?? 'latest'}`}`;
}
