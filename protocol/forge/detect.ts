// Forge detection (pure): what a source tree is and how to build it — a BuildPlan. It reads a
// few known files through a SourceView (the node side reads them from disk with size limits;
// tests give fixture trees) and never runs anything.
//
// Order: `.omni/build.yaml`'s `type:` when given; else a Dockerfile (the user wrote one: it is
// the escape hatch for anything else); else Node.js (package.json + an npm lockfile), Python
// (requirements.txt or pyproject.toml), a static site (index.html), a Procfile alone. A tree
// that is none of these gets an error naming the file that would make it buildable.
//
// A plan is built as: a dependency layer (the install command run on the lockfile alone, so it
// is keyed by the lockfile's hash and reused when only source changes), build steps run in a
// separate workspace (full dependencies, dev ones too: they never reach the image), then an app
// layer (the tree after the build, without the dependency folder, caches and ignored files),
// on a runtime base image.
import { BUILD_YAML_PATH, formatFieldErrors, parseBuildYaml, type BuildYaml, type HealthConfig, type ProjectType, type StepGroup } from './build-yaml.js';

export interface SourceView {
  /** Whether the file exists (a path relative to the tree's root, `/`-separated). */
  has(path: string): boolean;
  /** The text of a small file, or undefined when missing (the node side refuses large files). */
  read(path: string): string | undefined;
}

export interface DependencyPlan {
  /** Files whose bytes key the dependency layer (lockfile, manifest). */
  keyFiles: string[];
  /** Whether the install needs the whole tree (then the layer is keyed by the source too). */
  needsSource: boolean;
  /** Run in WORKDIR holding only keyFiles (or the whole tree when needsSource). */
  install: string;
  /** What the install produces, relative to WORKDIR: the dependency layer's content. */
  output: string;
}

export interface BuildPlan {
  type: ProjectType;
  /** The files that decided (for messages). */
  detectedBy: string[];
  /** The runtime base image (cluster registry REPO:TAG); absent for a Dockerfile build. */
  runtime?: string;
  workdir: string;
  env: Record<string, string>;
  /** Prepended to the base image's PATH in the runtime image. */
  pathPrepend: string[];
  deps?: DependencyPlan;
  /** Build steps (groups in order, each group's steps at once). */
  steps: StepGroup[];
  /** The install that precedes the build steps in the build workspace (dev dependencies too). */
  buildInstall?: string;
  /** Paths (relative) left out of the app layer: the dependency output, caches, .omni, .git. */
  exclude: string[];
  cache: string[];
  start?: string[];
  ports: number[];
  health?: HealthConfig;
  resources: { cpu: number; memoryMB: number };
  dockerfile?: string;
  warnings: string[];
}

export type DetectResult = { ok: true; plan: BuildPlan } | { ok: false; message: string };

export const WORKDIR = '/app';
export const DEFAULT_PORT = 8080;
/** Runtime bases scripts/forge-base.sh makes (and omni images import-rootfs imports). */
export const DEFAULT_RUNTIMES: Readonly<Record<Exclude<ProjectType, 'dockerfile' | 'procfile'>, string>> = {
  node: 'omni/node:24',
  python: 'omni/python:3',
  static: 'omni/static:1',
};
const DEFAULT_BUILD_RESOURCES = { cpu: 1, memoryMB: 1024 };
const NPM_LOCKFILES = ['package-lock.json', 'npm-shrinkwrap.json'];

const fail = (message: string): { ok: false; message: string } => ({ ok: false, message });
const sh = (c: string): string[] => ['/bin/sh', '-c', c];

/** The `web:` command of a Procfile, or why it has none. */
export function procfileWeb(text: string): { ok: true; command: string } | { ok: false; message: string } {
  const lines = text.split(/\r?\n/);
  if (lines.length > 1000) return fail('Procfile: more than 1000 lines');
  for (const line of lines) {
    const m = /^([A-Za-z0-9_-]+)\s*:\s*(.*)$/.exec(line.trim());
    if (m && m[1] === 'web') {
      if (m[2].trim() === '') return fail('Procfile: the web: line has no command');
      return { ok: true, command: m[2].trim() };
    }
  }
  return fail('Procfile: no web: line (e.g. "web: node server.js")');
}

interface PackageJson {
  name?: unknown;
  main?: unknown;
  scripts?: Record<string, unknown>;
}

