// The project flows (issue 16; the Omega seed's Run / Stop / Inspect / Watch flows): `omni run`
// in a directory with .omni/config.yaml, `omni stop`, `omni watch`. Each decides from the app's
// current state only (protocol/apps/user-state.ts: decideRun, decideStop, decideWatch) and keeps
// no state of its own, so Ctrl-C (or kill -9) at any point and a rerun converge: submitting the
// same spec again is `unchanged`, a stop of a stopped app is nothing to do. Network errors are
// retried with exponential backoff and jitter (retry.ts; the client itself fails over to the
// cluster's other nodes); an HTTP error from a node ends the flow with its explanation.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline/promises';
import { UsageError, printJson, timeoutFlagMs } from '../common.js';
import { connect } from './connection.js';
import { readEnvFile, waitHealthy } from './app-io.js';
import { withRetry, isNetworkError } from './retry.js';
import type { ApiClient } from '../../node/api/client.js';
import { OmniError } from '../../node/errors.js';
import { CONFIG_PATH, needsBuild, parseProjectConfig, specFromConfig, type ProjectConfig } from '../../protocol/project/config.js';
import { LogResume } from './log-resume.js';
import { decideRun, decideStop, decideWatch, stateLabel, userState, type StateInput, type UserStateView } from '../../protocol/apps/user-state.js';
import { appNameFromDir } from './run.js';
import { changedWorkspace, deliverToTasks, deliveryNote, readBackTasks, syncProject, type SyncSummary } from './sync.js';

export interface Project {
  dir: string;
  config: ProjectConfig;
}

/** The project directory holding .omni/config.yaml: `start` itself or the nearest parent (as git finds .git). */
export function findProjectDir(start: string): string | undefined {
  for (let d = resolve(start); ; d = dirname(d)) {
    if (existsSync(join(d, CONFIG_PATH))) return d;
    if (dirname(d) === d) return undefined;
  }
}

/** Reads and validates DIR/.omni/config.yaml (every error, each naming its field). */
export function loadProject(dir: string): Project {
  const path = join(dir, CONFIG_PATH);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${path}: ${(err as Error).message} (omni config init creates it)`);
  }
  const r = parseProjectConfig(text, appNameFromDir(dir));
  if (!r.ok) throw new UsageError(`${path} is not valid:\n${r.errors.map((e) => `  ${e.field}: ${e.message}`).join('\n')}`);
  return { dir, config: r.config };
}

/** The app spec of the project (env file read; its variables win over env values). */
export async function projectSpec(p: Project): Promise<Record<string, unknown>> {
  const fileEnv = p.config.envFile ? await readEnvFile(join(p.dir, p.config.envFile)) : {};
  return specFromConfig(p.config, fileEnv);
}

/**
 * The seed's SYNC_AGENT / SYNC_TASK procedures: the project directory against the app's synced
 * workspace (cli/omni/sync.ts, the engine node/sync/engine.ts). `up` runs in omni run before the
 * spec is submitted, `down` in omni stop after the app stopped. Both are a two-way sync in which
 * the cluster's copy wins a conflict (yours is kept as NAME.conflict): first the nodes holding
 * the app's tasks write the tasks' files back into the workspace (POST
 * /v1/apps/NAME/workspace/sync: there the agent's copy wins for a service or lab, the cache's for
 * a job or cron run), then the directory syncs with the workspace. Idempotent and safe to
 * interrupt: the record is written with compare-and-set after the chunks are in, the client's
 * files are renamed into place only once complete, and a rerun plans again from both sides.
 * `up` also creates the workspace (an empty one when the project has no files) so the app's
 * tasks get it. The disk size (disk: in the config) bounds the workspace.
 */
export async function syncWorkspace(client: ApiClient, p: Project, direction: 'up' | 'down', values: Record<string, unknown> = {}): Promise<SyncSummary | undefined> {
  const name = p.config.name;
  const app = await getApp(client, name, { quiet: values.json === true });
  const exists = app !== undefined;
  if (exists) {
    // a node holding a task is gone or cannot read it back: sync with what the cluster has
    const back = await withRetry(() => readBackTasks(client, name), retryOpts({ quiet: values.json === true })).catch((err: Error) => ({ error: err.message }));
    if ('error' in back) say(values, `${name}: the running tasks' files were not all written back first (${back.error}); syncing with the workspace as the cluster has it`);
  }
  const r = await syncProject({
    client,
    app: name,
    dir: p.dir,
    ensureRecord: direction === 'up',
    ...(p.config.diskMB !== undefined ? { limitBytes: p.config.diskMB * 1024 * 1024 } : {}),
  });
  for (const c of r.conflicts) say(values, `${name}: conflict ${c.path}: the ${c.winner}'s copy stays${c.keptAs ? `, the other is kept as ${c.keptAs}` : ''}`);
  for (const s of r.skipped) say(values, `${name}: not synced: ${s.path}: ${s.why}`);
  say(values, r.noop ? `${name}: files in sync (revision ${r.revision})` : `${name}: files synced: ${r.uploaded} up, ${r.downloaded} down, ${r.deletedRemote + r.deletedLocal} deleted (revision ${r.revision})`);
  // omni run of an app that runs: its tasks get the new files now (they read the workspace only when they start)
  if (direction === 'up' && changedWorkspace(r) && app?.tasks?.some((t) => t.state === 'running')) {
    const note = deliveryNote(name, await deliverToTasks(client, name));
    if (note) say(values, note);
  }
  const { plan: _plan, ...summary } = r;
  return summary;
}

