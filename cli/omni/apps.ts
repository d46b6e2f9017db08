// omni ps, inspect, stop, start, rm, scale, endpoints, logs: the app lifecycle commands.
import { formatBytes, parse, printJson, table, timeoutFlagMs, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { OmniError } from '../../node/errors.js';
import { jobLine, type JobView } from './app-io.js';
import { scheduleLine, scheduleRunsTable, type CronRunRow } from './schedule.js';
import type { ScheduleView } from '../../protocol/apps/cron.js';
import { appOrProject, labLines, stopFlow, waitRemoved, watchFlow, type AppView } from './project.js';
import { stateLabel } from '../../protocol/apps/user-state.js';
import { withRetry } from './retry.js';

const one = (positionals: string[], usage: string): string => {
  if (positionals.length !== 1) throw new UsageError(`need exactly one APP\n\n${usage}`);
  return encodeURIComponent(positionals[0]);
};

interface Inspect extends Summary {
  deployment: { status: string; message: string };
  tasks: { id: string; version: number; node: string; desired: string; state: string; health: string; restarts: number; exitCode: number | null; reason: string; cause?: string; stable?: boolean; lastOutput?: string[]; hostPorts: number[] }[];
  events: { atMs: number; message: string }[];
  cronRecord?: { runs: CronRunRow[]; active: { run: number; scheduledMs: number; firedAtMs: number; attempts: number; failures: number }[]; missed: number; skipped: number };
  jobRecord?: { history: { run: number; taskId: string; node: string; outcome: string; exitCode: number | null; cause: string; startedAtMs: number; finishedAtMs: number }[]; runs: { run: number; version: number; status: string; attempts: number; failures: number; finishedAtMs: number; reason: string }[] };
  endpoints: { host: string; ports: Record<string, number> }[];
}

interface Summary { name: string; version: number; state: string; userState?: string; userStateDetail?: string; outcome?: string; lab?: { token: string; ip: string; urls: string[] }; deploy: string; replicas: number; running: number; healthy: number; image: string | null; command: string[] | null; pending: string; reason?: string; failures?: number; type?: string; job?: JobView; schedule?: ScheduleView }

export async function ps(argv: string[]): Promise<number> {
  const USAGE = `usage: omni ps [flags]\n\nLists apps: version, state, replicas healthy/wanted, and why some are not running\n(pending placement, a task's failure cause, the reason a failed app gave up).\n${CONNECTION_HELP}\n`;
  const { values } = parse(argv, CONNECTION_FLAGS, USAGE);
  const client = connect(values);
  try {
    const { apps } = await client.get<{ apps: Summary[] }>('/v1/apps');
    if (values.json) return printJson({ apps }), 0;
    const rows = [['APP', 'VERSION', 'STATE', 'HEALTHY', 'STATUS', 'DEPLOY', 'SOURCE', 'REASON']];
    // A job's STATE is CREATED / RUNNING / STOPPED (succeeded|failed|stopped); HEALTHY shows succeeded/replicas.
    // A cron app's STATE is its schedule, ON or OFF (and the app's state when not running); a service with a schedule adds it.
    const stateOf = (a: Summary) => {
      if (a.job) return a.job.phase === 'STOPPED' && a.job.outcome ? `STOPPED (${a.job.outcome})` : a.job.phase;
      if (a.type === 'cron' && a.schedule) return `schedule ${a.schedule.state}${a.state !== 'running' ? ` (${a.state})` : ''}`;
      return a.schedule ? `${a.state}, schedule ${a.schedule.state}` : a.state;
    };
    const countOf = (a: Summary) => {
      if (a.job) return `${a.job.succeeded}/${a.replicas} done, ${a.job.attempts} tries`;
      const next = a.schedule?.nextFireMs ? `next ${new Date(a.schedule.nextFireMs).toISOString().slice(11, 19)}Z` : '';
      if (a.type === 'cron' && a.schedule) return [`${a.schedule.active.length} running`, `${a.schedule.lastRun} runs`, next].filter(Boolean).join(', ');
      return `${a.healthy}/${a.replicas}`;
    };
    // STATUS: the state a person sees (INIT / IDLE / BUSY / DEAD; a job's CREATED / RUNNING / STOPPED)
    const statusOf = (a: Summary) => (a.userState ? `${a.type === 'lab' ? 'lab ' : ''}${a.userState}${a.outcome ? ` (${a.outcome})` : ''}` : '-');
    for (const a of apps) rows.push([a.name, String(a.version), stateOf(a), countOf(a), statusOf(a), a.deploy, a.image ?? (a.command ?? []).join(' ').slice(0, 40), [a.reason, a.pending].filter(Boolean).join('; ') || '-']);
    process.stdout.write(table(rows));
    return 0;
  } finally {
    client.close();
  }
}

export async function inspect(argv: string[]): Promise<number> {
  const USAGE = `usage: omni inspect [APP] [flags]\n\nSpec, placements, task states and reasons, health, restarts, events; the state a person sees\n(INIT / IDLE / BUSY / DEAD; a job's CREATED / RUNNING / STOPPED with succeeded or failed), a job's\nattempts, exit codes and earlier runs; for a schedule (type cron, or a service's) ON / OFF, the\nlast and next fire times and its runs; a lab's URL and token. Without APP: the app of the project\ndirectory (.omni/config.yaml here or in a parent).\n${CONNECTION_HELP}\n`;
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, USAGE);
  const { name } = appOrProject(positionals, USAGE);
  const client = connect(values);
  try {
    const a = await withRetry(() => client.get<Inspect>(`/v1/apps/${encodeURIComponent(name)}`));
    if (values.json) return printJson(a), 0;
    const out = [`app         ${a.name} (${a.type ?? 'service'}, version ${a.version}, ${a.state})`];
    if (a.userState) out.push(`status      ${a.userState}${a.outcome ? ` (${a.outcome})` : ''}${a.userStateDetail ? `: ${a.userStateDetail}` : ''}`);
    if (a.lab) out.push(...labLines(a as unknown as AppView));
    out.push(`replicas    ${a.healthy}/${a.replicas} healthy, ${a.running} running`, `deployment  ${a.deployment.status}${a.deployment.message ? `: ${a.deployment.message}` : ''}`);
    if (a.job) out.push(`job         ${jobLine(a.job)}`);
    if (a.schedule) out.push(`schedule    ${scheduleLine(a.schedule)}`);
    if (a.schedule?.pending) out.push(`            ${a.schedule.pending}`);
    if (a.reason) out.push(`reason      ${a.reason}`);
    if (a.pending) out.push(`pending     ${a.pending}`);
    // REASON: what the task is doing now; its failure cause when that says more (kept through the restart or stop it caused).
    const why = (t: Inspect['tasks'][number]) => (t.cause && !(t.reason ?? '').includes(t.cause) ? `${t.cause}${t.reason ? ` (${t.reason})` : ''}` : t.reason) || '-';
    out.push('', table([['TASK', 'VER', 'NODE', 'DESIRED', 'STATE', 'HEALTH', 'RESTARTS', 'PORTS', 'REASON'], ...a.tasks.map((t) => [t.id, String(t.version), t.node, t.desired, t.state + (t.exitCode !== null ? ` (${t.exitCode})` : ''), t.health + (t.stable ? ', stable' : ''), String(t.restarts), t.hostPorts.join(','), why(t)])]).trimEnd());
    const failing = a.tasks.filter((t) => t.lastOutput && t.lastOutput.length > 0).slice(-1);
    for (const t of failing) out.push('', `last output of ${t.id} before it failed:`, ...t.lastOutput!.map((l) => `  ${l}`));
    if (a.jobRecord && a.jobRecord.history.length > 0) {
      out.push('', 'job attempts (newest last):', table([['RUN', 'TASK', 'NODE', 'OUTCOME', 'EXIT', 'FINISHED', 'CAUSE'], ...a.jobRecord.history.map((h) => [String(h.run), h.taskId, h.node, h.outcome, h.exitCode === null ? '-' : String(h.exitCode), new Date(h.finishedAtMs).toISOString(), h.cause || '-'])]).trimEnd());
    }
    if (a.jobRecord && a.jobRecord.runs.length > 0) out.push('', 'finished runs:', ...a.jobRecord.runs.map((r) => `  run ${r.run} (version ${r.version}): ${r.status}, ${r.attempts} attempts, ${r.failures} failures${r.reason ? `: ${r.reason}` : ''}`));
    if (a.cronRecord && (a.cronRecord.runs.length > 0 || a.cronRecord.active.length > 0)) out.push('', 'schedule runs (newest last):', scheduleRunsTable(a.cronRecord.active, a.cronRecord.runs));
    out.push('', 'events:');
    for (const e of a.events.slice(-15)) out.push(`  ${new Date(e.atMs).toISOString()}  ${e.message}`);
    process.stdout.write(out.join('\n') + '\n');
    return 0;
  } finally {
    client.close();
  }
}

