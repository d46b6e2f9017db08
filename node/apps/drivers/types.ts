// The one interface every task driver implements (Nomad-style): docker, process, mock.
// The agent (node/apps/agent.ts) is the only caller. Drivers own their on-disk/engine state and
// must survive the agent's restart: recover() re-attaches to what is still running.

export type DriverName = 'docker' | 'process' | 'mock' | 'forge';

/** A node's drivers by name: forge (Forge builds, node/apps/drivers/forge.ts) only where the daemon gives it its registry. */
export type DriverSet = Record<Exclude<DriverName, 'forge'>, TaskDriver> & { forge?: TaskDriver };

export interface PortMapping {
  name: string;
  /** Port the app listens on inside its container (docker); for process tasks equal to hostPort. */
  containerPort: number;
  /** Port published on the host (127.0.0.1 and the node's addresses). */
  hostPort: number;
  /** A UDP port (absent: TCP). */
  udp?: boolean;
}

export interface VolumeMount {
  /** Directory on the host (created by the agent under the node's data dir). */
  hostPath: string;
  /** Path inside the container (docker) — process tasks get OMNI_VOLUME_<NAME>=hostPath in env. */
  path: string;
  name: string;
}

/** Everything a driver needs to start one task. Built by the agent from the app spec. */
export interface TaskConfig {
  taskId: string;       // unique, [a-z0-9-]+, at most 63 chars
  app: string;
  version: number;
  image?: string;       // docker
  command?: string[];   // process: argv (command + args); docker: overrides the image's cmd
  /** docker: replaces the image's ENTRYPOINT ([]: none), as docker run --entrypoint. */
  entrypoint?: string[];
  /** docker: the container's user, working directory (over the image's WORKDIR and the workspace), host name and stop signal. */
  user?: string;
  workingDir?: string;
  hostname?: string;
  stopSignal?: string;
  /** The node's GPUs the task holds (nvidia-smi indices): docker asks the engine for those devices, a process gets CUDA_VISIBLE_DEVICES. */
  gpus?: number[];
  /** docker: /dev/shm's size, ulimits, tmpfs mounts, a read-only root file system, capabilities dropped (spec fields of the same names). */
  shmSizeMB?: number;
  ulimits?: Record<string, { soft: number; hard: number }>;
  tmpfs?: { path: string; sizeMB?: number }[];
  readOnly?: boolean;
  capDrop?: string[];
  env: Record<string, string>;
  ports: PortMapping[];
  volumes: VolumeMount[];
  cpu: number;          // cores (fractional)
  memoryBytes: number;
  /**
   * spec.resources.limit true: cpu and memoryBytes are hard limits on every driver. The docker
   * driver enforces them unless limit is false; the process driver only when this is set (its
   * cgroup, node/apps/drivers/cgroups.ts).
   */
  hardLimits?: boolean;
  labels: Record<string, string>;
  /** spec.exclusive: the task must stop when its node's lease lapses, also while omnid is down. */
  exclusive?: boolean;
  /**
   * Service networking (spec.network): the network's hosts file (alias → VIP, node/net/mesh.ts).
   * The process driver bind-mounts it over /etc/hosts in the task's own mount namespace (root);
   * the docker driver mounts it as the container's /etc/hosts (names → docker VIPs).
   */
  hostsFile?: string;
  /** The network's resolv.conf (its DNS address first), mounted over /etc/resolv.conf like hostsFile. */
  resolvConf?: string;
  /**
   * Host ports on 127.0.0.1 only (docker driver): a task on a network is reached through the
   * node's mesh (names, published ports), which connects to 127.0.0.1:hostPort — so neither
   * another machine nor a container of another network reaches its ports directly.
   */
  hostPortsLoopbackOnly?: boolean;
  /**
   * The task's synced workspace on the host (node/sync/task-workspace.ts), when its app has one.
   * Process driver: the task's working directory, also in OMNI_WORKSPACE (HOME is the task's own
   * home/ beside it, so caches and runtime files stay out of the synced files). Docker
   * driver: bind-mounted at /workspace (OMNI_WORKSPACE=/workspace), the container's working
   * directory unless its image sets a WORKDIR of its own.
   */
  workDir?: string;
  /**
   * Files (compose secrets and configs) the agent wrote under the node's data dir: the docker
   * driver bind-mounts each read-only at `target`; the process driver gets their host paths in
   * env (the agent sets OMNI_SECRET_FILE_<NAME> / OMNI_CONFIG_FILE_<NAME>).
   */
  files?: { hostPath: string; target: string }[];
}

