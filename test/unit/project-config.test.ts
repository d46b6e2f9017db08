// .omni/config.yaml (protocol/project/config.ts): parsing, validation (errors name the field),
// compute presets and explicit sizes, env values vs env file, storage → volumes, pass-through of
// cron fields, omni config set on the YAML text, and the .gitignore lines.
import { describe, expect, it } from 'vitest';
import { gitignoreAdditions, initialConfig, needsBuild, parseProjectConfig, setConfigValues, specFromConfig, validateProjectConfig } from '../../protocol/project/config.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

const ok = (text: string, dir = 'proj') => {
  const r = parseProjectConfig(text, dir);
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.config;
};
const errs = (input: unknown) => {
  const r = validateProjectConfig(input, 'proj');
  if (r.ok) throw new Error('expected errors');
  return r.errors;
};

describe('.omni/config.yaml', () => {
  it('an empty file is a service named after the directory, built by Forge', () => {
    const c = ok('', 'my-api');
    expect(c).toMatchObject({ name: 'my-api', type: 'service', ports: [], storage: [], env: {} });
    expect(needsBuild(c)).toBe(true);
    expect(specFromConfig(c)).toEqual({ name: 'my-api' });
  });

  it('every field, into an app spec the API accepts', () => {
    const c = ok(`
name: api
type: service
command: python3 -m http.server $PORT
ports: [8080, {name: admin, port: 9090}]
health: /healthz
replicas: 2
compute: {size: medium, cpu: 3}
disk: 20G
storage: [data, models]
env: {MODE: dev, N: 3}
envFile: .env
driver: process
`);
    expect(c.command).toEqual(['sh', '-c', 'python3 -m http.server $PORT']);
    expect(c.compute).toEqual({ size: 'medium', cpu: 3, memoryMB: 2048, gpus: 0 });
    expect(c.diskMB).toBe(20 * 1024);
    const spec = specFromConfig(c, { MODE: 'from-file', SECRET: 's' });
    // the env file wins over the values
    expect(spec.env).toEqual({ MODE: 'from-file', N: '3', SECRET: 's' });
    expect(spec.volumes).toEqual([{ name: 'data', path: '/storage/data' }, { name: 'models', path: '/storage/models' }]);
    expect(spec.healthCheck).toEqual({ type: 'http', port: 'http', path: '/healthz' });
    const v = validateAppSpec(spec);
    expect(v.ok).toBe(true);
    if (v.ok) expect(v.spec.resources).toEqual({ cpu: 3, memoryMB: 2048, gpus: 0, diskMB: 20 * 1024 }); // disk: 20G is reserved by the scheduler
  });

  it('compute presets by name, explicit sizes, and their errors', () => {
    expect(ok('compute: large').compute).toEqual({ size: 'large', cpu: 2, memoryMB: 4096, gpus: 0 });
    expect(ok('compute: {cpu: 500m, memory: 1G}').compute).toEqual({ cpu: 0.5, memoryMB: 1024, gpus: 0 });
    expect(errs({ compute: 'huge' })[0]).toMatchObject({ field: 'compute.size' });
    expect(errs({ compute: { cpu: -1 } })[0]).toMatchObject({ field: 'compute.cpu' });
    expect(errs({ compute: { size: 'toString' } })[0]).toMatchObject({ field: 'compute.size' });
    expect(errs({ compute: { cores: 2 } })[0]).toMatchObject({ field: 'compute.cores' });
  });

  it('refuses what cannot work, naming the field', () => {
    expect(errs({ nmae: 'x' })[0]).toMatchObject({ field: 'nmae', message: expect.stringContaining("did you mean 'name'") });
    expect(errs({ name: 'Bad Name' })[0].field).toBe('name');
    expect(errs({ type: 'api' })[0].field).toBe('type');
    expect(errs({ command: 'x', image: 'y' })[0].field).toBe('image');
    expect(errs({ type: 'job', command: 'x', ports: [80] })[0].field).toBe('ports');
    expect(errs({ type: 'service', retries: 2 })[0].field).toBe('retries');
    expect(errs({ storage: ['Bad'] })[0].field).toBe('storage[0]');
    expect(errs({ storage: ['workspace'] })[0].message).toContain('lab');
    expect(errs({ envFile: '../secrets.env' })[0].field).toBe('envFile');
    expect(errs({ envFile: '/etc/passwd' })[0].field).toBe('envFile');
    expect(errs({ disk: 'lots' })[0].field).toBe('disk');
    expect(errs({ lab: { ip: '0.0.0.0' } })[0].field).toBe('lab');
    expect(errs({ type: 'lab', lab: { token: 'x'.repeat(20) } })[0].field).toBe('lab');
    expect(errs({ command: 'x', build: { repo: 'a' } })[0].field).toBe('build');
    expect(errs({ command: 'x', health: '/h' })[0].field).toBe('health');
    expect(parseProjectConfig('a: [', 'p')).toMatchObject({ ok: false, errors: [{ field: '(file)' }] });
    expect(parseProjectConfig('- 1\n- 2', 'p')).toMatchObject({ ok: false, errors: [{ field: '(file)' }] });
    expect(parseProjectConfig('x'.repeat(70_000), 'p').ok).toBe(false);
  });

  it('a disk size given as a bare number is GB', () => {
    expect(ok('disk: 5').diskMB).toBe(5 * 1024);
  });

  it('a lab: no build, its spec gets the notebook defaults from the API side', () => {
    const c = ok('type: lab\ncompute: small\nlab: {ip: 0.0.0.0}');
    expect(needsBuild(c)).toBe(false);
    const spec = specFromConfig(c);
    expect(spec).toMatchObject({ type: 'lab', lab: { ip: '0.0.0.0' } });
    // the API adds the token when the app is created
    const v = validateAppSpec({ ...spec, lab: { ...(spec.lab as object), token: 'abcdefghijklmnopqrstuvwxyz' } });
    expect(v.ok).toBe(true);
    if (v.ok) {
      expect(v.spec.type).toBe('lab');
      expect(v.spec.command?.slice(0, 2)).toEqual(['jupyter', 'notebook']);
      expect(v.spec.command).toContain('--ip=0.0.0.0');
      expect(v.spec.command?.join(' ')).not.toContain('abcdefghijklmnopqrstuvwxyz');
      expect(v.spec.env.JUPYTER_TOKEN).toBe('abcdefghijklmnopqrstuvwxyz');
      expect(v.spec.healthCheck).toMatchObject({ type: 'http', path: '/api', port: 'http' });
      expect(v.spec.volumes).toEqual([{ name: 'workspace', path: '/workspace' }]);
      expect(v.spec.replicas).toBe(1);
      expect(v.spec.resources).toEqual({ cpu: 0.5, memoryMB: 512, gpus: 0 });
    }
  });

  it('cron fields are passed through to the spec untouched', () => {
    const c = ok('type: cron\ncommand: [date]\nschedule: "*/5 * * * *"\ncron: {concurrency: forbid}');
    expect(specFromConfig(c)).toMatchObject({ type: 'cron', schedule: '*/5 * * * *', cron: { concurrency: 'forbid' } });
    expect(errs({ type: 'lab', schedule: '* * * * *' })[0].field).toBe('schedule');
  });

  it('omni config set: YAML values, dotted keys, comments kept, the result validated', () => {
    const start = initialConfig('web', { type: 'service', command: ['node', 'server.js'], ports: [3000] });
    expect(ok(start)).toMatchObject({ name: 'web', command: ['node', 'server.js'], ports: [{ name: 'http', port: 3000 }] });
    const r = setConfigValues(start, ['replicas=3', 'env.MODE=010', 'compute.size=large', 'storage=[data]'], 'web');
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.text).toContain('# Omni project config');
    expect(r.config).toMatchObject({ replicas: 3, env: { MODE: '010' }, compute: { size: 'large', cpu: 2 }, storage: ['data'] });
    // an empty value removes the key
    const r2 = setConfigValues(r.text, ['replicas='], 'web');
    expect(r2.ok && r2.config.replicas).toBe(undefined);
    expect(setConfigValues(start, ['replicas=many'], 'web')).toMatchObject({ ok: false, errors: [{ field: 'replicas' }] });
    expect(setConfigValues(start, ['colour=red'], 'web')).toMatchObject({ ok: false, errors: [{ field: 'colour' }] });
    expect(setConfigValues(start, ['noequals'], 'web').ok).toBe(false);
  });

  it('.gitignore: .omni/ added once; kept build.yaml when the project has one', () => {
    expect(gitignoreAdditions('', false)).toEqual(['.omni/']);
    expect(gitignoreAdditions('node_modules\n.omni/\n', false)).toEqual([]);
    expect(gitignoreAdditions('', true)).toEqual(['.omni/*', '!.omni/build.yaml']);
    expect(gitignoreAdditions('.omni/*\n!.omni/build.yaml\n', true)).toEqual([]);
  });
});
