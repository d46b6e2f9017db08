// Flags shared by omnid init/join/start and their translation into DaemonOptions.
import type { DaemonOptions } from '../../node/daemon.js';
import { UsageError, defaultDataDir, parseDurationMs, type Flags } from '../common.js';
import type { LogLevel, Logger } from '../../node/logger.js';
import { processGuard } from '../../node/process-guard.js';
import { MAX_REPLICAS } from '../../protocol/registry/durability.js';
import { parseVipRange } from '../../protocol/net/vip.js';
import { DEFAULT_BUILD_RETENTION } from '../../protocol/forge/retention.js';

export const DAEMON_FLAGS: Flags = {
  data: { type: 'string' },
  listen: { type: 'string', multiple: true },
  api: { type: 'string' },
  name: { type: 'string' },
  label: { type: 'string', multiple: true },
  'log-level': { type: 'string' },
  'tick-ms': { type: 'string' },
  'election-ticks': { type: 'string' },
  'snapshot-entries': { type: 'string' },
  'snapshot-tail': { type: 'string' },
  'heartbeat-ms': { type: 'string' },
  'disk-check-ms': { type: 'string' },
  'down-after-ms': { type: 'string' },
  'replace-after-ms': { type: 'string' },
  tls: { type: 'boolean' },
  'insecure-http': { type: 'boolean' },
  registry: { type: 'string' },
  'registry-replicas': { type: 'string' },
  'registry-tls': { type: 'boolean' },
  'registry-gc-every': { type: 'string' },
  'vip-range': { type: 'string' },
  'docker-vip-range': { type: 'string' },
  'publish-host': { type: 'string' },
  'publish-port-offset': { type: 'string' },
  'build-keep': { type: 'string' },
  'build-ttl': { type: 'string' },
  'workspace-sync': { type: 'string' },
};

export const DAEMON_FLAGS_HELP = `
  --data DIR              data directory (default $OMNI_DATA or ~/.omni/data)
  --listen MULTIADDR      libp2p listen address, repeatable (default /ip4/0.0.0.0/tcp/7946)
  --api HOST:PORT         HTTP API address (default 127.0.0.1:7070; port 0 picks one); HTTPS
                          with a cluster-CA certificate unless HOST is loopback
  --tls                   serve the API over HTTPS even on a loopback address
  --insecure-http         serve the API over plain HTTP even on a network address (tokens in clear!)
  --registry HOST:PORT    the image registry's /v2/ address (default 127.0.0.1:5000, for this
                          node's Docker engine; port 0 picks one; HTTPS off loopback; off: none)
  --registry-replicas N   a push completes once each blob is on N nodes (default 2; 1: only here;
                          omni images replicas sets it per repository)
  --registry-tls          serve the registry over HTTPS even on a loopback address
  --registry-gc-every D   the leader's scheduled garbage collection, e.g. 6h (the default), 30m,
                          1d; off: none (omni images gc --save sets its grace and retention)
  --vip-range CIDR        loopback range of this node's service VIPs (default 127.77.0.0/16)
  --docker-vip-range CIDR addresses docker containers' service names point at, on an
                          interface omnid adds (root; default 198.18.0.0/16; off: none)
  --publish-host HOST     where published app ports listen (default 0.0.0.0; off: nowhere)
  --publish-port-offset N published port P listens on P+N on this node (several nodes on one host)
  --build-keep N          finished builds (omni build) kept per repository while this node
                          leads (default 5; 0: each removed once it finished); their images stay
  --build-ttl D           a finished or cancelled build is removed this long after it ended
                          (default 24h; e.g. 30m, 7d; off: only --build-keep removes)
  --workspace-sync D      how often the node reads a running service's or lab's files back into
                          the app's synced workspace by itself (default 30s; off: only when asked,
                          omni sync, and when the task ends)
  --name NAME             node name (default: host name)
  --label KEY=VALUE       node label, repeatable
  --log-level LEVEL       debug|info|warn|error (default info)
  --tick-ms N             Raft tick (default 100); elections after 10-20 ticks
  --election-ticks N      Raft election timeout in ticks (default 10)
  --snapshot-entries N    compact the log every N applied entries (default 10000)
  --snapshot-tail N       entries a compaction keeps for followers that lag a little (default 5000)
  --heartbeat-ms N        gossip heartbeat interval (default 1000)
  --disk-check-ms N       how often the free disk of the data dir is measured again (default 30000;
                          the node's record, which disk reservations count on, follows a change)
  --down-after-ms N       mark a silent node down after N ms (default 5000)
  --replace-after-ms N    replace a voter down for N ms with a non-voter (default 15000)`;