/** One command run inside a running task (a health check). */
export interface ExecResult {
  /** null when it did not finish within the timeout. */
  exitCode: number | null;
  /** stdout and stderr as text, at most EXEC_OUTPUT_MAX_BYTES (the end is kept). */
  output: string;
}
export const EXEC_OUTPUT_MAX_BYTES = 4096;

export type TaskRunState = 'running' | 'exited';

export interface TaskStatus {
  taskId: string;
  state: TaskRunState;
  /** Exit code once exited (null if unknown, e.g. killed by a signal or lost). */
  exitCode: number | null;
  /** Epoch ms the task's current run started / exited. */
  startedAtMs: number;
  exitedAtMs?: number;
  /** Driver-specific detail for humans ("OOMKilled", "signal SIGKILL"). */
  reason?: string;
  /** The GPUs the run was given (TaskConfig.gpus), as the driver recorded them: an agent that restarts learns what its tasks hold. */
  gpus?: number[];
}

export interface LogOptions {
  follow: boolean;
  /** Only lines written at or after this epoch ms. */
  sinceMs?: number;
  /** Last N lines (before following). */
  tail?: number;
  /** Each line as `\0<epoch ms>\t<text>` (`\0\t<text>` when its time is not known; no text log line starts with a NUL): a reader that reconnects resumes at the last line's time (omni watch). */
  stamped?: boolean;
  signal?: AbortSignal;
}

/** A log line with its time, for LogOptions.stamped. */
export function stampLine(atMs: number | undefined, text: string): string {
  return `\0${atMs === undefined ? '' : Math.floor(atMs)}\t${text}`;
}

/** The time and text of a stamped line (a line without the stamp: no time, the whole line). */
export function unstampLine(line: string): { atMs?: number; text: string } {
  const m = /^\0(\d{0,16})\t/.exec(line);
  if (!m) return { text: line };
  return m[1] === '' ? { text: line.slice(m[0].length) } : { atMs: Number(m[1]), text: line.slice(m[0].length) };
}

export interface TaskDriver {
  readonly name: DriverName;
  /** Whether this driver can run here (e.g. a Docker engine answers); reason if not. */
  available(): Promise<{ ok: true } | { ok: false; reason: string }>;
  /** Starts a task; resolves once the driver has launched it (not when it is healthy). */
  start(cfg: TaskConfig): Promise<TaskStatus>;
  /** Stops a task (graceful, then forced after timeoutMs) and keeps its logs. Idempotent. */
  stop(taskId: string, timeoutMs: number): Promise<void>;
  /** Removes what is left of a stopped task (container, working dir). Logs may be kept. Idempotent. */
  destroy(taskId: string): Promise<void>;
  /** Current status, or undefined if the driver knows no such task. */
  inspect(taskId: string): Promise<TaskStatus | undefined>;
  /** Every task this driver knows on this node (running or exited, not destroyed): used to re-attach after a restart. */
  recover(): Promise<TaskStatus[]>;
  /** The task's output (stdout+stderr, in order, as text lines). Readable after the task exited. */
  logs(taskId: string, opts: LogOptions): AsyncIterable<string>;
  /** Runs argv inside the running task (docker: docker exec), for health checks. Drivers without containers leave it out. */
  exec?(taskId: string, argv: string[], timeoutMs: number): Promise<ExecResult>;
  /** Resource use, when the driver can tell. */
  stats(taskId: string): Promise<{ cpuPercent: number; memoryBytes: number } | undefined>;
}