async function post(argv: string[], verb: string, usage: string, method: 'POST' | 'DELETE', path: (app: string) => string, body?: (values: Record<string, unknown>, rest: string[]) => unknown): Promise<number> {
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, usage);
  const app = encodeURIComponent(positionals[0] ?? '');
  if (!positionals[0]) throw new UsageError(`need an APP\n\n${usage}`);
  const client = connect(values);
  try {
    const r = method === 'POST' ? await client.post(path(app), body ? body(values, positionals.slice(1)) : {}) : await client.delete(path(app));
    if (values.json) printJson(r);
    else process.stdout.write(`${positionals[0]}: ${verb}\n`);
    return 0;
  } finally {
    client.close();
  }
}

const STOP_USAGE = `usage: omni stop [APP] [--yes] [--detach] [--timeout SECONDS] [flags]

Stops the app's tasks and waits until it is DEAD (a job: STOPPED); the app and its spec stay
(omni start, or omni run in its project directory, starts it again; omni rm removes it). A
running app is stopped only after you confirm (y/N), or with --yes; when stdin is not a terminal
omni stop refuses without --yes. An app that runs nothing is left as it is (exit 0). Without
APP: the app of the project directory (.omni/config.yaml here or in a parent). Safe to
interrupt and run again.
  --yes, -y     do not ask
  --detach, -d  do not wait until it stopped
${CONNECTION_HELP}
`;