function positiveInt(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${flag} must be a positive integer, got ${String(v)}`);
  return n;
}

function nonNegativeInt(v: unknown, flag: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 10_000_000) throw new UsageError(`--${flag} must be an integer from 0 to 10000000, got ${String(v)}`);
  return n;
}

/** --registry-gc-every: "6h", "30m", "90s", "1d"; "off" or "0": no scheduled runs. */
export function gcEveryFlag(v: unknown): number {
  const s = String(v).trim();
  if (s === 'off' || s === '0') return 0;
  const m = /^(\d{1,9})(s|m|h|d)$/.exec(s);
  const ms = m ? Number(m[1]) * { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 's']! : NaN;
  if (!(ms >= 1000 && ms <= 366 * 86_400_000)) throw new UsageError(`--registry-gc-every must be a duration from 1s to 366d such as 30m, 6h or 1d (or off), got ${s}`);
  return ms;
}

/** --workspace-sync: a duration (at least 1 s), or off (0). */
function workspaceSyncFlag(v: unknown): number {
  const s = String(v);
  if (s === 'off') return 0;
  const ms = parseDurationMs(s, '--workspace-sync');
  if (ms < 1000) throw new UsageError(`--workspace-sync must be at least 1s (or off), got ${s}`);
  return ms;
}

/** --build-ttl: a duration (at least 1 s), or off (no age limit). */
function buildTtlFlag(v: unknown): number {
  const s = String(v).trim();
  if (s === 'off') return Number.POSITIVE_INFINITY;
  const ms = parseDurationMs(s, '--build-ttl');
  if (ms < 1000) throw new UsageError(`--build-ttl must be at least 1s (or off), got ${s}`);
  return ms;
}

function vipRangeFlag(v: unknown): string {
  const r = parseVipRange(String(v));
  if (!r.ok) throw new UsageError(`--vip-range: ${r.message}`);
  return r.range.cidr;
}

function dockerVipRangeFlag(v: unknown): string {
  if (String(v) === 'off') return 'off';
  const r = parseVipRange(String(v), 'docker');
  if (!r.ok) throw new UsageError(`--docker-vip-range: ${r.message}`);
  return r.range.cidr;
}

function portOffsetFlag(v: unknown): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 60000) throw new UsageError(`--publish-port-offset must be an integer from 0 to 60000, got ${String(v)}`);
  return n;
}

function replicasFlag(v: unknown): number {
  const n = positiveInt(v, 'registry-replicas')!;
  if (n > MAX_REPLICAS) throw new UsageError(`--registry-replicas must be at most ${MAX_REPLICAS}`);
  return n;
}

export function daemonOptions(values: Record<string, unknown>, isRestart = false): DaemonOptions {
  const labels: Record<string, string> = {};
  for (const l of (values.label as string[] | undefined) ?? []) {
    const eq = l.indexOf('=');
    if (eq <= 0) throw new UsageError(`--label must be KEY=VALUE, got ${l}`);
    labels[l.slice(0, eq)] = l.slice(eq + 1);
  }
  const level = (values['log-level'] as string | undefined) ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError(`--log-level must be debug|info|warn|error`);
  const tickMs = positiveInt(values['tick-ms'], 'tick-ms') ?? 100;
  const electionTick = positiveInt(values['election-ticks'], 'election-ticks') ?? 10;
  if (electionTick < 3) throw new UsageError('--election-ticks must be at least 3');
  if (values.tls && values['insecure-http']) throw new UsageError('--tls and --insecure-http contradict each other');
  return {
    dataDir: (values.data as string | undefined) ?? defaultDataDir(),
    listen: (values.listen as string[] | undefined) ?? (isRestart ? [] : ['/ip4/0.0.0.0/tcp/7946']),
    api: (values.api as string | undefined) ?? '127.0.0.1:7070',
    name: values.name as string | undefined,
    labels,
    logLevel: level as LogLevel,
    timing: { tickMs, electionTick, heartbeatTick: 1 },
    snapshotEveryEntries: positiveInt(values['snapshot-entries'], 'snapshot-entries'),
    snapshotTailEntries: nonNegativeInt(values['snapshot-tail'], 'snapshot-tail'),
    heartbeatIntervalMs: positiveInt(values['heartbeat-ms'], 'heartbeat-ms'),
    diskCheckMs: positiveInt(values['disk-check-ms'], 'disk-check-ms'),
    downAfterMs: positiveInt(values['down-after-ms'], 'down-after-ms'),
    replaceAfterMs: positiveInt(values['replace-after-ms'], 'replace-after-ms'),
    tls: values.tls === true,
    insecureHttp: values['insecure-http'] === true,
    ...(values.registry !== undefined ? { registry: values.registry as string } : {}),
    ...(values['registry-replicas'] !== undefined ? { registryReplicas: replicasFlag(values['registry-replicas']) } : {}),
    ...(values['registry-tls'] === true ? { registryTls: true } : {}),
    ...(values['registry-gc-every'] !== undefined ? { registryGcEveryMs: gcEveryFlag(values['registry-gc-every']) } : {}),
    ...(values['vip-range'] !== undefined ? { vipRange: vipRangeFlag(values['vip-range']) } : {}),
    ...(values['docker-vip-range'] !== undefined ? { dockerVipRange: dockerVipRangeFlag(values['docker-vip-range']) } : {}),
    ...(values['publish-host'] !== undefined ? { publishHost: String(values['publish-host']) } : {}),
    ...(values['publish-port-offset'] !== undefined ? { publishPortOffset: portOffsetFlag(values['publish-port-offset']) } : {}),
    ...(values['workspace-sync'] !== undefined ? { workspaceSyncMs: workspaceSyncFlag(values['workspace-sync']) } : {}),
    ...(values['build-keep'] !== undefined || values['build-ttl'] !== undefined
      ? {
          buildRetention: {
            keepLast: nonNegativeInt(values['build-keep'], 'build-keep') ?? DEFAULT_BUILD_RETENTION.keepLast,
            ttlMs: values['build-ttl'] !== undefined ? buildTtlFlag(values['build-ttl']) : DEFAULT_BUILD_RETENTION.ttlMs,
          },
        }
      : {}),
  };
}

/** Keeps the process alive until the daemon stops (leave, removal, SIGINT/SIGTERM). */
export async function serveUntilStopped(daemon: { log: Logger; shutdown(reason: string, exitCode?: number): Promise<void>; stopped: Promise<{ reason: string; exitCode: number }> }): Promise<number> {
  // An unsafe uncaught error stops the daemon cleanly with exit code 1.
  processGuard()?.attach({ log: daemon.log, shutdown: (reason) => daemon.shutdown(reason, 1) });
  const onSignal = (sig: string) => void daemon.shutdown(`received ${sig}`);
  process.once('SIGINT', () => onSignal('SIGINT'));
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  const { reason, exitCode } = await daemon.stopped;
  process.stdout.write(`omnid: stopped: ${reason}\n`);
  return exitCode;
}
