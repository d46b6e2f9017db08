// `.omni/build.yaml`: a project's overrides of what Forge detects (pure: text in, a validated
// config or every error out, each naming its field). Parsed with the `yaml` package; unknown
// fields are refused (a typo must not be silently ignored), every list and string is bounded.
//
//   type: node | python | static | procfile | dockerfile   # skip detection
//   runtime: omni/node:24          # the runtime base image (REPO:TAG in the cluster's registry)
//   env: { NODE_ENV: production }  # build and runtime environment
//   install: npm ci --omit=dev     # the dependency step (its layer is keyed by the lockfile's hash)
//   steps:                         # build steps, in order; a `parallel:` group runs at once
//     - name: build
//       run: npm run build
//     - parallel:
//         - { name: lint, run: npm run lint }
//         - { name: test, run: npm test }
//   cache: [node_modules/.cache]   # paths kept between builds on a node (relative, inside the tree)
//   start: node server.js          # the command the image runs (a string for sh -c, or a list)
//   ports: [8080]
//   health: { path: /health, port: 8080, interval: 10s }
//   resources: { cpu: 2, memory: 2G }   # for the build
import { parse as parseYaml } from 'yaml';
import { parseCpu, parseMemoryMB } from '../apps/spec.js';

export const BUILD_YAML_PATH = '.omni/build.yaml';
export const MAX_BUILD_YAML_BYTES = 64 * 1024;
export const MAX_STEPS = 64;
export const MAX_PARALLEL = 16;
export const MAX_COMMAND_CHARS = 8192;
export const MAX_CACHE_PATHS = 32;
export const MAX_ENV = 256;
export const MAX_PORTS = 16;

export const PROJECT_TYPES = ['node', 'python', 'static', 'procfile', 'dockerfile'] as const;
export type ProjectType = (typeof PROJECT_TYPES)[number];

export interface BuildStep {
  name: string;
  /** A shell command (run with sh -c). */
  run: string;
}
/** Steps of one group run at the same time; groups run one after the other. */
export type StepGroup = BuildStep[];

export interface HealthConfig {
  path: string;
  port: number;
  intervalMs: number;
}

export interface BuildYaml {
  type?: ProjectType;
  runtime?: string;
  env: Record<string, string>;
  install?: string;
  steps?: StepGroup[];
  cache: string[];
  start?: string[];
  ports?: number[];
  health?: HealthConfig;
  resources?: { cpu?: number; memoryMB?: number };
}

export interface FieldError {
  field: string;
  message: string;
}
export type BuildYamlResult = { ok: true; config: BuildYaml } | { ok: false; errors: FieldError[] };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

class Errors {
  readonly list: FieldError[] = [];
  add(field: string, message: string): undefined {
    this.list.push({ field, message });
    return undefined;
  }
}

function known(e: Errors, o: Obj, field: string, allowed: readonly string[]): void {
  for (const k of Object.keys(o)) {
    if (allowed.includes(k)) continue;
    const near = allowed.find((a) => a.startsWith(k) || k.startsWith(a));
    e.add(field ? `${field}.${k}` : k, `unknown field '${k}'${near ? ` (did you mean '${near}'?)` : ''}; allowed: ${allowed.join(', ')}`);
  }
}

function command(e: Errors, v: unknown, field: string): string | undefined {
  if (typeof v !== 'string' || v.trim() === '') return e.add(field, 'must be a non-empty command (a string run with sh -c)');
  if (v.length > MAX_COMMAND_CHARS) return e.add(field, `longer than ${MAX_COMMAND_CHARS} characters`);
  if (v.includes('\0')) return e.add(field, 'contains a NUL character');
  return v;
}

const STEP_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$/;

function step(e: Errors, v: unknown, field: string, names: Set<string>, index: number): BuildStep | undefined {
  if (typeof v === 'string') {
    const run = command(e, v, field);
    if (run === undefined) return undefined;
    const name = `step-${index + 1}`;
    names.add(name);
    return { name, run };
  }
  if (!isObj(v)) return e.add(field, 'must be a command, { name, run } or { parallel: [...] }');
  known(e, v, field, ['name', 'run']);
  const name = v.name === undefined ? `step-${index + 1}` : v.name;
  if (typeof name !== 'string' || !STEP_NAME.test(name)) return e.add(`${field}.name`, 'must be 1-63 letters, digits, _ . - (starting with a letter or digit)');
  if (names.has(name)) return e.add(`${field}.name`, `'${name}' names another step too; step names must be unique (a failure names its step)`);
  names.add(name);
  const run = command(e, v.run, `${field}.run`);
  return run === undefined ? undefined : { name, run };
}