/** GET /v1/apps/NAME as the flows read it; undefined when there is no such app. */
export interface AppView extends StateInput {
  name: string;
  userState?: string;
  userStateDetail?: string;
  outcome?: string;
  image?: string | null;
  spec?: Record<string, unknown> & { image?: string; type?: string };
  lab?: { token: string; ip: string; urls: string[] };
  job?: { phase: 'CREATED' | 'RUNNING' | 'STOPPED'; outcome: string; reason?: string };
  reason?: string;
  tasks: (StateInput['tasks'][number] & { id: string; node: string; lastOutput?: string[] })[];
  deployment?: { status: string; message: string };
}

export async function getApp(client: ApiClient, name: string, retry: RetryHooks = {}): Promise<AppView | undefined> {
  return withRetry(async () => {
    const r = await client.raw('GET', `/v1/apps/${encodeURIComponent(name)}`);
    if (r.status === 404) return undefined;
    if (r.status !== 200) {
      const e = (r.body as { error?: { code?: string; message?: string } })?.error;
      throw new OmniError(e?.code ?? `HTTP_${r.status}`, e?.message ?? `HTTP ${r.status}`, { status: r.status });
    }
    const a = r.body as AppView & { deploy?: unknown };
    // the mapping needs deploy as a string: inspect has deployment.status
    return { ...a, deploy: a.deployment?.status ?? String(a.deploy ?? 'stable') } as AppView;
  }, retryOpts(retry));
}

export interface RetryHooks {
  quiet?: boolean;
}
const retryOpts = (h: RetryHooks) => ({
  onRetry: (err: unknown, attempt: number, delay: number) => {
    if (!h.quiet) process.stderr.write(`(${(err as Error).message}; retrying in ${(delay / 1000).toFixed(1)}s, attempt ${attempt + 1})\n`);
  },
});

export const stateOf = (a: AppView | undefined): UserStateView => userState(a);

const say = (values: Record<string, unknown>, line: string) => {
  if (!values.json) process.stderr.write(line + '\n');
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until `done` holds for the app's state (or the timeout). */
async function waitState(client: ApiClient, name: string, done: (v: UserStateView, a: AppView | undefined) => boolean, timeoutMs: number, onChange: (v: UserStateView) => void): Promise<{ view: UserStateView; app: AppView | undefined }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  for (;;) {
    const a = await getApp(client, name);
    const v = stateOf(a);
    const line = `${stateLabel(v)}: ${v.detail}`;
    if (line !== last) onChange(v);
    last = line;
    if (done(v, a)) return { view: v, app: a };
    if (Date.now() > deadline) throw new OmniError('TIMEOUT', `${name} is still ${stateLabel(v)} (${v.detail}) after ${Math.round(timeoutMs / 1000)}s`);
    await sleep(400);
  }
}

/**
 * Waits until every app of `names` is gone from the cluster (its tasks stopped, its records
 * deleted: GET answers 404), printing each change of state through `onChange`; TIMEOUT after
 * `timeoutMs` (the removal goes on without the caller).
 */
export async function waitRemoved(client: ApiClient, names: string[], timeoutMs: number, onChange: (name: string, v: UserStateView) => void): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const name of names) {
    await waitState(client, name, (v) => v.state === 'NONE', Math.max(0, deadline - Date.now()), (v) => {
      if (v.state !== 'NONE') onChange(name, v);
    }).catch((err: unknown) => {
      if (err instanceof OmniError && err.code === 'TIMEOUT') throw new OmniError('TIMEOUT', `${err.message}: its removal goes on in the cluster (omni ps shows it)`);
      throw err;
    });
  }
}

