// omni compose: a Compose file as a stack on the cluster. The file is parsed and translated on
// this host (protocol/compose: every key supported, refused or warned about by name), services
// with build: go through Forge (as omni build; several at a time), every image is pinned by
// digest, and `up` hands the whole stack to PUT /v1/stacks/NAME: one transaction; the leader
// starts services as their dependencies meet their conditions (StackController).
import { readFileSync, existsSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve, isAbsolute } from 'node:path';
import { parse, printJson, table, timeoutFlagMs, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { waitRemoved } from './project.js';
import { stateLabel } from '../../protocol/apps/user-state.js';
import type { ApiClient } from '../../node/api/client.js';
import { OmniError } from '../../node/errors.js';
import { parseCompose, normalizeProject, ComposeError, type Stack, type StackService } from '../../protocol/compose/parse.js';
import { parseEnvText } from '../../protocol/compose/interpolate.js';
import { pinnedDocument, buildRepository } from '../../protocol/compose/pinned.js';
import { parseImageReference } from '../../protocol/registry/reference.js';
import { StepFailed } from '../../node/forge/runner.js';
import type { BuildResult } from '../../node/forge/builder.js';

const USAGE = `usage: omni compose [-f FILE] [-p PROJECT] COMMAND [flags]

A Compose file (the Compose specification) as a stack of apps on the cluster: each service is
an app named PROJECT-SERVICE; the stack is one record of the cluster state.

commands:
  up       build what has build:, pin every image by digest, apply the stack in one
           transaction, start services in dependency order (depends_on conditions) and wait
           until it is healthy; again with a changed file: only changed services roll
           --detach, -d   don't wait;  --timeout SECONDS (default 300; also how long a service
                          waits for its dependencies before up fails);  --no-build  (images only)
  down     remove the stack's apps and its record, and wait until they are gone (their
           tasks stopped);  --detach, -d  don't wait;  --timeout SECONDS (default 120)
  ps       services with state, replicas healthy/wanted, and the stack's health
           (healthy / degraded / unhealthy, with reasons)
  logs     [SERVICE...] [--follow] [--tail N]  output of the services' tasks, prefixed SERVICE |
  config   the resolved stack: services → Omni app specs, warnings;  --pinned  the derived
           compose file instead (build blocks stripped, image: REPO@sha256:…; builds run or
           are reused first), deployable anywhere without building
  pull     check that every image: is in the cluster's registry and print its digest
  build    build every service with build: through Forge (--parallel N at a time, default 3;
           --rebuild; the same source is reused), print REPO@sha256:… per service

  -f, --file FILE      default: compose.yaml, compose.yml, docker-compose.yaml or
                       docker-compose.yml in the current directory (logs: --file only; -f follows)
  -p, --project-name P default: name: in the file, else the directory's name
  --profile NAME       activate a profile (repeatable; also COMPOSE_PROFILES)
  --env-file FILE      variables for interpolation (default: .env next to the compose file);
                       the CLI's environment wins over it
  --json               machine-readable output (up, down, ps, config, pull, build)
${CONNECTION_HELP}
An unsupported key is an error or a warning naming it (README, Compose stacks, has the table).
`;

const DEFAULT_FILES = ['compose.yaml', 'compose.yml', 'docker-compose.yaml', 'docker-compose.yml'];
const MAX_REFERENCED_FILE_BYTES = 1024 * 1024;
const POLL_MS = 500;

const GLOBAL_FLAGS = {
  ...CONNECTION_FLAGS,
  file: { type: 'string' as const },
  'project-name': { type: 'string' as const, short: 'p' },
  profile: { type: 'string' as const, multiple: true },
  'env-file': { type: 'string' as const },
};

interface Loaded {
  stack: Stack;
  dir: string;
  file: string;
}

/** Finds, reads and parses the compose file (warnings on stderr unless --json). */
export function loadStack(values: Record<string, unknown>): Loaded {
  let file = values.file as string | undefined;
  if (file === undefined) {
    file = DEFAULT_FILES.find((f) => existsSync(f));
    if (!file) throw new UsageError(`no compose file here (${DEFAULT_FILES.join(', ')}): give one with -f FILE`);
  }
  const path = resolve(file);
  let text: string;
  try {
    if (statSync(path).size > MAX_REFERENCED_FILE_BYTES) throw new UsageError(`${file}: larger than ${MAX_REFERENCED_FILE_BYTES} bytes`);
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError(`cannot read ${file}: ${(err as Error).message}`);
  }
  const dir = dirname(path);
  const read = (p: string): string | undefined => {
    const full = isAbsolute(p) ? p : join(dir, p);
    try {
      const st = statSync(full);
      if (!st.isFile()) return undefined;
      if (st.size > MAX_REFERENCED_FILE_BYTES) throw new OmniError('TOO_LARGE', `${p}: larger than ${MAX_REFERENCED_FILE_BYTES} bytes`);
      return readFileSync(full, 'utf8');
    } catch (err) {
      if (err instanceof OmniError) throw err;
      return undefined;
    }
  };
  // Interpolation: .env (or --env-file) under the CLI's environment.
  const envFile = values['env-file'] as string | undefined;
  const dotenvText = envFile !== undefined ? read(envFile) : read('.env');
  if (envFile !== undefined && dotenvText === undefined) throw new UsageError(`--env-file ${envFile}: not found`);
  let env: Record<string, string> = {};
  try {
    if (dotenvText !== undefined) env = parseEnvText(dotenvText, envFile ?? '.env');
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  const profiles = [...((values.profile as string[] | undefined) ?? []), ...(process.env.COMPOSE_PROFILES ? process.env.COMPOSE_PROFILES.split(',').map((s) => s.trim()).filter(Boolean) : [])];
  try {
    const stack = parseCompose({ text, file: basename(path), dirName: basename(dir), env, profiles, readFile: read, ...(values['project-name'] ? { project: values['project-name'] as string } : {}) });
    if (!values.json) for (const w of stack.warnings) process.stderr.write(`warning: ${w}\n`);
    return { stack, dir, file: path };
  } catch (err) {
    if (err instanceof ComposeError) {
      if (!values.json) for (const w of err.warnings) process.stderr.write(`warning: ${w}\n`);
      throw new OmniError('INVALID_COMPOSE', `${basename(path)}: ${err.message}`, { errors: err.errors });
    }
    throw err;
  }
}

/** Splits `omni compose [globals] CMD [flags]`: the first bare word is the command. */
function splitCommand(argv: string[]): { cmd: string | undefined; rest: string[] } {
  const takesValue = new Set(['-f', '--file', '-p', '--project-name', '--profile', '--env-file', '--addr', '--token', '--ca']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (takesValue.has(a)) {
      i++;
      continue;
    }
    if (!a.startsWith('-')) return { cmd: a, rest: [...argv.slice(0, i), ...argv.slice(i + 1)] };
  }
  return { cmd: undefined, rest: argv };
}

export async function compose(argv: string[]): Promise<number> {
  const { cmd, rest } = splitCommand(argv);
  if (cmd === undefined) {
    if (rest.includes('--help') || rest.includes('-h')) return process.stdout.write(USAGE), 0;
    throw new UsageError(`give a command\n\n${USAGE}`);
  }
  // -f is the file, except for logs (where it follows, as docker compose logs -f does).
  const fileFlag = cmd === 'logs' ? { file: { type: 'string' as const } } : { file: { type: 'string' as const, short: 'f' } };
  const flags = { ...GLOBAL_FLAGS, ...fileFlag };
  switch (cmd) {
    case 'config': {
      const { values } = parse(rest, { ...flags, pinned: { type: 'boolean' }, parallel: { type: 'string' }, rebuild: { type: 'boolean' } }, USAGE);
      return config(values);
    }
    case 'build': {
      const { values, positionals } = parse(rest, { ...flags, parallel: { type: 'string' }, rebuild: { type: 'boolean' } }, USAGE);
      return buildCmd(values, positionals);
    }
    case 'pull': {
      const { values } = parse(rest, flags, USAGE);
      return pull(values);
    }
    case 'up': {
      const { values } = parse(rest, { ...flags, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' }, 'no-build': { type: 'boolean' }, parallel: { type: 'string' }, rebuild: { type: 'boolean' } }, USAGE);
      return up(values);
    }
    case 'down': {
      const { values } = parse(rest, { ...flags, detach: { type: 'boolean', short: 'd' }, timeout: { type: 'string' } }, USAGE);
      return down(values);
    }
    case 'ps': {
      const { values } = parse(rest, flags, USAGE);
      return ps(values);
    }
    case 'logs': {
      const { values, positionals } = parse(rest, { ...flags, follow: { type: 'boolean', short: 'f' }, tail: { type: 'string' } }, USAGE);
      return logs(values, positionals);
    }
    default:
      throw new UsageError(`unknown compose command ${cmd}\n\n${USAGE}`);
  }
}

/** The project name without parsing the whole file (down, ps, logs work even if the file changed since). */
function projectOf(values: Record<string, unknown>): string {
  // -p alone names the stack: the file need not be here (or parse) to look at or remove it.
  if (typeof values['project-name'] === 'string' && values.file === undefined) {
    const p = normalizeProject(values['project-name']);
    if (!p) throw new UsageError(`-p ${values['project-name']}: not a project name`);
    return p;
  }
  return loadStack({ ...values, json: true }).stack.project;
}

// ------------------------------------------------------------------ images: build and pin

function parallelOf(values: Record<string, unknown>): number {
  const p = values.parallel === undefined ? 3 : Number(values.parallel);
  if (!Number.isInteger(p) || p < 1 || p > 32) throw new UsageError(`--parallel must be a whole number from 1 to 32, got ${String(values.parallel)}`);
  return p;
}

/** Runs fn over items, at most `limit` at once; the first failure is thrown once all settled. */
async function pool<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/**
 * Builds every service with build: (Forge; the same source reuses its image), at most
 * --parallel at once. Returns service → REPO@sha256:…; a failed build is an error naming the
 * service and its failing step.
 */
async function buildAll(client: ApiClient, values: Record<string, unknown>, loaded: Loaded, only: string[] = []): Promise<Map<string, BuildResult>> {
  const { stack, dir } = loaded;
  const todo = stack.services.filter((s) => s.build && (only.length === 0 || only.includes(s.service)));
  for (const o of only) if (!stack.services.some((s) => s.service === o)) throw new UsageError(`no service ${o} in the file`);
  const out = new Map<string, BuildResult>();
  if (todo.length === 0) return out;
  const { forgeBuild, buildFlags } = await import('./build.js');
  const parallel = parallelOf(values);
  buildFlags(values);
  const say = (line: string) => {
    if (!values.json) process.stderr.write(`${line}\n`);
  };
  say(`building ${todo.length} service(s), ${Math.min(parallel, todo.length)} at a time: ${todo.map((s) => s.service).join(', ')}`);
  const started = Date.now();
  // Several builds at once: their step logs would interleave, so each build is quiet and a
  // failure shows its step's last lines.
  const buildValues = { ...values, quiet: parallel > 1 && todo.length > 1 ? true : values.quiet };
  const results = await pool(todo, parallel, async (s) => {
    const ctx = resolve(dir, s.build!.context);
    if (!existsSync(ctx) || !statSync(ctx).isDirectory()) throw new OmniError('INVALID_COMPOSE', `services.${s.service}.build.context: ${s.build!.context} is not a directory`);
    const repo = buildRepository(stack.project, s.service, s.image);
    const t0 = Date.now();
    say(`${s.service}: building ${s.build!.context} → ${repo}`);
    // build.dockerfile (another than ./Dockerfile), args or target: a Docker build of exactly that
    // (its tag then says which: sha-<digest of source, dockerfile, args, target>); else Forge detects.
    const b = s.build!;
    const docker = b.dockerfile !== 'Dockerfile' || Object.keys(b.args).length > 0 || b.target !== undefined;
    const r = await forgeBuild(client, buildValues, { dir: ctx, repo, tags: [], label: `${s.service}: building`, ...(docker ? { dockerfile: b.dockerfile, ...(Object.keys(b.args).length ? { buildArgs: b.args } : {}), ...(b.target !== undefined ? { target: b.target } : {}) } : {}) });
    say(`${s.service}: ${r.reused ? 'reused' : 'built'} ${r.repository}@${r.digest} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    for (const w of r.warnings) say(`warning: ${s.service}: ${w}`);
    return [s.service, r] as const;
  });
  const failed = results.flatMap((r, i) => (r.status === 'rejected' ? [{ service: todo[i].service, err: r.reason as Error }] : []));
  if (failed.length > 0) {
    const lines = failed.map(({ service, err }) => `${service}: ${err instanceof StepFailed ? `${err.message}` : err.message}`);
    throw new OmniError('BUILD_FAILED', `build failed for ${failed.map((f) => f.service).join(', ')}:\n${lines.join('\n')}`, { services: failed.map((f) => f.service) });
  }
  for (const r of results) if (r.status === 'fulfilled') out.set(r.value[0], r.value[1]);
  say(`builds done in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  return out;
}

/** An image: of the cluster's registry pinned to REPO@sha256:…; another registry's (or one not found) as it is, with why. */
async function pinImages(client: ApiClient, values: Record<string, unknown>, services: StackService[]): Promise<Map<string, { image: string; pinned: boolean; why?: string }>> {
  const out = new Map<string, { image: string; pinned: boolean; why?: string }>();
  const todo = services.filter((s) => !s.build && typeof s.spec.image === 'string');
  if (todo.length === 0) return out;
  const { registryFor } = await import('./registry-client.js');
  const reg = await registryFor(client, values);
  for (const s of todo) {
    const image = s.spec.image as string;
    const r = parseImageReference(image);
    if (!r.ok) {
      out.set(s.service, { image, pinned: false, why: r.message });
      continue;
    }
    const { host, repository, tag, digest } = r.ref;
    if (host && !/^(localhost|127\.|\[::1\])/.test(host)) {
      out.set(s.service, { image, pinned: false, why: `${host} is another registry: import the image (omni images import/push) and name it REPO:TAG` });
      continue;
    }
    const d = digest ?? (await reg.resolveTag(repository, tag ?? 'latest'));
    if (d) out.set(s.service, { image: `${repository}@${d}`, pinned: true });
    else out.set(s.service, { image, pinned: false, why: `${repository}:${tag ?? 'latest'} is not in the cluster's registry (omni images import or push it)` });
  }
  return out;
}

/** Every service's image pinned (builds run or reused first); services whose image could not be pinned keep it, with a warning. */
async function resolveImages(client: ApiClient, values: Record<string, unknown>, loaded: Loaded): Promise<{ pins: Record<string, string>; built: Map<string, BuildResult>; unpinned: { service: string; image: string; why: string }[] }> {
  const built = values['no-build'] ? new Map<string, BuildResult>() : await buildAll(client, values, loaded);
  if (values['no-build']) {
    const needs = loaded.stack.services.filter((s) => s.build && s.spec.image === undefined);
    if (needs.length > 0) throw new UsageError(`--no-build: ${needs.map((s) => s.service).join(', ')} have build: and no image:`);
  }
  const pins: Record<string, string> = {};
  for (const [service, r] of built) pins[service] = `${r.repository}@${r.digest}`;
  const unpinned: { service: string; image: string; why: string }[] = [];
  for (const [service, p] of await pinImages(client, values, loaded.stack.services)) {
    if (p.pinned) pins[service] = p.image;
    else unpinned.push({ service, image: p.image, why: p.why ?? '' });
  }
  return { pins, built, unpinned };
}

// ------------------------------------------------------------------ commands

/** The spec with each secret file's content replaced by its size. */
function redactSecrets(spec: Record<string, unknown>): Record<string, unknown> {
  if (!Array.isArray(spec.files)) return spec;
  return { ...spec, files: (spec.files as { kind: string; data: string }[]).map((f) => (f.kind === 'secret' ? { ...f, data: `(secret, ${Buffer.from(f.data, 'base64').length} bytes, not shown)` } : f)) };
}

async function config(values: Record<string, unknown>): Promise<number> {
  const loaded = loadStack(values);
  const { stack } = loaded;
  if (!values.pinned) {
    // A secret's content is never printed (the admin API still returns it to admin-token holders).
    const shown = stack.services.map((s) => ({ ...s, spec: redactSecrets(s.spec) }));
    if (values.json) return printJson({ project: stack.project, services: shown, inactive: stack.inactive, warnings: stack.warnings }), 0;
    process.stdout.write(`project ${stack.project}${stack.inactive.length ? ` (inactive profiles: ${stack.inactive.join(', ')})` : ''}\n`);
    for (const s of shown) {
      const deps = s.dependsOn.map((d) => `${d.service} (${d.condition.replace('service_', '')})`).join(', ');
      process.stdout.write(`\n${s.service} → app ${s.app}${s.build ? ` (build ${s.build.context})` : ''}${deps ? `, after ${deps}` : ''}${s.critical ? '' : ', not critical'}\n`);
      process.stdout.write(JSON.stringify(s.spec, null, 2).replace(/^/gm, '  ') + '\n');
    }
    return 0;
  }
  const client = connect(values);
  try {
    const { pins, unpinned } = await resolveImages(client, values, loaded);
    for (const u of unpinned) process.stderr.write(`warning: services.${u.service}.image ${u.image} is not pinned: ${u.why}\n`);
    const text = pinnedDocument(stack, pins);
    if (values.json) return printJson({ project: stack.project, pins, unpinned, file: text }), 0;
    process.stdout.write(text);
    return 0;
  } finally {
    client.close();
  }
}

async function buildCmd(values: Record<string, unknown>, only: string[]): Promise<number> {
  const loaded = loadStack(values);
  const client = connect(values);
  try {
    const built = await buildAll(client, values, loaded, only);
    if (values.json) return printJson({ project: loaded.stack.project, images: Object.fromEntries([...built].map(([s, r]) => [s, { image: `${r.repository}@${r.digest}`, reused: r.reused, sourceDigest: r.sourceDigest }])) }), 0;
    if (built.size === 0) process.stdout.write('no service has build:\n');
    for (const [s, r] of built) process.stdout.write(`${s}\t${r.repository}@${r.digest}\n`);
    return 0;
  } finally {
    client.close();
  }
}

async function pull(values: Record<string, unknown>): Promise<number> {
  const loaded = loadStack(values);
  const client = connect(values);
  try {
    const pins = await pinImages(client, values, loaded.stack.services);
    const missing = [...pins].filter(([, p]) => !p.pinned);
    if (values.json) printJson({ images: Object.fromEntries(pins) });
    else for (const [s, p] of pins) process.stdout.write(p.pinned ? `${s}\t${p.image}\n` : `${s}\tNOT PINNED: ${p.why}\n`);
    return missing.length > 0 ? 1 : 0;
  } finally {
    client.close();
  }
}

interface StackView {
  name: string;
  generation: number;
  status: 'starting' | 'up' | 'failed';
  held: string[];
  failure: { service: string; reason: string; lastOutput: string[]; notStarted: string[] } | null;
  health: string;
  reasons: string[];
  services: { service: string; app: string; version: number; state: string; replicas: number; running: number; healthy: number; job: string | null; critical: boolean; up: boolean; reason: string; lastOutput: string[] }[];
}

async function up(values: Record<string, unknown>): Promise<number> {
  const loaded = loadStack(values);
  const { stack } = loaded;
  const timeoutS = values.timeout === undefined ? 300 : Number(values.timeout);
  if (!Number.isFinite(timeoutS) || timeoutS < 1 || timeoutS > 3600) throw new UsageError(`--timeout must be 1 to 3600 seconds, got ${String(values.timeout)}`);
  const client = connect(values);
  const say = (line: string) => {
    if (!values.json) process.stderr.write(`${line}\n`);
  };
  try {
    const { pins, unpinned } = await resolveImages(client, values, loaded);
    for (const u of unpinned) say(`warning: services.${u.service}.image ${u.image} is not pinned by this CLI: ${u.why}`);
    const services = stack.services.map((s) => ({
      service: s.service,
      app: s.app,
      spec: { ...s.spec, ...(pins[s.service] ? { image: pins[s.service] } : {}) },
      dependsOn: s.dependsOn,
      critical: s.critical,
    }));
    const r = await client.put<{ stack: string; generation: number; changed: boolean; services: { service: string; app: string; action: string; version: number; held: boolean }[] }>(`/v1/stacks/${encodeURIComponent(stack.project)}`, { services, startTimeoutMs: Math.round(timeoutS * 1000) });
    for (const s of r.services) say(`${s.service}: ${s.action} (${s.app} version ${s.version})`);
    if (values.detach) {
      if (values.json) printJson(r);
      return 0;
    }
    const res = await waitStack(client, stack.project, timeoutS * 1000, say);
    if (values.json) printJson({ ...r, result: res });
    else printOutcome(res);
    return res.status === 'up' && res.health !== 'unhealthy' ? 0 : 1;
  } finally {
    client.close();
  }
}

function printOutcome(v: StackView): void {
  if (v.status === 'failed' && v.failure) {
    process.stdout.write(`${v.name}: up failed: ${v.failure.reason}\n`);
    if (v.failure.lastOutput.length > 0) process.stdout.write(`${v.failure.service}'s last output:\n${v.failure.lastOutput.map((l) => `  ${l}`).join('\n')}\n`);
    process.stdout.write(`not started: ${v.failure.notStarted.join(', ')}\n`);
    return;
  }
  if (v.status !== 'up') {
    process.stdout.write(`${v.name}: still starting (waiting: ${v.held.join(', ')})\n${v.reasons.map((r) => `  ${r}`).join('\n')}\n`);
    return;
  }
  process.stdout.write(`${v.name} is ${v.health}${v.reasons.length ? `:\n${v.reasons.map((r) => `  ${r}`).join('\n')}` : ''}\n`);
  for (const s of v.services) if (!s.up && s.lastOutput.length > 0) process.stdout.write(`${s.service}'s last output:\n${s.lastOutput.map((l) => `  ${l}`).join('\n')}\n`);
}

/**
 * Follows the stack until every service started and is up (or the stack failed, or the timeout):
 * one progress line per change.
 */
async function waitStack(client: ApiClient, name: string, timeoutMs: number, say: (line: string) => void): Promise<StackView> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  let v = await client.get<StackView>(`/v1/stacks/${encodeURIComponent(name)}`);
  // A little past the server's own start timeout, so its failure (with the reason) is what we see.
  while (Date.now() < deadline + 5000) {
    if (v.status === 'failed') return v;
    // a service that gave up (tasks kept failing, a job failed): no use waiting for the timeout
    if (v.services.some((s) => s.state === 'failed' || s.job === 'failed')) return v;
    const line = v.services.map((s) => `${s.service} ${s.state}${s.job ? '' : ` ${s.healthy}/${s.replicas}`}`).join(', ');
    if (line !== last) say(`  ${line}`);
    last = line;
    if (v.status === 'up' && v.services.every((s) => s.up && (s.job ? s.job === 'succeeded' || s.job === 'running' : s.healthy >= s.replicas))) return v;
    if (Date.now() > deadline && v.status === 'up') return v;
    await new Promise((r) => setTimeout(r, POLL_MS));
    v = await client.get<StackView>(`/v1/stacks/${encodeURIComponent(name)}?stale=true`);
  }
  return v;
}

async function down(values: Record<string, unknown>): Promise<number> {
  const timeoutMs = timeoutFlagMs(values.timeout, 120); // a bad flag is refused before anything is removed
  const project = projectOf(values);
  const client = connect(values);
  try {
    const r = await client.raw('DELETE', `/v1/stacks/${encodeURIComponent(project)}`);
    if (r.status === 404) {
      if (values.json) printJson({ stack: project, removed: [] });
      else process.stdout.write(`no stack ${project} on the cluster\n`);
      return 0;
    }
    if (r.status >= 300) throw new OmniError('FAILED', `down: ${JSON.stringify(r.body).slice(0, 500)}`);
    const body = r.body as { removed: string[] };
    if (values.detach) {
      if (values.json) printJson(body);
      else process.stdout.write(`${project}: removing ${body.removed.length ? body.removed.join(', ') : 'nothing'}\n`);
      return 0;
    }
    if (!values.json) process.stderr.write(`${project}: removing ${body.removed.length ? body.removed.join(', ') : 'nothing'}\n`);
    await waitRemoved(client, body.removed, timeoutMs, (app, v) => values.json || process.stderr.write(`  ${app}: ${stateLabel(v)} (${v.detail})\n`));
    if (values.json) printJson({ ...body, gone: true });
    else process.stdout.write(`${project}: removed${body.removed.length ? ` ${body.removed.join(', ')}` : ''}\n`);
    return 0;
  } finally {
    client.close();
  }
}

async function ps(values: Record<string, unknown>): Promise<number> {
  const project = projectOf(values);
  const client = connect(values);
  try {
    const v = await client.get<StackView>(`/v1/stacks/${encodeURIComponent(project)}`);
    if (values.json) return printJson(v), 0;
    const rows = [['SERVICE', 'APP', 'VERSION', 'STATE', 'HEALTHY', 'CRITICAL', 'REASON']];
    for (const s of v.services) rows.push([s.service, s.app, String(s.version), s.state, s.job ? `job ${s.job}` : `${s.healthy}/${s.replicas}`, s.critical ? 'yes' : 'no', s.reason]);
    process.stdout.write(table(rows) + '\n');
    process.stdout.write(`\nstack ${v.name} (generation ${v.generation}): ${v.status}, ${v.health}${v.reasons.length ? `\n${v.reasons.map((r) => `  ${r}`).join('\n')}` : ''}\n`);
    return v.health === 'unhealthy' ? 1 : 0;
  } finally {
    client.close();
  }
}

async function logs(values: Record<string, unknown>, only: string[]): Promise<number> {
  const project = projectOf(values);
  const client = connect(values);
  try {
    const v = await client.get<StackView>(`/v1/stacks/${encodeURIComponent(project)}`);
    for (const o of only) if (!v.services.some((s) => s.service === o)) throw new UsageError(`no service ${o} in stack ${project}`);
    const services = v.services.filter((s) => only.length === 0 || only.includes(s.service));
    const q = new URLSearchParams();
    if (values.follow) q.set('follow', 'true');
    if (values.tail) q.set('tail', String(values.tail));
    const width = Math.max(...services.map((s) => s.service.length));
    await Promise.all(
      services.map(async (s) => {
        let pending = '';
        const prefix = `${s.service.padEnd(width)} | `;
        await client
          .stream(`/v1/apps/${encodeURIComponent(s.app)}/logs?${q}`, (chunk) => {
            pending += chunk;
            const lines = pending.split('\n');
            pending = lines.pop()!;
            for (const l of lines) process.stdout.write(prefix + l + '\n');
          })
          .catch((err: Error) => process.stdout.write(`${prefix}(logs unavailable: ${err.message})\n`));
        if (pending) process.stdout.write(prefix + pending + '\n');
      }),
    );
    return 0;
  } finally {
    client.close();
  }
}
