// Shared by the app commands: reading spec files (YAML or JSON) and env files, and showing
// a deploy's progress until its tasks are healthy.
import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { ApiClient } from '../../node/client.js';
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

interface InspectView {
  replicas: number;
  healthy: number;
  version: number;
  pending: string;
  deployment: { status: string; message: string };
  tasks: { id: string; version: number; desired: string; state: string; health: string; reason: string }[];
}

/** Polls until the app's replicas of `version` are healthy, it rolled back, or the timeout. */
export async function waitHealthy(client: ApiClient, name: string, version: number, timeoutMs: number, progress: (line: string) => void): Promise<{ ok: boolean; message: string }> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline) {
    const a = await client.get<InspectView>(`/v1/apps/${encodeURIComponent(name)}?stale=true`);
    if (a.version !== version && a.deployment.status === 'rolled-back') return { ok: false, message: `rolled back to version ${a.version}: ${a.deployment.message}` };
    const mine = a.tasks.filter((t) => t.version === version && t.desired === 'run');
    const healthy = mine.filter((t) => t.state === 'running' && (t.health === 'healthy' || t.health === 'none')).length;
    const line = `${healthy}/${a.replicas} healthy${a.pending ? `; ${a.pending}` : ''}`;
    if (line !== last) progress(line);
    last = line;
    if (healthy >= a.replicas && a.deployment.status !== 'deploying') return { ok: true, message: line };
    if (a.deployment.status === 'failed') return { ok: false, message: a.deployment.message };
    await new Promise((r) => setTimeout(r, 300));
  }
  return { ok: false, message: `not healthy after ${Math.round(timeoutMs / 1000)}s (${last})` };
}