function nodePlan(src: SourceView, y: BuildYaml, warnings: string[]): DetectResult {
  const text = src.read('package.json');
  if (text === undefined) return fail('package.json is missing or too large');
  let pkg: PackageJson;
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail('package.json: not a JSON object');
    pkg = v as PackageJson;
  } catch (err) {
    return fail(`package.json: not valid JSON (${(err as Error).message.slice(0, 200)})`);
  }
  const scripts = typeof pkg.scripts === 'object' && pkg.scripts !== null && !Array.isArray(pkg.scripts) ? pkg.scripts : {};
  const script = (n: string): string | undefined => (typeof scripts[n] === 'string' && (scripts[n] as string).trim() !== '' ? (scripts[n] as string) : undefined);
  const lockfile = NPM_LOCKFILES.find((f) => src.has(f));
  if (!lockfile && !y.install) {
    const other = ['yarn.lock', 'pnpm-lock.yaml', 'bun.lockb'].find((f) => src.has(f));
    return fail(
      other
        ? `package.json with ${other}: only npm lockfiles are supported; add package-lock.json (npm install --package-lock-only) or set install: in ${BUILD_YAML_PATH}`
        : 'package.json has no lockfile: add package-lock.json (npm install --package-lock-only) so dependencies install the same way every time',
    );
  }
  const detectedBy = ['package.json', ...(lockfile ? [lockfile] : [])];
  const build = script('build');
  const steps: StepGroup[] = y.steps ?? (build ? [[{ name: 'build', run: 'npm run build' }]] : []);
  let start = y.start;
  if (!start && src.has('Procfile')) {
    const p = procfileWeb(src.read('Procfile') ?? '');
    if (p.ok) (start = sh(p.command)), detectedBy.push('Procfile');
    else warnings.push(p.message);
  }
  if (!start) {
    const s = script('start');
    if (s) start = sh(s);
    // main may be what the build produces (dist/server.js)
    else if (typeof pkg.main === 'string' && pkg.main.trim() !== '' && (steps.length > 0 || src.has(pkg.main.replace(/^\.\//, '')))) start = ['node', pkg.main.replace(/^\.\//, '')];
    else {
      const f = ['server.js', 'index.js', 'app.js', 'main.js'].find((x) => src.has(x));
      if (f) start = ['node', f];
    }
  }
  if (!start) return fail(`package.json has no start script: add "scripts": { "start": "node server.js" }, a Procfile with a web: line, or start: in ${BUILD_YAML_PATH}`);
  return {
    ok: true,
    plan: {
      ...common(y, 'node', detectedBy, warnings),
      pathPrepend: [`${WORKDIR}/node_modules/.bin`],
      deps: { keyFiles: ['package.json', ...(lockfile ? [lockfile] : [])], needsSource: false, install: y.install ?? 'npm ci --omit=dev --ignore-scripts --no-audit --no-fund', output: 'node_modules' },
      steps,
      ...(steps.length ? { buildInstall: 'npm ci --no-audit --no-fund' } : {}),
      exclude: ['node_modules', ...baseExcludes(y)],
      start,
    },
  };
}

function pythonPlan(src: SourceView, y: BuildYaml, warnings: string[]): DetectResult {
  const req = src.has('requirements.txt');
  const detectedBy = [req ? 'requirements.txt' : 'pyproject.toml'];
  let start = y.start;
  if (!start && src.has('Procfile')) {
    const p = procfileWeb(src.read('Procfile') ?? '');
    if (p.ok) (start = sh(p.command)), detectedBy.push('Procfile');
    else warnings.push(p.message);
  }
  if (!start) {
    const f = ['main.py', 'app.py'].find((x) => src.has(x));
    if (f) (start = ['python3', f]), detectedBy.push(f);
  }
  if (!start) return fail(`${detectedBy[0]} found but no entry point: add main.py or app.py, a Procfile with a web: line, or start: in ${BUILD_YAML_PATH}`);
  if (!req) warnings.push('pyproject.toml without requirements.txt: the dependency layer is rebuilt whenever the source changes (add requirements.txt to cache it)');
  return {
    ok: true,
    plan: {
      ...common(y, 'python', detectedBy, warnings),
      pathPrepend: [`${WORKDIR}/.deps/bin`],
      env: { PYTHONPATH: `${WORKDIR}/.deps`, PYTHONDONTWRITEBYTECODE: '1', ...common(y, 'python', detectedBy, warnings).env },
      deps: req
        ? { keyFiles: ['requirements.txt'], needsSource: false, install: y.install ?? 'python3 -m pip install --no-cache-dir --disable-pip-version-check --target .deps -r requirements.txt', output: '.deps' }
        : { keyFiles: ['pyproject.toml'], needsSource: true, install: y.install ?? 'python3 -m pip install --no-cache-dir --disable-pip-version-check --target .deps .', output: '.deps' },
      steps: y.steps ?? [],
      exclude: ['.deps', '__pycache__', ...baseExcludes(y)],
      start,
    },
  };
}

function baseExcludes(y: BuildYaml): string[] {
  return ['.git', '.omni', ...y.cache];
}

function common(y: BuildYaml, type: ProjectType, detectedBy: string[], warnings: string[]): Omit<BuildPlan, 'steps' | 'exclude'> {
  const ports = y.ports ?? [DEFAULT_PORT];
  const runtime = y.runtime ?? (type === 'dockerfile' || type === 'procfile' ? undefined : DEFAULT_RUNTIMES[type]);
  return {
    type,
    detectedBy,
    ...(runtime ? { runtime } : {}),
    workdir: WORKDIR,
    env: { ...(ports.length ? { PORT: String(ports[0]) } : {}), ...y.env },
    pathPrepend: [],
    cache: y.cache,
    ports,
    ...(y.health ? { health: y.health } : {}),
    resources: { ...DEFAULT_BUILD_RESOURCES, ...y.resources },
    ...(y.start ? { start: y.start } : {}),
    warnings,
  };
}

/** What would make an unknown tree buildable, as one sentence. */
function unknownTree(src: SourceView): string {
  const hints: string[] = [];
  if (src.has('main.py') || src.has('app.py')) hints.push('it has Python files: add requirements.txt (it may be empty) to build it as Python');
  if (src.has('server.js') || src.has('index.js')) hints.push('it has JavaScript files: add package.json and package-lock.json (npm init -y && npm install --package-lock-only) to build it as Node.js');
  if (src.has('public/index.html')) hints.push('public/index.html: move it to the root, or add .omni/build.yaml with type: static');
  return (
    'cannot tell how to build this directory: it has no Dockerfile, package.json, requirements.txt, pyproject.toml, index.html or Procfile. ' +
    (hints.length ? hints.join('; ') + '.' : `Add a Dockerfile, or package.json + package-lock.json (Node.js), requirements.txt + main.py (Python), index.html (a static site), or ${BUILD_YAML_PATH} with type: and start:.`)
  );
}

/** Detects the project and returns its build plan, or an error a user can act on. */
export function detect(src: SourceView): DetectResult {
  let y: BuildYaml = { env: {}, cache: [] };
  const warnings: string[] = [];
  if (src.has(BUILD_YAML_PATH)) {
    const text = src.read(BUILD_YAML_PATH);
    if (text === undefined) return fail(`${BUILD_YAML_PATH}: too large to read`);
    const r = parseBuildYaml(text);
    if (!r.ok) return fail(formatFieldErrors(r.errors));
    y = r.config;
  }
  const type: ProjectType | undefined =
    y.type ??
    (src.has('Dockerfile')
      ? 'dockerfile'
      : src.has('package.json')
        ? 'node'
        : src.has('requirements.txt') || src.has('pyproject.toml')
          ? 'python'
          : src.has('index.html')
            ? 'static'
            : src.has('Procfile')
              ? 'procfile'
              : undefined);
  if (type === undefined) return fail(unknownTree(src));
  const by = y.type ? [BUILD_YAML_PATH] : [];
  switch (type) {
    case 'dockerfile':
      if (!src.has('Dockerfile')) return fail(`${BUILD_YAML_PATH} says type: dockerfile but there is no Dockerfile at the root`);
      if (src.has('.devcontainer/devcontainer.json')) warnings.push('.devcontainer/devcontainer.json is not used for a Dockerfile project (the Dockerfile is the build)');
      return { ok: true, plan: { ...common(y, 'dockerfile', [...by, 'Dockerfile'], warnings), steps: [], exclude: [], dockerfile: 'Dockerfile' } };
    case 'node':
      if (!src.has('package.json')) return fail(`${BUILD_YAML_PATH} says type: node but there is no package.json`);
      return withBy(nodePlan(src, y, warnings), by);
    case 'python':
      if (!src.has('requirements.txt') && !src.has('pyproject.toml')) return fail(`${BUILD_YAML_PATH} says type: python but there is no requirements.txt or pyproject.toml`);
      return withBy(pythonPlan(src, y, warnings), by);
    case 'static': {
      if (!src.has('index.html') && !y.start) return fail(`${BUILD_YAML_PATH} says type: static but there is no index.html at the root`);
      const port = y.ports?.[0] ?? DEFAULT_PORT;
      return {
        ok: true,
        plan: { ...common(y, 'static', [...by, 'index.html'], warnings), steps: y.steps ?? [], exclude: baseExcludes(y), start: y.start ?? ['httpd', '-f', '-p', String(port), '-h', WORKDIR] },
      };
    }
    case 'procfile': {
      const p = procfileWeb(src.read('Procfile') ?? '');
      if (!y.start && !p.ok) return fail(p.message);
      if (!y.runtime) return fail(`a Procfile alone does not say which runtime to run it on: add runtime: (e.g. omni/node:24) to ${BUILD_YAML_PATH}, or package.json / requirements.txt`);
      return {
        ok: true,
        plan: { ...common(y, 'procfile', [...by, 'Procfile'], warnings), steps: y.steps ?? [], exclude: baseExcludes(y), start: y.start ?? sh((p as { command: string }).command) },
      };
    }
  }
}

function withBy(r: DetectResult, by: string[]): DetectResult {
  if (r.ok && by.length) r.plan.detectedBy = [...by, ...r.plan.detectedBy];
  return r;
}