/** The lab's URL(s) and token, as omni run and omni inspect show them. */
export function labLines(a: AppView): string[] {
  if (!a.lab) return [];
  const urls = a.lab.urls.length > 0 ? a.lab.urls : ['(no replica serves yet)'];
  return [...urls.map((u) => `url         ${u}`), `token       ${a.lab.token}`];
}

/**
 * omni run in a project directory. RUN_AGENT_PROCEDURE: look at the state (NONE/DEAD → submit,
 * INIT → wait for it to settle, IDLE/BUSY → submit again, which is a no-op unless the build
 * changed), build first if the project is built by Forge, sync (hook), wait until IDLE, then
 * follow the logs (a service) or show the notebook URL (a lab); a job is followed until it
 * stopped and its outcome is the exit code.
 */
export async function runProject(values: Record<string, unknown>, p: Project, build?: (client: ApiClient, spec: Record<string, unknown>) => Promise<Record<string, unknown>>): Promise<number> {
  const name = p.config.name;
  const timeoutMs = timeoutFlagMs(values.timeout, 300);
  const client = connect(values);
  try {
    let a = await getApp(client, name);
    let v = stateOf(a);
    say(values, `${name}: ${stateLabel(v)}${v.state === 'NONE' ? ' (no app yet)' : ` (${v.detail})`}`);
    const existingType = a ? (a.spec?.type ?? 'service') : undefined;
    if (existingType !== undefined && existingType !== p.config.type) {
      throw new OmniError('CONFLICT', `an app named ${name} of type ${existingType} exists, and ${CONFIG_PATH} says type ${p.config.type}: omni rm ${name} first, or set another name (omni config set name=…)`, { app: name });
    }
    let step = decideRun(v);
    if (step === 'wait') {
      // INIT: wait for IDLE — by waiting for its replicas below (which also reports a crash loop
      // at once); the spec submitted on the way is the one running (a config cannot change while
      // the app runs), so the submit is `unchanged`
      say(values, `${name}: starting: waiting until it is IDLE`);
      step = 'ensure';
    }
    let spec = await projectSpec(p);
    if (needsBuild(p.config)) {
      if (!build) throw new UsageError(`${name} is built from ${p.dir}: omni run needs the build (internal)`);
      // the same source reuses its image (Forge), so this is quick when nothing changed
      spec = await build(client, spec);
    }
    if (step === 'report') {
      // A finished job with this spec: its outcome stands (omni start runs it again).
      const r = await withRetry(() => client.post<{ version: number; changed: boolean; action: string }>('/v1/apps', spec), retryOpts({ quiet: values.json === true }));
      if (!r.changed) {
        say(values, `${name}: finished: ${stateLabel(v)}${a?.job?.reason ? `: ${a.job.reason}` : ''} (omni start ${name} runs it again; omni watch ${name} shows its output)`);
        if (values.json) printJson({ name, state: v.state, outcome: v.outcome, action: r.action });
        return v.outcome === 'succeeded' ? 0 : 1;
      }
      say(values, `${name}: ${r.action} (version ${r.version}): a new run`);
    } else {
      // SYNC_AGENT_PROCEDURE before the process starts: its tasks materialise this workspace.
      await syncWorkspace(client, p, 'up', values);
      const r = await withRetry(() => client.post<{ version: number; changed: boolean; action: string }>('/v1/apps', spec), retryOpts({ quiet: values.json === true }));
      say(values, `${name}: ${r.action} (version ${r.version})`);
      if (p.config.type !== 'job' && p.config.type !== 'cron' && !values.detach) {
        const res = await withRetry(() => waitHealthy(client, name, r.version, timeoutMs, (line) => say(values, `${name}: ${line}`)), retryOpts({}));
        if (!res.ok) {
          process.stdout.write(`${name}: ${res.message}\n`);
          if (res.logs && res.logs.length > 0) process.stdout.write(`last output:\n${res.logs.map((l) => `  ${l}`).join('\n')}\n`);
          return 1;
        }
      }
    }
    a = await getApp(client, name);
    v = stateOf(a);
    if (values.json) {
      printJson({ name, state: v.state, ...(v.outcome ? { outcome: v.outcome } : {}), detail: v.detail, ...(a?.lab ? { lab: a.lab } : {}) });
      if (values.detach || p.config.type === 'lab') return 0;
    } else {
      process.stdout.write(`${name}: ${stateLabel(v)} (${v.detail})\n`);
      if (a?.lab) process.stdout.write(labLines(a).join('\n') + '\n');
    }
    // A lab is used through its URL: no log following (the seed's run flow).
    if (values.detach || p.config.type === 'lab' || values.json) return 0;
    if (p.config.type === 'cron') return 0;
    say(values, `${name}: following its logs (Ctrl-C stops following; the app keeps running)`);
    return await watchApp(values, client, name, { fromStart: p.config.type === 'job' });
  } finally {
    client.close();
  }
}