function steps(e: Errors, v: unknown): StepGroup[] | undefined {
  if (!Array.isArray(v)) return e.add('steps', 'must be a list of steps');
  if (v.length > MAX_STEPS) return e.add('steps', `at most ${MAX_STEPS} steps`);
  const names = new Set<string>();
  const out: StepGroup[] = [];
  let n = 0;
  v.forEach((s, i) => {
    const field = `steps[${i}]`;
    if (isObj(s) && 'parallel' in s) {
      known(e, s, field, ['parallel']);
      const p = s.parallel;
      if (!Array.isArray(p) || p.length === 0) return e.add(`${field}.parallel`, 'must be a non-empty list of steps');
      if (p.length > MAX_PARALLEL) return e.add(`${field}.parallel`, `at most ${MAX_PARALLEL} steps in one group`);
      const group: BuildStep[] = [];
      p.forEach((ps, j) => {
        if (isObj(ps) && 'parallel' in ps) return e.add(`${field}.parallel[${j}]`, 'parallel groups do not nest');
        const st = step(e, ps, `${field}.parallel[${j}]`, names, n++);
        if (st) group.push(st);
      });
      out.push(group);
      return;
    }
    const st = step(e, s, field, names, n++);
    if (st) out.push([st]);
  });
  return out;
}

/** A relative path inside the tree (no `..`, not absolute), normalised. */
export function treePath(p: unknown): string | undefined {
  if (typeof p !== 'string' || p === '' || p.length > 512) return undefined;
  // eslint-disable-next-line no-control-regex
  if (p.startsWith('/') || /[\x00-\x1f\\]/.test(p)) return undefined;
  const parts = p.replace(/^(\.\/)+/, '').replace(/\/+$/, '').split('/');
  if (parts.some((c) => c === '' || c === '.' || c === '..')) return undefined;
  return parts.join('/');
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** REPO[:TAG] or REPO@sha256:… in the cluster's registry. */
const IMAGE_REF = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})?$/;

function durationMs(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v > 0 ? v * 1000 : undefined;
  if (typeof v !== 'string') return undefined;
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(v.trim());
  if (!m) return undefined;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 's'];
}

function port(v: unknown): number | undefined {
  return Number.isInteger(v) && (v as number) >= 1 && (v as number) <= 65535 ? (v as number) : undefined;
}

