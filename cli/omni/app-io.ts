// Shared by the app commands: reading spec files (YAML or JSON) and env files, and showing
// a deploy's progress until its tasks are healthy.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { ApiClient } from '../../node/api/client.js';
import { UsageError } from '../common.js';

const MAX_SPEC_FILE_BYTES = 1024 * 1024;

export async function readSpecFile(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    const buf = await readFile(path);
    if (buf.length > MAX_SPEC_FILE_BYTES) throw new UsageError(`${path} is larger than ${MAX_SPEC_FILE_BYTES} bytes`);
    text = buf.toString('utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot read ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = path.endsWith('.json') ? JSON.parse(text) : parseYaml(text, { maxAliasCount: 100 });
  } catch (err) {
    throw new UsageError(`${path} is not valid ${path.endsWith('.json') ? 'JSON' : 'YAML'}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new UsageError(`${path}: the top level must be a mapping of app fields`);
  const spec = doc as Record<string, unknown>;
  if (typeof spec.envFile === 'string') {
    spec.env = { ...(await readEnvFile(spec.envFile)), ...((spec.env as Record<string, string>) ?? {}) };
    delete spec.envFile;
  }
  return spec;
}

/** KEY=VALUE lines; blank lines and # comments ignored; optional surrounding quotes removed. */
export async function readEnvFile(path: string): Promise<Record<string, string>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read env file ${path}: ${(err as Error).message}`);
  }
  const env: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new UsageError(`${path}:${i + 1}: expected KEY=VALUE`);
    env[line.slice(0, eq).trim()] = line.slice(eq + 1).trim().replace(/^(['"])(.*)\1$/, '$2');
  });
  return env;
}

interface TaskView {
  id: string;
  version: number;
  node: string;
  desired: string;
  state: string;
  health: string;
  reason: string;
  cause?: string;
  stable?: boolean;
  lastOutput?: string[];
  restarts: number;
  exitCode: number | null;
}

export interface InspectView {
  name?: string;
  state?: string;
  replicas: number;
  healthy: number;
  version: number;
  pending: string;
  reason?: string;
  deployment: { status: string; message: string };
  tasks: TaskView[];
  type?: string;
  job?: JobView;
}

/** GET /v1/apps/NAME's job summary (type job). */
export interface JobView { phase: 'CREATED' | 'RUNNING' | 'STOPPED'; outcome: string; run: number; succeeded: number; failures: number; attempts: number; retries: number; exitCodes: (number | null)[]; reason: string; retryAtMs: number }

/** One line for a job: "RUNNING (run 1: attempt 2, 1 failure of at most 3 retries, exit codes 1)". */
export function jobLine(j: JobView): string {
  const state = j.phase === 'STOPPED' && j.outcome ? `STOPPED (${j.outcome})` : j.phase;
  const codes = j.exitCodes.length > 0 ? `, exit codes ${j.exitCodes.map((c) => (c === null ? '-' : String(c))).join(',')}` : '';
  return `${state}: run ${j.run}, ${j.attempts} attempt${j.attempts === 1 ? '' : 's'}, ${j.succeeded} succeeded, ${j.failures}/${j.retries} retries used${codes}`;
}

/** Polls a job until its run of `version` is STOPPED (succeeded or failed), or the timeout. */
export async function waitJob(client: ApiClient, name: string, version: number, timeoutMs: number, progress: (line: string) => void): Promise<{ ok: boolean; message: string; job?: JobView; logs?: string[] }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let query = '';
  while (Date.now() < deadline) {
    const a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}${query}`);
    query = '?stale=true';
    const j = a.job;
    if (j && a.version === version) {
      const line = jobLine(j) + (a.pending ? `; ${a.pending}` : '');
      if (j.phase === 'STOPPED') {
        const failedTask = [...a.tasks].reverse().find((t) => t.lastOutput && t.lastOutput.length > 0);
        return { ok: j.outcome === 'succeeded', message: j.outcome === 'failed' ? `${line}: ${j.reason}` : line, job: j, ...(j.outcome !== 'succeeded' && failedTask ? { logs: failedTask.lastOutput } : {}) };
      }
      if (line !== last) progress(line);
      last = line;
    }
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return { ok: false, message: `not finished after ${Math.round(timeoutMs / 1000)}s (${last})` };
}

/** Restarts of one task, seen while waiting, that make it a crash loop. */
export const CRASH_LOOP_RESTARTS = 3;
const POLL_MS = 300;
const LOG_LINES_ON_FAILURE = 10;

export type Verdict = { done: false; progress: string } | { done: true; ok: boolean; message: string; task?: string; logs?: string[] };

/**
 * One look at the app while `omni run`/`deploy` waits for `version`. Success: every replica of
 * the version is stable (serving for update.minHealthyMs without a restart) and the rollout is
 * over. Failure: a rollback, a failed deployment, the app turned failed, or a task of the
 * version restarted CRASH_LOOP_RESTARTS times (counted from `baseline`, its restarts when
 * first seen) without becoming stable.
 */
export function assessDeploy(a: InspectView, version: number, baseline: Map<string, number>): Verdict {
  if (a.version !== version && a.deployment.status === 'rolled-back') return { done: true, ok: false, message: `rolled back to version ${a.version}: ${a.deployment.message}` };
  const mine = a.tasks.filter((t) => t.version === version && t.desired === 'run');
  for (const t of mine) if (!baseline.has(t.id)) baseline.set(t.id, t.restarts);
  if (a.state === 'failed') {
    const last = [...a.tasks].reverse().find((t) => t.version === version);
    return { done: true, ok: false, message: a.reason || 'failed', ...(last ? { task: last.id } : {}), ...(last?.lastOutput?.length ? { logs: last.lastOutput } : {}) };
  }
  if (a.deployment.status === 'failed') return { done: true, ok: false, message: a.deployment.message };
  const looping = mine.find((t) => !t.stable && t.restarts - (baseline.get(t.id) ?? 0) >= CRASH_LOOP_RESTARTS);
  if (looping) {
    const why = looping.cause || looping.reason || 'it keeps exiting';
    const code = looping.exitCode !== null && !/exit(?:ed with)? code/.test(why) ? `, last exit code ${looping.exitCode}` : '';
    const logs = looping.lastOutput && looping.lastOutput.length > 0 ? { logs: looping.lastOutput } : {};
    return { done: true, ok: false, message: `crash loop: task ${looping.id} on ${looping.node} restarted ${looping.restarts} times (${why}${code})`, task: looping.id, ...logs };
  }
  const serving = mine.filter((t) => t.state === 'running' && (t.health === 'healthy' || t.health === 'none'));
  const stable = serving.filter((t) => t.stable === true).length;
  const progress = `${serving.length}/${a.replicas} healthy${serving.length > stable ? ` (${stable} stable)` : ''}${a.pending ? `; ${a.pending}` : ''}`;
  if (stable >= a.replicas && a.deployment.status !== 'deploying' && (a.state ?? 'running') === 'running') return { done: true, ok: true, message: progress };
  return { done: false, progress };
}

/** Polls until the app's replicas of `version` are stable, it failed or rolled back, or the timeout. */
export async function waitHealthy(client: ApiClient, name: string, version: number, timeoutMs: number, progress: (line: string) => void): Promise<{ ok: boolean; message: string; logs?: string[] }> {
  const deadline = Date.now() + timeoutMs;
  const baseline = new Map<string, number>();
  let last = '';
  // The first look is linearizable (the node asked may not have applied the deploy yet); the
  // polls after it may read the node's own replica.
  let query = '';
  while (Date.now() < deadline) {
    const a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}${query}`);
    query = '?stale=true';
    const v = assessDeploy(a, version, baseline);
    // The output the agent kept with the failure; else what the task's log still holds.
    if (v.done) return v.ok || !v.task || v.logs ? v : { ...v, logs: await lastLogLines(client, name, v.task) };
    if (v.progress !== last) progress(v.progress);
    last = v.progress;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
  return { ok: false, message: `not healthy after ${Math.round(timeoutMs / 1000)}s (${last})` };
}

/** The failing task's last output lines (what the crash said), best effort. */
async function lastLogLines(client: ApiClient, name: string, task: string): Promise<string[]> {
  let text = '';
  try {
    await client.stream(`/v1/apps/${encodeURIComponent(name)}/logs?task=${encodeURIComponent(task)}&tail=${LOG_LINES_ON_FAILURE}`, (c) => (text += c));
  } catch (err) {
    return [`(logs unavailable: ${(err as Error).message})`];
  }
  return text.split('\n').filter((l) => l !== '').slice(-LOG_LINES_ON_FAILURE);
}