export async function stop(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, yes: { type: 'boolean', short: 'y' }, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' } }, STOP_USAGE);
  const { name, project } = appOrProject(positionals, STOP_USAGE);
  return stopFlow(values, name, project);
}

const WATCH_USAGE = `usage: omni watch [APP] [--tail N] [--json] [flags]

Streams the app's logs while it is alive (INIT / IDLE / BUSY; a job CREATED / RUNNING); when the
stream is lost (the node answering stopped, a task moved to another node) it reads the state
again through any node and reconnects, from the time of the last line received; once the app is
dead it prints what its nodes kept and ends (a finished job: exit 0 if it succeeded, 1 if it
failed). Network errors are retried with backoff; an error answered by a node ends it. Without
APP: the app of the project directory. --json: {task, node, line} per line.
  --tail N   lines of earlier output first (default 200)
${CONNECTION_HELP}
`;

export async function watch(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, tail: { type: 'string' } }, WATCH_USAGE);
  if (values.tail !== undefined && !/^\d+$/.test(values.tail as string)) throw new UsageError(`--tail must be a whole number, got ${values.tail}`);
  const { name } = appOrProject(positionals, WATCH_USAGE);
  return watchFlow(values, name);
}
export const start = (argv: string[]) => post(argv, 'starting', `usage: omni start APP [flags]\n${CONNECTION_HELP}\n`, 'POST', (a) => `/v1/apps/${a}/start`);
const RM_USAGE = `usage: omni rm APP [--detach] [--timeout SECONDS] [flags]

Removes the app: its tasks stop, then its records are deleted. Waits until it is gone (as
docker compose down does), printing its state as it changes; the removal goes on in the
cluster when omni rm is interrupted or times out.
  --detach, -d  do not wait
  --timeout S   how long to wait (default 120)
${CONNECTION_HELP}
`;

export async function rm(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' } }, RM_USAGE);
  const name = positionals[0];
  if (!name || positionals.length > 1) throw new UsageError(`need one APP\n\n${RM_USAGE}`);
  const timeoutMs = timeoutFlagMs(values.timeout, 120);
  const client = connect(values);
  try {
    const r = await client.delete(`/v1/apps/${encodeURIComponent(name)}`);
    if (!values.json) process.stderr.write(`${name}: removing (its tasks stop, then its records are deleted)\n`);
    if (!values.detach) await waitRemoved(client, [name], timeoutMs, (_n, v) => values.json || process.stderr.write(`${name}: ${stateLabel(v)} (${v.detail})\n`));
    if (values.json) printJson({ ...(r as object), gone: !values.detach });
    else process.stdout.write(values.detach ? `${name}: removing\n` : `${name}: removed\n`);
    return 0;
  } finally {
    client.close();
  }
}

export const scale = (argv: string[]) =>
  post(argv, 'scaling', `usage: omni scale APP N [flags]\n${CONNECTION_HELP}\n`, 'POST', (a) => `/v1/apps/${a}/scale`, (_v, rest) => {
    if (rest.length !== 1 || !/^\d+$/.test(rest[0])) throw new UsageError('usage: omni scale APP N');
    return { replicas: Number(rest[0]) };
  });

