// omni config through the real CLI, with no cluster configured (nothing can run, so changes are
// allowed): init from detection (a notebook directory is a lab), .gitignore (and Forge still
// seeing .omni/build.yaml), set / get / show / validate, and the flows' need for a project or APP.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { dirView, ignoreRules } from '../../node/forge/builder.js';

const OMNI = resolve('bin/omni');
const env: NodeJS.ProcessEnv = { ...process.env, OMNI_CONFIG: '/nonexistent/omni.json' };
delete env.OMNI_ADDR;
delete env.OMNI_TOKEN;
const omni = (cwd: string, ...args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((res) =>
    execFile(OMNI, args, { cwd, env, timeout: 120_000 }, (err, stdout, stderr) => res({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr })),
  );

describe('omni config (no cluster)', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-project-cli-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('init: a notebook directory is a lab; .omni/ is ignored; set, get, show, validate', async () => {
    const d = join(dir, 'Data Notebooks');
    await mkdir(d);
    await writeFile(join(d, 'explore.ipynb'), '{}');
    await writeFile(join(d, '.gitignore'), 'node_modules');
    const init = await omni(d, 'config', 'init');
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/a lab/);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe('node_modules\n.omni/\n');
    expect((await omni(d, 'config', 'get', 'type')).stdout.trim()).toBe('lab');
    expect((await omni(d, 'config', 'get', 'name')).stdout.trim()).toBe('data-notebooks');
    // again: not replaced, .gitignore not touched twice
    expect((await omni(d, 'config', 'init')).stderr).toMatch(/exists/);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe('node_modules\n.omni/\n');
    // from a subdirectory: the nearest parent's config
    await mkdir(join(d, 'sub'));
    expect((await omni(join(d, 'sub'), 'config', 'set', 'compute=medium', 'env.TZ=UTC')).code).toBe(0);
    const shown = JSON.parse((await omni(d, 'config', 'show', '--json')).stdout);
    expect(shown).toMatchObject({ type: 'lab', compute: { size: 'medium', cpu: 1, memoryMB: 2048 }, env: { TZ: 'UTC' } });
    const bad = await omni(d, 'config', 'set', 'replicas=3');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/not changed: replicas: a lab runs one notebook server/);
    await writeFile(join(d, '.omni', 'config.yaml'), 'type: lab\ncompute: tiny\nport: 80\n');
    const v = await omni(d, 'config', 'validate');
    expect(v.code).toBe(1);
    expect(v.stdout).toMatch(/compute.size: one of small/);
    expect(v.stdout).toMatch(/port: unknown field 'port' \(did you mean 'ports'\?\)/);
  }, 120_000);

  it("init in a project with Forge's .omni/build.yaml keeps it visible to Forge", async () => {
    const d = join(dir, 'site');
    await mkdir(join(d, '.omni'), { recursive: true });
    await writeFile(join(d, 'index.html'), '<p>hi</p>');
    await writeFile(join(d, '.omni', 'build.yaml'), 'type: static\n');
    const init = await omni(d, 'config', 'init');
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/Forge detected static/);
    expect(await readFile(join(d, '.gitignore'), 'utf8')).toBe('.omni/*\n!.omni/build.yaml\n');
    const view = dirView(d, ignoreRules(d));
    expect(view.has('.omni/build.yaml')).toBe(true);
    expect(view.has('.omni/config.yaml')).toBe(false);
  }, 60_000);

  it('stop / watch / inspect need an APP outside a project', async () => {
    const r = await omni(dir, 'stop');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/need an APP \(or run it in a project directory/);
  }, 60_000);

  it('a --timeout that is not whole seconds is refused (exit 2) before anything is asked of a cluster', async () => {
    // no cluster is configured: a command that got past the flag would fail connecting instead (exit 1)
    for (const args of [['stop', 'app', '--yes', '--timeout', 'soon'], ['rm', 'app', '--timeout', '1.5'], ['compose', 'down', '--timeout', '0'], ['deploy', join(dir, 'nope.yaml'), '--timeout', 'x']]) {
      if (args[0] === 'deploy') await writeFile(join(dir, 'nope.yaml'), 'name: nope\ncommand: [sleep, "9"]\n');
      const r = await omni(dir, ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^error: --timeout must be a whole number of seconds, got /);
    }
  }, 120_000);
});