/** Validates an already-parsed document. */
export function validateBuildYaml(doc: unknown): BuildYamlResult {
  const e = new Errors();
  if (doc === null || doc === undefined) return { ok: true, config: { env: {}, cache: [] } };
  if (!isObj(doc)) return { ok: false, errors: [{ field: '(document)', message: 'must be a mapping of fields (type, runtime, env, install, steps, cache, start, ports, health, resources)' }] };
  known(e, doc, '', ['type', 'runtime', 'env', 'install', 'steps', 'cache', 'start', 'ports', 'health', 'resources']);
  const config: BuildYaml = { env: {}, cache: [] };

  if (doc.type !== undefined) {
    if (typeof doc.type === 'string' && (PROJECT_TYPES as readonly string[]).includes(doc.type)) config.type = doc.type as ProjectType;
    else e.add('type', `must be one of ${PROJECT_TYPES.join(', ')}`);
  }
  if (doc.runtime !== undefined) {
    if (typeof doc.runtime === 'string' && doc.runtime.length <= 256 && IMAGE_REF.test(doc.runtime)) config.runtime = doc.runtime;
    else e.add('runtime', 'must be an image of the cluster registry, REPO[:TAG] or REPO@sha256:… (e.g. omni/node:24; omni images import-rootfs makes one)');
  }
  if (doc.env !== undefined) {
    if (!isObj(doc.env)) e.add('env', 'must be a mapping NAME: value');
    else {
      const entries = Object.entries(doc.env);
      if (entries.length > MAX_ENV) e.add('env', `at most ${MAX_ENV} variables`);
      for (const [k, v] of entries) {
        if (!ENV_NAME.test(k)) e.add(`env.${k}`, 'not a variable name (letters, digits, _; not starting with a digit)');
        else if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') e.add(`env.${k}`, 'must be a string, number or boolean');
        else if (String(v).length > MAX_COMMAND_CHARS || String(v).includes('\0')) e.add(`env.${k}`, `longer than ${MAX_COMMAND_CHARS} characters or contains NUL`);
        else config.env[k] = String(v);
      }
    }
  }
  if (doc.install !== undefined) config.install = command(e, doc.install, 'install');
  if (doc.steps !== undefined) config.steps = steps(e, doc.steps);
  if (doc.cache !== undefined) {
    const list = typeof doc.cache === 'string' ? [doc.cache] : doc.cache;
    if (!Array.isArray(list) || list.length > MAX_CACHE_PATHS) e.add('cache', `must be a list of at most ${MAX_CACHE_PATHS} paths`);
    else
      list.forEach((p, i) => {
        const t = treePath(p);
        if (t === undefined) e.add(`cache[${i}]`, 'must be a relative path inside the project (no .., not absolute)');
        else config.cache.push(t);
      });
  }
  if (doc.start !== undefined) {
    if (typeof doc.start === 'string') {
      const c = command(e, doc.start, 'start');
      if (c !== undefined) config.start = ['/bin/sh', '-c', c];
    } else if (Array.isArray(doc.start) && doc.start.length > 0 && doc.start.length <= 256 && doc.start.every((a) => typeof a === 'string' && a.length <= MAX_COMMAND_CHARS && !a.includes('\0'))) {
      config.start = doc.start as string[];
    } else e.add('start', 'must be a command (a string run with sh -c) or a non-empty list of arguments');
  }
  if (doc.ports !== undefined) {
    const list = Array.isArray(doc.ports) ? doc.ports : [doc.ports];
    if (list.length > MAX_PORTS) e.add('ports', `at most ${MAX_PORTS} ports`);
    else {
      const ports: number[] = [];
      list.forEach((p, i) => {
        const n = port(p);
        if (n === undefined) e.add(`ports[${i}]`, 'must be a port number 1-65535');
        else ports.push(n);
      });
      config.ports = ports;
    }
  }
  if (doc.health !== undefined) {
    const h = doc.health;
    if (!isObj(h)) e.add('health', 'must be a mapping { path, port, interval }');
    else {
      known(e, h, 'health', ['path', 'port', 'interval']);
      const path = h.path === undefined ? '/' : h.path;
      if (typeof path !== 'string' || !path.startsWith('/') || path.length > 1024 || /\s/.test(path)) e.add('health.path', 'must be an HTTP path starting with /');
      const hp = h.port === undefined ? config.ports?.[0] : port(h.port);
      if (hp === undefined) e.add('health.port', h.port === undefined ? 'needed when ports: is not given' : 'must be a port number 1-65535');
      const iv = h.interval === undefined ? 10_000 : durationMs(h.interval);
      if (iv === undefined || iv < 1000 || iv > 3_600_000) e.add('health.interval', 'must be a duration between 1s and 1h (e.g. 10s)');
      if (typeof path === 'string' && hp !== undefined && iv !== undefined) config.health = { path, port: hp, intervalMs: iv };
    }
  }
  if (doc.resources !== undefined) {
    const r = doc.resources;
    if (!isObj(r)) e.add('resources', 'must be a mapping { cpu, memory }');
    else {
      known(e, r, 'resources', ['cpu', 'memory']);
      const res: { cpu?: number; memoryMB?: number } = {};
      if (r.cpu !== undefined) {
        const c = parseCpu(r.cpu);
        if (c === undefined || !(c > 0) || c > 1024) e.add('resources.cpu', 'must be a number of cores (0.5, "500m", 2)');
        else res.cpu = c;
      }
      if (r.memory !== undefined) {
        const m = parseMemoryMB(r.memory);
        if (m === undefined || !(m >= 16) || m > 16 * 1024 * 1024) e.add('resources.memory', 'must be a size of at least 16M ("512M", "2G")');
        else res.memoryMB = m;
      }
      config.resources = res;
    }
  }
  if (config.type === 'dockerfile' && (config.steps || config.install)) e.add('type', 'a dockerfile project builds with its Dockerfile; steps and install do not apply');
  return e.list.length ? { ok: false, errors: e.list } : { ok: true, config };
}

/** Parses and validates the text of `.omni/build.yaml`. */
export function parseBuildYaml(text: string): BuildYamlResult {
  if (new TextEncoder().encode(text).length > MAX_BUILD_YAML_BYTES) return { ok: false, errors: [{ field: '(document)', message: `larger than ${MAX_BUILD_YAML_BYTES} bytes` }] };
  let doc: unknown;
  try {
    // No custom tags, no aliases blow-up: the yaml package caps alias expansion (maxAliasCount).
    doc = parseYaml(text, { maxAliasCount: 100, uniqueKeys: true });
  } catch (err) {
    return { ok: false, errors: [{ field: '(document)', message: `not valid YAML: ${(err as Error).message.split('\n')[0].slice(0, 300)}` }] };
  }
  return validateBuildYaml(doc);
}

/** The errors as lines a user reads: `.omni/build.yaml: steps[1].run: must be …`. */
export function formatFieldErrors(errors: readonly FieldError[], file = BUILD_YAML_PATH): string {
  return errors.map((x) => `${file}: ${x.field}: ${x.message}`).join('\n');
}
