// Forge detection on fixture trees (test/fixtures/forge/…), .omni/build.yaml validation, and
// .gitignore/.dockerignore patterns.
import { describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { detect, procfileWeb, type SourceView } from '../../protocol/forge/detect.js';
import { parseBuildYaml } from '../../protocol/forge/build-yaml.js';
import { gitignoreRules, isIgnored, parseIgnore } from '../../protocol/forge/ignore.js';
import { collectTree } from '../../node/forge/layer.js';
import { dirView, ignoreRules } from '../../node/forge/builder.js';
import { forgeFixture } from '../support/forge-fixtures.js';

const fixture = forgeFixture;
const view = (name: string) => dirView(fixture(name), ignoreRules(fixture(name)));
const mem = (files: Record<string, string>): SourceView => ({ has: (p) => Object.hasOwn(files, p), read: (p) => (Object.hasOwn(files, p) ? files[p] : undefined) });

function plan(name: string) {
  const r = detect(view(name));
  if (!r.ok) throw new Error(r.message);
  return r.plan;
}
function error(src: SourceView): string {
  const r = detect(src);
  if (r.ok) throw new Error(`detected ${r.plan.type}`);
  return r.message;
}

describe('detect', () => {
  it('Node.js: package.json + package-lock.json → npm ci --omit=dev into node_modules, start script, default runtime and port', () => {
    const p = plan('node-api');
    expect(p.type).toBe('node');
    expect(p.detectedBy).toEqual(['package.json', 'package-lock.json']);
    expect(p.deps).toMatchObject({ keyFiles: ['package.json', 'package-lock.json'], needsSource: false, output: 'node_modules' });
    expect(p.deps!.install).toMatch(/^npm ci --omit=dev/);
    expect(p.start).toEqual(['/bin/sh', '-c', 'node server.js']);
    expect(p.runtime).toBe('omni/node:24');
    expect(p.ports).toEqual([8080]);
    expect(p.env.PORT).toBe('8080');
    expect(p.steps).toEqual([]);
    expect(p.buildInstall).toBeUndefined();
    expect(p.exclude).toContain('node_modules');
    expect(p.pathPrepend).toEqual(['/app/node_modules/.bin']);
  });

  it('Node.js with a build: .omni/build.yaml steps and a parallel group, full install before them, start from main, env/ports/health/resources', () => {
    const p = plan('node-build');
    expect(p.steps.map((g) => g.map((s) => s.name))).toEqual([['build'], ['check-a', 'check-b']]);
    expect(p.buildInstall).toMatch(/^npm ci/);
    expect(p.buildInstall).not.toContain('--omit=dev');
    expect(p.start).toEqual(['node', 'dist/server.js']);
    expect(p.env).toEqual({ PORT: '8081', NODE_ENV: 'production' });
    expect(p.ports).toEqual([8081]);
    expect(p.health).toEqual({ path: '/health', port: 8081, intervalMs: 5000 });
    expect(p.resources).toEqual({ cpu: 2, memoryMB: 1024 });
    expect(p.cache).toEqual(['.cache']);
    expect(p.exclude).toEqual(expect.arrayContaining(['node_modules', '.git', '.omni', '.cache']));
  });

  it('a build script alone becomes the build step', () => {
    const r = detect(mem({ 'package.json': JSON.stringify({ scripts: { build: 'tsc', start: 'node dist/a.js' } }), 'package-lock.json': '{}' }));
    expect(r.ok && r.plan.steps).toEqual([[{ name: 'build', run: 'npm run build' }]]);
  });

  it('Python: requirements.txt + main.py; pyproject.toml + Procfile web:', () => {
    const p = plan('python-api');
    expect(p.type).toBe('python');
    expect(p.detectedBy).toEqual(['requirements.txt', 'main.py']);
    expect(p.start).toEqual(['python3', 'main.py']);
    expect(p.deps).toMatchObject({ keyFiles: ['requirements.txt'], needsSource: false, output: '.deps' });
    expect(p.env.PYTHONPATH).toBe('/app/.deps');
    expect(p.runtime).toBe('omni/python:3');
    const q = plan('python-procfile');
    expect(q.detectedBy).toEqual(['pyproject.toml', 'Procfile']);
    expect(q.start).toEqual(['/bin/sh', '-c', 'python3 -m svc --port $PORT']);
    expect(q.deps!.needsSource).toBe(true);
    expect(q.warnings.join()).toContain('requirements.txt');
  });

  it('a static site serves its root; a Dockerfile wins over package.json', () => {
    const s = plan('static-site');
    expect(s.type).toBe('static');
    expect(s.start).toEqual(['httpd', '-f', '-p', '8080', '-h', '/app']);
    expect(s.deps).toBeUndefined();
    const d = plan('dockerfile');
    expect(d.type).toBe('dockerfile');
    expect(d.dockerfile).toBe('Dockerfile');
  });

  it('build.yaml type: overrides detection', () => {
    const r = detect(mem({ Dockerfile: 'FROM x', 'index.html': '<p>', '.omni/build.yaml': 'type: static\n' }));
    expect(r.ok && r.plan.type).toBe('static');
    expect(r.ok && r.plan.detectedBy[0]).toBe('.omni/build.yaml');
  });

  it('a Procfile alone needs a runtime', () => {
    expect(error(mem({ Procfile: 'web: ./serve\n' }))).toContain('runtime:');
    const r = detect(mem({ Procfile: 'web: ./serve\n', '.omni/build.yaml': 'runtime: omni/base:1\n' }));
    expect(r.ok && r.plan.start).toEqual(['/bin/sh', '-c', './serve']);
  });

  it('unknown or incomplete trees: the error names the file that would make them buildable', () => {
    expect(error(view('empty'))).toMatch(/no Dockerfile, package\.json, requirements\.txt.*Add a Dockerfile/);
    expect(error(view('unknown-py'))).toContain('add requirements.txt');
    expect(error(view('node-nolock'))).toContain('add package-lock.json');
    expect(error(view('node-yarn'))).toContain('yarn.lock');
    expect(error(mem({ 'package.json': '{}', 'package-lock.json': '{}' }))).toContain('"start"');
    expect(error(mem({ 'package.json': '{nope', 'package-lock.json': '{}' }))).toContain('package.json: not valid JSON');
    expect(error(mem({ 'requirements.txt': '' }))).toContain('main.py or app.py');
  });

  it('an ignored file does not count (.gitignore)', () => {
    expect(error(mem({}))).toContain('cannot tell');
    const r = detect(dirView(fixture('node-api'), parseIgnore('server.js\npackage.json\n')));
    expect(r.ok).toBe(false);
  });

  it('a symbolic link is not followed: package.json pointing outside the tree does not count', async () => {
    const { mkdtemp, symlink, writeFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const d = await mkdtemp(join(tmpdir(), 'omni-forge-link-'));
    try {
      await writeFile(join(d, 'outside.json'), '{"scripts":{"start":"x"}}');
      await mkdir(join(d, 'tree'));
      await symlink(join(d, 'outside.json'), join(d, 'tree/package.json'));
      await writeFile(join(d, 'tree/package-lock.json'), '{}');
      expect(error(dirView(join(d, 'tree'), []))).toContain('cannot tell');
    } finally {
      await rm(d, { recursive: true, force: true });
    }
  });

  it('procfileWeb', () => {
    expect(procfileWeb('worker: a\nweb: node s.js\n')).toEqual({ ok: true, command: 'node s.js' });
    expect(procfileWeb('worker: a\n').ok).toBe(false);
    expect(procfileWeb('web:\n').ok).toBe(false);
  });
});

describe('.omni/build.yaml', () => {
  const errs = (text: string) => {
    const r = parseBuildYaml(text);
    return r.ok ? [] : r.errors.map((e) => `${e.field}: ${e.message}`);
  };
  it('accepts every field', () => {
    const r = parseBuildYaml(`
type: node
runtime: omni/node:24
env: { A: 1, B: x }
install: npm ci --omit=dev
steps:
  - npm run build
  - parallel: [ { name: a, run: "true" }, "echo b" ]
cache: .cache
start: [node, server.js]
ports: 8080
health: { port: 8080, interval: 2s }
resources: { cpu: 500m, memory: 512M }
`);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.config).toMatchObject({ type: 'node', runtime: 'omni/node:24', env: { A: '1', B: 'x' }, cache: ['.cache'], start: ['node', 'server.js'], ports: [8080], health: { path: '/', port: 8080, intervalMs: 2000 }, resources: { cpu: 0.5, memoryMB: 512 } });
    expect(r.config.steps).toEqual([[{ name: 'step-1', run: 'npm run build' }], [{ name: 'a', run: 'true' }, { name: 'step-3', run: 'echo b' }]]);
  });
  it('an empty file is no override', () => {
    expect(parseBuildYaml('')).toEqual({ ok: true, config: { env: {}, cache: [] } });
  });
  it('clear errors naming each field', () => {
    expect(errs('tpye: node\n')[0]).toMatch(/^tpye: unknown field 'tpye'/);
    expect(errs('type: java\n')[0]).toMatch(/^type: must be one of node, python/);
    expect(errs('runtime: "Bad Image"\n')[0]).toMatch(/^runtime:/);
    expect(errs('env: { 1X: a }\n')[0]).toMatch(/^env\.1X:/);
    expect(errs('steps: [ { name: a, run: "" } ]\n')[0]).toMatch(/^steps\[0\]\.run: must be a non-empty command/);
    expect(errs('steps: [ { name: a, run: x }, { name: a, run: y } ]\n')[0]).toMatch(/steps\[1\]\.name: 'a' names another step/);
    expect(errs('steps: [ { parallel: [ { parallel: [x] } ] } ]\n')[0]).toMatch(/parallel groups do not nest/);
    expect(errs('steps: [ { parallel: [] } ]\n')[0]).toMatch(/steps\[0\]\.parallel: must be a non-empty list/);
    expect(errs('cache: [../up]\n')[0]).toMatch(/^cache\[0\]: must be a relative path/);
    expect(errs('cache: [/abs]\n')[0]).toMatch(/^cache\[0\]/);
    expect(errs('ports: [0, 70000]\n')).toHaveLength(2);
    expect(errs('health: { path: nope }\n').join()).toMatch(/health\.path.*health\.port/);
    expect(errs('health: { port: 80, interval: 1ms }\n')[0]).toMatch(/^health\.interval/);
    expect(errs('resources: { cpu: lots, memory: 1K }\n')).toHaveLength(2);
    expect(errs('type: dockerfile\nsteps: [x]\n')[0]).toMatch(/^type: a dockerfile project/);
    expect(errs('[1, 2]\n')[0]).toMatch(/must be a mapping/);
    expect(errs('a: [\n')[0]).toMatch(/not valid YAML/);
    expect(errs('a: 1\na: 2\n')[0]).toMatch(/not valid YAML/);
    expect(errs('x'.repeat(70 * 1024))[0]).toMatch(/larger than/);
  });
  it('a bad build.yaml fails detection with its errors', () => {
    const r = detect(mem({ 'index.html': '', '.omni/build.yaml': 'ports: [x]\n' }));
    expect(!r.ok && r.message).toBe('.omni/build.yaml: ports[0]: must be a port number 1-65535');
  });
});

describe('ignore patterns', () => {
  it('git semantics: unanchored names, anchored paths, dir-only, negation, **, directories', () => {
    const r = parseIgnore('# c\n\nnode_modules/\n*.log\n!keep.log\n/build\ndocs/**/*.md\nsrc/gen?\n');
    expect(isIgnored(r, 'node_modules', true)).toBe(true);
    expect(isIgnored(r, 'a/node_modules/x.js', false)).toBe(true);
    expect(isIgnored(r, 'node_modules', false)).toBe(false);
    expect(isIgnored(r, 'x/y.log', false)).toBe(true);
    expect(isIgnored(r, 'keep.log', false)).toBe(false);
    expect(isIgnored(r, 'build', true)).toBe(true);
    expect(isIgnored(r, 'build/a', false)).toBe(true);
    expect(isIgnored(r, 'sub/build', true)).toBe(false);
    expect(isIgnored(r, 'docs/a/b/c.md', false)).toBe(true);
    expect(isIgnored(r, 'docs/c.md', false)).toBe(true);
    expect(isIgnored(r, 'src/gen1', false)).toBe(true);
    expect(isIgnored(r, 'src/gen12', false)).toBe(false);
    expect(isIgnored(r, 'server.js', false)).toBe(false);
  });
  it('a subdirectory\'s .gitignore: scoped to it, relative to it, winning over the ones above; ignored directories are not looked into', () => {
    // an in-memory tree: directory → subdirectories, and the .gitignore texts
    const tree: Record<string, string[]> = { '': ['web', 'api', 'node_modules'], web: ['dist', 'src'], 'web/src': [], 'web/dist': [], api: ['build', 'tmp'], 'api/build': [], 'api/tmp': [], node_modules: ['x'], 'node_modules/x': [] };
    const texts: Record<string, string> = {
      '': 'node_modules/\n*.log\n',
      web: 'dist/\n/local.env\n!keep.log\n',
      api: 'build\nsrc/*.gen.ts\n',
      'node_modules/x': '!*.log\n',
    };
    const looked: string[] = [];
    const r = gitignoreRules((d) => tree[d] ?? [], (d) => (looked.push(d), texts[d]));
    // parents first; directories ignored above (node_modules by the root, api/build and web/dist by theirs) are never looked into
    expect(looked).toEqual(['', 'api', 'api/tmp', 'web', 'web/src']);
    expect(r.filter((x) => x.base === 'web').map((x) => x.source)).toEqual(['dist/', '/local.env', '!keep.log']);
    expect(isIgnored(r, 'web/dist', true)).toBe(true);
    expect(isIgnored(r, 'web/dist/app.js', false)).toBe(true);
    expect(isIgnored(r, 'dist', true)).toBe(false); // web's rule does not reach the root
    expect(isIgnored(r, 'api/dist', true)).toBe(false); // nor a sibling
    expect(isIgnored(r, 'web/local.env', false)).toBe(true); // anchored to web/
    expect(isIgnored(r, 'web/src/local.env', false)).toBe(false);
    expect(isIgnored(r, 'local.env', false)).toBe(false);
    expect(isIgnored(r, 'web/keep.log', false)).toBe(false); // the deeper file wins over the root's *.log
    expect(isIgnored(r, 'web/src/other.log', false)).toBe(true);
    expect(isIgnored(r, 'api/other.log', false)).toBe(true);
    expect(isIgnored(r, 'api/build', true)).toBe(true);
    expect(isIgnored(r, 'api/tmp/build', false)).toBe(true); // unanchored: any depth below api/
    expect(isIgnored(r, 'build', true)).toBe(false);
    expect(isIgnored(r, 'api/src/a.gen.ts', false)).toBe(true);
    expect(isIgnored(r, 'api/lib/src/a.gen.ts', false)).toBe(false); // a pattern with a / is anchored to api/
    expect(isIgnored(r, 'node_modules/x/a.log', false)).toBe(true); // its .gitignore was not read
  });
  it('ignoreRules reads the .gitignore of subdirectories from disk; the source view and the build honour them', async () => {
    const root = await mkdtemp(join(tmpdir(), 'omni-forge-ignore-'));
    try {
      await mkdir(join(root, 'web', 'dist'), { recursive: true });
      await mkdir(join(root, 'web', '.git'), { recursive: true });
      await writeFile(join(root, '.gitignore'), '*.log\n');
      await writeFile(join(root, 'web', '.gitignore'), 'dist/\nsecret.txt\n');
      await writeFile(join(root, 'web', '.git', '.gitignore'), 'index.html\n'); // inside .git: not read
      await writeFile(join(root, 'web', 'secret.txt'), 's');
      await writeFile(join(root, 'web', 'index.html'), 'x');
      await writeFile(join(root, 'web', 'dist', 'a.js'), 'x');
      await writeFile(join(root, 'secret.txt'), 'not ignored at the root');
      const rules = ignoreRules(root);
      const v = dirView(root, rules);
      expect(v.has('web/secret.txt')).toBe(false);
      expect(v.has('web/dist/a.js')).toBe(false);
      expect(v.has('web/index.html')).toBe(true);
      expect(v.has('secret.txt')).toBe(true);
      const t = await collectTree(root, { prefix: '', ignore: rules, exclude: ['.git', 'web/.git'] });
      expect(t.entries.map((e) => e.path)).toEqual(['.gitignore', 'secret.txt', 'web', 'web/.gitignore', 'web/index.html']);
      // what a build uploads: every .git left out, the root's, a nested repository's and a submodule's (a file)
      await mkdir(join(root, '.git'), { recursive: true });
      await writeFile(join(root, '.git', 'HEAD'), 'ref: refs/heads/main\n');
      await mkdir(join(root, 'vendor', 'lib'), { recursive: true });
      await writeFile(join(root, 'vendor', 'lib', '.git'), 'gitdir: ../../.git/modules/lib\n');
      await writeFile(join(root, 'vendor', 'lib', 'lib.js'), 'x');
      const packed = await collectTree(root, { prefix: '', ignore: rules, excludeNames: ['.git'] });
      expect(packed.entries.map((e) => e.path)).toEqual(['.gitignore', 'secret.txt', 'vendor', 'vendor/lib', 'vendor/lib/lib.js', 'web', 'web/.gitignore', 'web/index.html']);
      await writeFile(join(root, 'web', '.gitignore'), 'x'.repeat(1024 * 1024 + 1));
      expect(() => ignoreRules(root)).toThrow(/web\/\.gitignore is over/);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
  it('.dockerignore patterns are anchored; a file in an ignored directory cannot be re-included', () => {
    const r = parseIgnore('tmp\n!tmp/keep\n', true);
    expect(isIgnored(r, 'tmp', true)).toBe(true);
    expect(isIgnored(r, 'a/tmp', true)).toBe(false);
    expect(isIgnored(r, 'tmp/keep', false)).toBe(true);
  });
});