export async function endpoints(argv: string[]): Promise<number> {
  const USAGE = `usage: omni endpoints APP [flags]\n\nhost:port of every healthy replica.\n${CONNECTION_HELP}\n`;
  const { values, positionals } = parse(argv, CONNECTION_FLAGS, USAGE);
  const client = connect(values);
  try {
    const r = await client.get<{ endpoints: { task: string; node: string; host: string; ports: Record<string, number> }[] }>(`/v1/apps/${one(positionals, USAGE)}/endpoints`);
    if (values.json) return printJson(r), 0;
    for (const e of r.endpoints) for (const [name, port] of Object.entries(e.ports)) process.stdout.write(`${e.host}:${port}\t${name}\t${e.node}\t${e.task}\n`);
    return 0;
  } finally {
    client.close();
  }
}

/** GET /v1/apps/NAME/stats (node/api/apps-routes.ts). */
export interface StatsView {
  app: string;
  reserved: { cpu: number; memoryBytes: number } | null;
  tasks: { task: string; node: string; state: string; cpuPercent?: number; memoryBytes?: number; error?: string }[];
}

export async function stats(argv: string[]): Promise<number> {
  const USAGE = `usage: omni stats [APP] [flags]

CPU and memory of each of the app's tasks, sampled now by the node that runs it (docker: the
engine's stats; process: the task's processes in /proc), as docker stats --no-stream does. CPU %
is of one core (200% = two cores busy); RESERVED is what the scheduler reserved per task (the
docker driver also enforces it as a limit unless resources.limit is false). Without APP: every
app with a task that is not finished (--json: a list of the per-app answers).
  -f, --follow        sample again every --interval (default 2s) until Ctrl-C, as docker stats
                      does: the table is redrawn on a terminal; --json prints one line per sample
Exit status: 0, or 1 when a task could not be sampled (its node did not answer, or an error).
For history and alerting, scrape each node's /metrics (Prometheus text; see README, Monitoring).
${CONNECTION_HELP}
`;
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, follow: { type: 'boolean', short: 'f' }, interval: { type: 'string' } }, USAGE);
  if (positionals.length > 1) throw new UsageError(`give at most one APP\n\n${USAGE}`);
  const intervalMs = values.interval === undefined ? 2000 : parseIntervalMs(values.interval as string);
  if (values.interval !== undefined && !values.follow) throw new UsageError('--interval goes with --follow (-f)');
  const client = connect(values);
  const sample = async (): Promise<StatsView[]> => {
    if (positionals.length === 1) return [await client.get<StatsView>(`/v1/apps/${encodeURIComponent(positionals[0])}/stats`)];
    const apps = (await client.get<{ apps: { name: string }[] }>('/v1/apps')).apps.map((a) => a.name);
    const views: StatsView[] = [];
    // a few apps at a time: each answer waits for its nodes' samples (about a second with docker)
    for (let i = 0; i < apps.length; i += STATS_APPS_AT_ONCE) {
      views.push(...(await Promise.all(apps.slice(i, i + STATS_APPS_AT_ONCE).map((a) => client.get<StatsView>(`/v1/apps/${encodeURIComponent(a)}/stats`)))).filter((v) => v.tasks.length > 0));
    }
    return views;
  };
  const failed = (views: StatsView[]) => views.some((v) => v.tasks.some((t) => t.error !== undefined && t.state === 'running'));
  try {
    if (!values.follow) {
      const views = await sample();
      if (values.json) printJson(positionals.length === 1 ? views[0] : views);
      else process.stdout.write(formatStats(views, positionals.length === 0));
      return failed(views) ? 1 : 0;
    }
    // --follow: until Ctrl-C; a round that fails (a node restarting) is reported and tried again
    let stop = false;
    let wake: (() => void) | undefined;
    const onSigint = () => ((stop = true), wake?.());
    process.once('SIGINT', onSigint);
    try {
      while (!stop) {
        const started = Date.now();
        let out: string;
        try {
          const views = await sample();
          out = values.json ? JSON.stringify({ atMs: started, stats: positionals.length === 1 ? views[0] : views }) + '\n' : formatStats(views, positionals.length === 0);
        } catch (err) {
          if (err instanceof OmniError && err.code === 'NOT_FOUND') throw err;
          out = values.json ? JSON.stringify({ atMs: started, error: (err as Error).message }) + '\n' : `error: ${(err as Error).message} (trying again)\n`;
        }
        if (stop) break;
        if (!values.json && process.stdout.isTTY) process.stdout.write(`\x1b[H\x1b[2J${new Date(started).toISOString()}  every ${intervalMs / 1000}s, Ctrl-C to stop\n\n`);
        process.stdout.write(out);
        await new Promise<void>((r) => {
          const t = setTimeout(r, Math.max(0, intervalMs - (Date.now() - started)));
          wake = () => (clearTimeout(t), r());
        });
      }
    } finally {
      process.off('SIGINT', onSigint);
    }
    return 0;
  } finally {
    client.close();
  }
}