/** Asks y/N on the terminal; refuses (UsageError) when stdin is not one. */
async function confirm(question: string, refusal: string): Promise<boolean> {
  if (!process.stdin.isTTY) throw new UsageError(refusal);
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${question} [y/N] `);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}

/**
 * omni stop (STOP_AGENT_PROCEDURE / a job's stop): nothing runs → nothing to do; running or
 * starting → ask (unless --yes; refused without it when stdin is not a terminal), stop, and wait
 * until DEAD (a job: STOPPED); already stopping → wait. Then the sync back (hook).
 */
export async function stopFlow(values: Record<string, unknown>, name: string, project?: Project): Promise<number> {
  const timeoutMs = timeoutFlagMs(values.timeout, 120);
  const client = connect(values);
  try {
    const a = await getApp(client, name);
    let v = stateOf(a);
    if (!a) throw new OmniError('NOT_FOUND', `no app named ${name}`);
    const step = decideStop(v, a.state);
    const type = a.spec?.type ?? 'service';
    if (step === 'nothing') {
      say(values, `${name}: nothing runs (${stateLabel(v)})`);
    } else {
      if (step === 'stop') {
        const what = type === 'lab' ? 'lab (its notebook server and running kernels stop; the workspace volume is kept)' : type === 'job' ? 'job (its run stops; omni start resumes it)' : `${type} (${a.replicas} replica(s))`;
        if (values.yes !== true) {
          const ok = await confirm(`stop ${name}, a running ${what}, now ${stateLabel(v)}?`, `${name} is running (${stateLabel(v)}, ${type}): pass --yes to stop it (stdin is not a terminal, so omni stop cannot ask)`);
          if (!ok) {
            say(values, `${name}: not stopped`);
            return 1;
          }
        }
        await withRetry(() => client.post(`/v1/apps/${encodeURIComponent(name)}/stop`, {}), retryOpts({}));
        say(values, `${name}: stopping`);
      }
      if (!values.detach) {
        ({ view: v } = await waitState(client, name, (s) => s.state === 'DEAD' || s.state === 'STOPPED' || s.state === 'NONE', timeoutMs, (s) => say(values, `${name}: ${stateLabel(s)} (${s.detail})`)));
      }
    }
    // the stopped tasks wrote their files back before reporting the stop: bring them here
    if (project) await syncWorkspace(client, project, 'down', values);
    if (values.json) printJson({ name, state: v.state, ...(v.outcome ? { outcome: v.outcome } : {}), detail: v.detail });
    else process.stdout.write(`${name}: ${stateLabel(v)}\n`);
    return 0;
  } finally {
    client.close();
  }
}

/**
 * omni watch (WATCH_AGENT_LOGS_PROCEDURE): while the app is alive, its logs are followed; when
 * the stream is lost (the node answering went away, a task moved), the state is read again
 * (through any node) and the stream reconnected from the time of the last line printed (each
 * line carries its time), leaving out the lines printed before; once
 * the app is dead (stopped, failed, a finished job) what its nodes kept is printed and watch
 * ends. A finished job's exit code is watch's: 0 succeeded, 1 failed.
 */
export async function watchApp(values: Record<string, unknown>, client: ApiClient, name: string, opts: { fromStart?: boolean; tail?: number } = {}): Promise<number> {
  let sinceMs: number | undefined = opts.fromStart ? 0 : undefined;
  // Lines with their time resume exactly (cli/omni/log-resume.ts); a line without one (a node of
  // an older version) cannot be told apart: then from the time it arrived, as before.
  const resume = new LogResume();
  let untimedSinceMs: number | undefined;
  let printedAny = false;
  let streamed = false;
  let quietAttempts = 0;
  const errorsSeen = new Set<string>();
  const multi = { value: false };
  const print = (o: { task?: string; node?: string; line?: string; error?: string }) => {
    if (values.json) return void process.stdout.write(JSON.stringify(o) + '\n');
    if (o.error !== undefined) {
      const k = `${o.task}: ${o.error}`;
      if (!errorsSeen.has(k)) process.stderr.write(`(${o.task} on ${o.node}: ${o.error})\n`);
      errorsSeen.add(k);
      return;
    }
    process.stdout.write((multi.value ? `[${o.task}] ` : '') + o.line + '\n');
  };
  for (;;) {
    const a = await getApp(client, name);
    const v = stateOf(a);
    const d = decideWatch(v);
    if (d === 'missing') throw new OmniError('NOT_FOUND', `no app named ${name}`);
    multi.value = (a?.tasks.length ?? 0) > 1;
    const q = new URLSearchParams({ json: 'true' });
    // from the earliest of: the current tasks' last printed times, the arrival of the last line
    // without a time, the first stream's start when nothing was printed yet (fromStart: 0 until then)
    const resumeAt = resume.resumeAt(new Set((a?.tasks ?? []).map((t) => t.id)));
    const from = [resumeAt, untimedSinceMs, printedAny ? undefined : sinceMs].filter((x): x is number => x !== undefined);
    if (from.length > 0) q.set('since', String(Math.max(0, Math.min(...from))));
    else if (opts.tail !== undefined) q.set('tail', String(opts.tail));
    if (d === 'stream') q.set('follow', 'true');
    let got = 0;
    let buf = '';
    const started = Date.now();
    resume.startStream();
    try {
      await client.stream(`/v1/apps/${encodeURIComponent(name)}/logs?${q}`, (chunk) => {
        buf += chunk;
        let nl: number;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line) continue;
          try {
            const o = JSON.parse(line) as { task?: string; node?: string; line?: string; error?: string; at?: number };
            const at = typeof o.at === 'number' && o.task !== undefined ? o.at : undefined;
            if (at !== undefined && o.line !== undefined && !resume.accept(o.task!, at)) continue; // printed before the reconnect
            print(o);
            if (o.line !== undefined) {
              got++;
              printedAny = true;
              if (at === undefined) untimedSinceMs = Date.now();
            }
          } catch {
            print({ line });
          }
        }
      });
    } catch (err) {
      // an answer from a node (4xx/5xx) is the end; a lost connection is retried
      if (err instanceof OmniError && !isNetworkError(err)) throw err;
      if (!values.json) process.stderr.write(`(log stream lost: ${(err as Error).message}; reconnecting)\n`);
    }
    if (d === 'cached') {
      if (!streamed && got === 0 && !values.json) process.stderr.write(`(${name} is ${stateLabel(v)}; no output kept)\n`);
      if (!values.json) process.stderr.write(`${name}: ${stateLabel(v)}\n`);
      return v.state === 'STOPPED' && v.outcome === 'failed' ? 1 : 0;
    }
    streamed = streamed || got > 0;
    if (sinceMs === undefined) sinceMs = started;
    // reconnect: at once after a stream that delivered, else backing off (a task not started yet)
    quietAttempts = got > 0 ? 0 : quietAttempts + 1;
    await sleep(Math.min(5000, 250 * 2 ** Math.min(quietAttempts, 5)) * (0.5 + Math.random() / 2));
  }
}

/** omni watch NAME (or the project's app). */
export async function watchFlow(values: Record<string, unknown>, name: string): Promise<number> {
  const client = connect(values);
  try {
    return await watchApp(values, client, name, { tail: values.tail !== undefined ? Number(values.tail) : 200 });
  } finally {
    client.close();
  }
}

/** The app NAME given, else the project's (in the current directory or a parent). */
export function appOrProject(positionals: string[], usage: string): { name: string; project?: Project } {
  if (positionals.length > 1) throw new UsageError(`need at most one APP\n\n${usage}`);
  if (positionals.length === 1) {
    const dir = findProjectDir(process.cwd());
    const project = dir ? loadProject(dir) : undefined;
    return { name: positionals[0], ...(project && project.config.name === positionals[0] ? { project } : {}) };
  }
  const dir = findProjectDir(process.cwd());
  if (!dir) throw new UsageError(`need an APP (or run it in a project directory, one with ${CONFIG_PATH})\n\n${usage}`);
  const project = loadProject(dir);
  return { name: project.config.name, project };
}