/** --interval: 500ms, 2s, 1m (at least 200 ms, at most an hour). */
function parseIntervalMs(v: string): number {
  const m = /^(\d+)(ms|s|m)$/.exec(v.trim());
  const ms = m ? Number(m[1]) * { ms: 1, s: 1000, m: 60_000 }[m[2] as 'ms']! : NaN;
  if (!(ms >= 200 && ms <= 3_600_000)) throw new UsageError(`--interval must be a duration from 200ms to 1h (500ms, 2s, 1m), got ${v}`);
  return ms;
}

const STATS_APPS_AT_ONCE = 4;

export function formatStats(views: StatsView[], withApp = false): string {
  if (views.every((v) => v.tasks.length === 0)) return views.length === 1 ? `${views[0].app}: no tasks\n` : 'no tasks\n';
  const rows = [[...(withApp ? ['APP'] : []), 'TASK', 'NODE', 'STATE', 'CPU %', 'MEMORY', 'RESERVED', 'NOTE']];
  for (const r of views) {
    const reserved = r.reserved ? `${r.reserved.cpu} cpu / ${formatBytes(r.reserved.memoryBytes)}` : '-';
    for (const t of r.tasks) {
      rows.push([...(withApp ? [r.app] : []), t.task, t.node, t.state, t.cpuPercent === undefined ? '-' : `${t.cpuPercent.toFixed(1)}%`, t.memoryBytes === undefined ? '-' : formatBytes(t.memoryBytes), reserved, t.error ?? (t.cpuPercent === undefined ? 'not running' : '')]);
    }
  }
  return table(rows);
}

/** "10m", "30s", "2h" or an ISO date → epoch ms. */
export function parseSince(s: string, nowMs = Date.now()): number {
  const m = /^(\d+)(ms|s|m|h|d)$/.exec(s);
  if (m) return nowMs - Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'ms']!;
  const t = Date.parse(s);
  if (Number.isNaN(t)) throw new UsageError(`--since must be a duration (30s, 10m, 2h) or a date, got ${s}`);
  return t;
}

export async function logs(argv: string[]): Promise<number> {
  const USAGE = `usage: omni logs APP [-f] [--since 10m] [--tail N] [--task ID | --run N] [flags]\n\nOutput of the app's tasks, streamed from the nodes that run them (kept after a task exits).\n--run N: only the tasks of a schedule's run N (omni inspect lists the runs; the tasks of\nfinished runs are kept 10 per app).\n--json: one JSON object per line, {task, node, line} (or {task, node, error}).\n${CONNECTION_HELP}\n`;
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, follow: { type: 'boolean', short: 'f' }, since: { type: 'string' }, tail: { type: 'string' }, task: { type: 'string' }, run: { type: 'string' } }, USAGE);
  const app = one(positionals, USAGE);
  const q = new URLSearchParams();
  if (values.follow) q.set('follow', 'true');
  // The API takes a non-negative epoch ms; a since before 1970 means everything.
  if (values.since) q.set('since', String(Math.max(0, parseSince(values.since as string))));
  if (values.tail) q.set('tail', String(values.tail));
  if (values.task) q.set('task', String(values.task));
  if (values.run !== undefined) {
    if (!/^[1-9]\d{0,9}$/.test(String(values.run))) throw new UsageError(`--run must be a run number (1, 2, …), got ${String(values.run).slice(0, 40)}`);
    if (values.task) throw new UsageError('give --task or --run, not both');
    q.set('run', String(values.run));
  }
  if (values.json) q.set('json', 'true');
  const client = connect(values);
  try {
    await client.stream(`/v1/apps/${app}/logs?${q}`, (chunk) => process.stdout.write(chunk));
    return 0;
  } finally {
    client.close();
  }
}
