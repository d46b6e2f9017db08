// Compose files → stacks (protocol/compose): keys supported / refused / warned, interpolation,
// env files, dependencies (conditions, cycles), translation into Omni app specs, pinned files.
import { describe, expect, it } from 'vitest';
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parse as parseYaml } from 'yaml';
import { parseCompose, parseDuration, splitCommand, findCycle, swarmConstraint, volumeName, ComposeError, type ComposeInput } from '../../protocol/compose/parse.js';
import { interpolate, parseEnvText } from '../../protocol/compose/interpolate.js';
import { pinnedDocument, buildRepository } from '../../protocol/compose/pinned.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';

const FIX = join(import.meta.dirname, '../fixtures/compose');

function input(text: string, over: Partial<ComposeInput> = {}, files: Record<string, string> = {}): ComposeInput {
  return { text, file: 'compose.yaml', dirName: 'proj', env: {}, readFile: (p) => files[p.replace(/^\.\//, '')], ...over };
}

function fixture(dir: string, env: Record<string, string> = {}, over: Partial<ComposeInput> = {}): ComposeInput {
  const base = join(FIX, dir);
  return {
    text: readFileSync(join(base, 'docker-compose.yml'), 'utf8'),
    file: 'docker-compose.yml',
    dirName: dir,
    env,
    readFile: (p) => (existsSync(join(base, p)) ? readFileSync(join(base, p), 'utf8') : undefined),
    ...over,
  };
}

function errorsOf(f: () => unknown): string[] {
  try {
    f();
  } catch (err) {
    if (err instanceof ComposeError) return err.errors;
    throw err;
  }
  throw new Error('expected a ComposeError');
}

describe('compose: a realistic file', () => {
  const stack = parseCompose(fixture('good', { DB_PASSWORD: 'pw' }));
  const svc = (n: string) => stack.services.find((s) => s.service === n)!;

  it('names the project and apps, in dependency order, with inactive profiles left out', () => {
    expect(stack.project).toBe('shop');
    expect(stack.services.map((s) => s.service)).toEqual(['db', 'initdb', 'api', 'worker']);
    expect(stack.services.map((s) => s.app)).toEqual(['shop-db', 'shop-initdb', 'shop-api', 'shop-worker']);
    expect(stack.inactive).toEqual(['debug']);
    expect(parseCompose(fixture('good', { DB_PASSWORD: 'pw' }, { profiles: ['debug'] })).services.map((s) => s.service)).toContain('debug');
  });

  it('translates image, interpolation, merge keys, volumes, health check and restart', () => {
    const db = svc('db').spec;
    expect(db.image).toBe('omni/postgres:16');
    expect(db.env).toEqual({ POSTGRES_PASSWORD: 'pw' });
    expect(db.volumes).toEqual([{ name: volumeName('local_postgres_data'), path: '/var/lib/postgresql/data' }]);
    expect(db.healthCheck).toEqual({ type: 'command', command: ['/bin/sh', '-c', 'pg_isready -U postgres'], intervalMs: 5000, timeoutMs: 90_000, retries: 5, startPeriodMs: 10_000, inContainer: true });
    expect(db.restart).toEqual({ policy: 'always' });
    expect(validateAppSpec(db).ok).toBe(true);
  });

  it('env_file under environment, secrets as read-only files (not env), ports, deploy', () => {
    const api = svc('api');
    expect(api.build).toEqual({ context: './api', dockerfile: 'Dockerfile', args: {} });
    expect(api.image).toBe('shop/api');
    expect(api.spec.image).toBeUndefined();
    expect(api.spec.env).toEqual({ API_MODE: 'prod', QUOTED: 'a b', DB_HOST: 'db' });
    expect(api.spec.files).toEqual([{ kind: 'secret', name: 'api_key', target: '/run/secrets/api_key', data: Buffer.from('s3cr3t').toString('base64'), mode: 0o444 }]);
    expect(api.spec.ports).toEqual([{ name: 'p80', port: 80, publish: 8080 }, { name: 'p9090', port: 9090 }]);
    expect(api.spec.replicas).toBe(2);
    expect(api.spec.resources).toEqual({ cpu: 0.5, memoryMB: 256 });
    expect(api.spec.constraints).toEqual(['label.zone==a']);
    expect(api.spec.antiAffinity).toBe(true);
    expect(api.spec.update).toEqual({ parallel: 1, autoRollback: true, minHealthyMs: 5000, healthyTimeoutMs: 30_000 });
    expect(api.dependsOn).toEqual([{ service: 'db', condition: 'service_healthy', required: true }, { service: 'initdb', condition: 'service_completed_successfully', required: true }]);
    expect(stack.warnings.join('\n')).not.toContain('s3cr3t');
    expect(stack.warnings.some((w) => w.includes('environment.LOG_LEVEL'))).toBe(true);
  });

  it('a service waited for with service_completed_successfully becomes a job', () => {
    const initdb = svc('initdb').spec;
    expect(initdb.type).toBe('job');
    expect(initdb.retries).toBe(0);
    expect(initdb.args).toEqual(['python', 'manage.py', 'migrate']);
    expect(initdb.restart).toBeUndefined();
    expect(validateAppSpec({ ...initdb, image: 'x' }).ok).toBe(true);
  });

  it('x-omni-critical, list-form depends_on; each service on the networks it names (with aliases), the default network otherwise', () => {
    const w = svc('worker');
    expect(w.critical).toBe(false);
    expect(svc('api').critical).toBe(true);
    expect(w.dependsOn).toEqual([{ service: 'api', condition: 'service_started', required: true }]);
    expect(w.spec.args).toEqual(['run', '--queue', 'jobs']);
    expect(w.spec.network).toEqual({ name: 'shop-back', aliases: ['worker', 'w'] });
    expect(svc('api').spec.networks).toEqual([{ name: 'shop-front', aliases: ['api'] }, { name: 'shop-back', aliases: ['api'] }]);
    expect(svc('api').spec.network).toBeUndefined();
    expect(svc('db').spec.network).toEqual({ name: 'shop', aliases: ['db'] });
    expect(validateAppSpec({ ...svc('api').spec, image: 'x' }).ok).toBe(true);
    expect(stack.warnings.join('\n')).not.toMatch(/networks/);
  });

  it('networks: name, external (another stack\'s network), fixed addresses warned, undefined or unknown keys refused', () => {
    const doc = (text: string) => parseCompose(input(text, {}, {}));
    const s = doc(`name: shop
services:
  web: { image: x, networks: { edge: { aliases: [www], ipv4_address: 10.0.0.9 }, shared: {} } }
  app: { image: x, networks: [default, edge] }
networks:
  edge: { name: Public-Edge, driver: bridge, internal: true }
  shared: { external: true, name: platform }
`);
    const web = s.services.find((x) => x.service === 'web')!.spec;
    expect(web.networks).toEqual([{ name: 'public-edge', aliases: ['web', 'www'] }, { name: 'platform', aliases: ['web'] }]);
    expect(s.services.find((x) => x.service === 'app')!.spec.networks).toEqual([{ name: 'shop', aliases: ['app'] }, { name: 'public-edge', aliases: ['app'] }]);
    expect(s.warnings.some((w) => w.includes('services.web.networks.edge.ipv4_address'))).toBe(true);
    expect(s.warnings.some((w) => w.includes('networks.edge.internal'))).toBe(true);
    // docker's name of another project's default network is that project's network here
    const ext = doc('name: a\nservices:\n  s: { image: x, networks: [shop] }\nnetworks:\n  shop: { external: true, name: shop_default }\n');
    expect(ext.services[0].spec.network).toEqual({ name: 'shop', aliases: ['s'] });
    expect(doc('name: a\nservices:\n  s: { image: x, networks: [] }\n').services[0].spec.network).toEqual({ name: 'a', aliases: ['s'] });
    expect(() => doc('services:\n  a: { image: x, networks: [nowhere] }\n')).toThrow(/nowhere is not defined under top-level networks/);
    expect(() => doc('services:\n  a: { image: x, networks: { default: { alias: [b] } } }\n')).toThrow(/unknown key 'alias'/);
    expect(() => doc('services:\n  a: { image: x, networks: { default: { aliases: [B_c] } } }\n')).toThrow(/B_c is not a host name/);
  });

  it('config --pinned strips build blocks and pins images', () => {
    const text = pinnedDocument(stack, { api: 'shop/api@sha256:' + 'a'.repeat(64), initdb: 'shop-initdb@sha256:' + 'b'.repeat(64) });
    const doc = parseYaml(text) as { name: string; services: Record<string, Record<string, unknown>> };
    expect(doc.name).toBe('shop');
    expect(doc.services.api.build).toBeUndefined();
    expect(doc.services.api.image).toBe('shop/api@sha256:' + 'a'.repeat(64));
    expect(doc.services.initdb.build).toBeUndefined();
    expect(text).not.toContain('build:');
    expect(doc.services.db.environment).toEqual({ POSTGRES_PASSWORD: 'pw' });
    // the pinned file parses into the same stack without builds
    const again = parseCompose(input(text, { readFile: fixture('good').readFile }, {}));
    expect(again.services.every((s) => s.build === undefined && typeof s.spec.image === 'string')).toBe(true);
  });
});

describe('compose: bad files give clear errors', () => {
  it('a required variable unset', () => {
    expect(errorsOf(() => parseCompose(fixture('good')))).toEqual(['services.db.environment.POSTGRES_PASSWORD: variable DB_PASSWORD is required: set DB_PASSWORD']);
  });

  it('unknown keys are named, with a suggestion', () => {
    const errs = errorsOf(() => parseCompose(input('services:\n  web:\n    image: nginx\n    enviroment: {A: 1}\n    helthcheck: {}\nfoo: 1\n')));
    expect(errs).toContain("compose.yaml.foo: unknown key 'foo'");
    expect(errs.some((e) => e.startsWith("services.web.enviroment: unknown key 'enviroment'") && e.includes("did you mean 'environment'"))).toBe(true);
    expect(errs.some((e) => e.startsWith("services.web.helthcheck: unknown key"))).toBe(true);
  });

  it('refused keys are errors, warned keys warnings: never silently dropped', () => {
    expect(errorsOf(() => parseCompose(input('services:\n  web:\n    image: nginx\n    privileged: true\n')))).toEqual([expect.stringMatching(/^services\.web\.privileged: not supported/)]);
    const s = parseCompose(input('services:\n  web:\n    image: nginx\n    container_name: w\n    logging: {driver: json-file}\n'));
    expect(s.warnings).toEqual([expect.stringMatching(/^services\.web\.container_name: ignored/), expect.stringMatching(/^services\.web\.logging: ignored/)]);
  });

  it('a cycle in depends_on names the cycle', () => {
    const text = 'services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, depends_on: {c: {condition: service_started}}}\n  c: {image: x, depends_on: [a]}\n  d: {image: x, depends_on: [a]}\n';
    expect(errorsOf(() => parseCompose(input(text)))).toEqual(['depends_on has a cycle: a → b → c → a']);
    expect(findCycle([{ service: 'a', dependsOn: [{ service: 'a' }] }])).toEqual(['a', 'a']);
  });

  it('a missing env_file is an error naming it; required: false is skipped', () => {
    expect(errorsOf(() => parseCompose(input('services:\n  web:\n    image: x\n    env_file: .env.prod\n')))).toEqual(['services.web.env_file: .env.prod not found (relative to compose.yaml)']);
    const s = parseCompose(input('services:\n  web:\n    image: x\n    env_file: [{path: .env.local, required: false}, .env]\n', {}, { '.env': 'A=1' }));
    expect(s.services[0].spec.env).toEqual({ A: '1' });
  });

  it('bind mounts are refused with the rule', () => {
    const errs = errorsOf(() => parseCompose(input('services:\n  web:\n    image: x\n    volumes: ["./certs:/certs:ro", {type: bind, source: /etc, target: /e}, "data:/d"]\n')));
    expect(errs[0]).toMatch(/^services\.web\.volumes\[0\]: bind mount of \.\/certs refused: a host path is not the same on every node/);
    expect(errs[1]).toMatch(/^services\.web\.volumes\[1\]: bind mount of \/etc refused/);
    expect(errs[2]).toBe('services.web.volumes[2]: volume data is not declared under top-level volumes:');
  });

  it('a text file bind-mounted from beside the compose file becomes a read-only config; directories, absolute paths, binary and large files are refused', () => {
    const files = { 'nginx.conf': 'events {}\n', 'conf/app.ini': 'a=1\n', 'blob.bin': 'x\uFFFDy', 'big.txt': 'x'.repeat(70 * 1024) };
    const s = parseCompose(input('services:\n  web:\n    image: x\n    volumes: ["./nginx.conf:/etc/nginx/nginx.conf:ro", {type: bind, source: ./conf/app.ini, target: /app/app.ini}]\n', {}, files));
    expect(s.services[0].spec.files).toEqual([
      { kind: 'config', name: 'bind-mount-0', target: '/etc/nginx/nginx.conf', data: Buffer.from('events {}\n').toString('base64'), mode: 0o444 },
      { kind: 'config', name: 'bind-mount-1', target: '/app/app.ini', data: Buffer.from('a=1\n').toString('base64'), mode: 0o444 },
    ]);
    expect(s.services[0].spec.volumes).toBeUndefined();
    expect(s.warnings).toEqual([
      'services.web.volumes[0]: ./nginx.conf is shipped with the stack as a config at /etc/nginx/nginx.conf: a copy taken now (run up again after editing it)',
      'services.web.volumes[1]: ./conf/app.ini is shipped with the stack as a config at /app/app.ini: a copy taken now (run up again after editing it), read-only in the container',
    ]);
    expect(validateAppSpec(s.services[0].spec).ok).toBe(true);
    const errs = errorsOf(() => parseCompose(input('services:\n  web:\n    image: x\n    volumes: ["./blob.bin:/b", "./big.txt:/t", "./nginx.conf:/n"]\n  p:\n    x-omni-driver: process\n    command: [sleep, "9"]\n    volumes: ["./nginx.conf:/n"]\n', {}, files)));
    expect(errs).toEqual([
      'services.web.volumes[0]: bind mount of ./blob.bin refused: not a text file (a config is text); use a named volume',
      "services.web.volumes[1]: bind mount of ./big.txt refused: larger than 64 KiB, a config's limit; use a named volume",
      expect.stringMatching(/^services\.p\.volumes\[0\]: bind mount of \.\/nginx\.conf refused: a host path is not the same on every node/),
    ]);
  });

  it('unknown dependencies, bad conditions, service_healthy without a healthcheck', () => {
    const errs = errorsOf(() => parseCompose(input('services:\n  a: {image: x, depends_on: {b: {condition: service_healthy}, z: {condition: started}}}\n  b: {image: x}\n')));
    expect(errs).toContain('services.a.depends_on.z.condition: must be service_started, service_healthy or service_completed_successfully');
    expect(errs).toContain('services.b: has no healthcheck, but a wait(s) for it with condition service_healthy');
  });

  it('a dependency on a disabled profile service', () => {
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, depends_on: [b]}\n  b: {image: x, profiles: [dev]}\n')))).toEqual(['services.a.depends_on: b is not enabled (its profiles are not active): activate one with --profile']);
  });

  it('udp ports: a port of their own next to a TCP one of the same number, published alike', () => {
    const c = parseCompose(input('services:\n  dns: {image: x, ports: ["53:53/udp", "53:53", {target: 5353, published: 15353, protocol: udp}]}\n'));
    expect(c.services[0].spec.ports).toEqual([
      { name: 'u53', port: 53, publish: 53, protocol: 'udp' },
      { name: 'p53', port: 53, publish: 53 },
      { name: 'u5353', port: 5353, publish: 15353, protocol: 'udp' },
    ]);
  });

  it('not YAML, duplicate keys, no services, sctp ports, port ranges, replicas with global mode', () => {
    expect(errorsOf(() => parseCompose(input('services: [\n')))[0]).toMatch(/^compose\.yaml: /);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x}\n  a: {image: y}\n')))[0]).toMatch(/unique/i);
    expect(errorsOf(() => parseCompose(input('name: x\n')))).toEqual(['compose.yaml: services: must be a mapping of at least one service']);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, ports: ["53:53/sctp", "8000-8001:8000-8001"]}\n')))).toEqual(['services.a.ports[0]: protocol sctp is not supported (tcp or udp)', 'services.a.ports[1]: port ranges are not supported: list each port']);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, deploy: {mode: global, replicas: 2}}\n')))[0]).toMatch(/^services\.a\.deploy\.replicas: not with mode: global/);
    expect(parseCompose(input('services:\n  a: {image: x, deploy: {mode: global}}\n')).services[0].spec).toMatchObject({ mode: 'global' });
    expect(validateAppSpec(parseCompose(input('services:\n  a: {image: x, deploy: {mode: global}}\n')).services[0].spec)).toMatchObject({ ok: true, spec: { mode: 'global', antiAffinity: true } });
    expect(errorsOf(() => parseCompose(input('services:\n  a: {build: {context: ., dockerfile_inline: "FROM x"}}\n')))[0]).toMatch(/^services\.a\.build\.dockerfile_inline: not supported/);
  });

  it('invalid app specs surface with the service named', () => {
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, deploy: {replicas: -1}}\n')))).toEqual(['services.a: replicas: must be a whole number from 0 to 1000']);
    expect(errorsOf(() => parseCompose(input('services:\n  averyveryveryverylongservicenamethatistoolong: {image: x}\n')))[0]).toMatch(/longer than 40 characters/);
  });
});

describe('compose: pieces', () => {
  it('durations', () => {
    expect(parseDuration('10s')).toBe(10_000);
    expect(parseDuration('1m30s')).toBe(90_000);
    expect(parseDuration('1h2m3s4ms')).toBe(3_723_004);
    expect(parseDuration('1.5s')).toBe(1500);
    expect(parseDuration('500ms')).toBe(500);
    expect(parseDuration(3)).toBe(3000);
    for (const bad of ['', '10', 's', '10x', '1m 30s', '-1s']) expect(parseDuration(bad)).toBeUndefined();
  });

  it('interpolation', () => {
    const env = { A: 'a', E: '' };
    const miss: string[] = [];
    const m = (n: string) => miss.push(n);
    expect(interpolate('$A ${A} ${B:-dflt} ${E:-e} ${E-e} ${B-b} $$A ${A:+set} ${B:+set} ${B:-${A}x}', env, m)).toBe('a a dflt e  b $A set  ax');
    expect(interpolate('${B} $C', env, m)).toBe(' ');
    expect(miss).toEqual(['B', 'C']);
    expect(() => interpolate('${E:?needed}', env, m)).toThrow('variable E is required: needed');
    expect(() => interpolate('${A', env, m)).toThrow(/unclosed/);
    expect(() => interpolate('${1A}', env, m)).toThrow(/invalid variable reference/);
  });

  it('x- extensions are neither checked nor interpolated; unset variables are warned', () => {
    const s = parseCompose(input('x-a: ${NOPE:?never}\nservices:\n  web:\n    image: x\n    x-anything: {a: 1}\n    environment: {U: $UNSET}\n'));
    expect(s.warnings).toEqual(['variable UNSET is not set: an empty string is used']);
    expect(s.services[0].spec.env).toEqual({ U: '' });
  });

  it('env files, command splitting, constraints, volume names', () => {
    expect(parseEnvText('export A=1\nB="x\\ny" # c\nC=\'$lit\'\nD=v # comment\nLONE\n', 'f')).toEqual({ A: '1', B: 'x\ny', C: '$lit', D: 'v' });
    expect(() => parseEnvText('=x', 'f')).toThrow('f:1: expected KEY=VALUE');
    expect(splitCommand(`sh -c "echo 'hi there'" a\\ b ''`)).toEqual(['sh', '-c', "echo 'hi there'", 'a b', '']);
    expect(splitCommand('a "b')).toBeUndefined();
    expect(swarmConstraint('node.labels.zone == a')).toBe('label.zone==a');
    expect(swarmConstraint('node.hostname!=n3')).toBe('node.name!=n3');
    expect(swarmConstraint('node.platform.arch==x86_64')).toBe('arch==amd64');
    expect(swarmConstraint('node.role==manager')).toBeUndefined();
    expect(volumeName('data')).toBe('data');
    expect(volumeName('local_postgres_data')).toMatch(/^local-post-[0-9a-f]{4}$/);
    expect(volumeName('local_postgres_data')).not.toBe(volumeName('local_postgres_date'));
  });

  it('port forms', () => {
    const s = parseCompose(input('services:\n  a: {image: x, ports: ["127.0.0.1:8081:81", "82", {target: 83, published: "8083"}, 84]}\n'));
    expect(s.services[0].spec.ports).toEqual([{ name: 'p81', port: 81, publish: 8081 }, { name: 'p82', port: 82 }, { name: 'p83', port: 83, publish: 8083 }, { name: 'p84', port: 84 }]);
    expect(s.warnings).toEqual([expect.stringMatching(/^services\.a\.ports\[0\]: the host IP is ignored/)]);
  });

  it("an image service's entrypoint replaces the image's ENTRYPOINT ('' or []: none); a spec refuses it for a process app", () => {
    const s = parseCompose(input('services:\n  a: {image: x, entrypoint: [sh, -c], command: ["echo hi"]}\n  b: {image: x, entrypoint: ""}\n  c: {image: x, entrypoint: /bin/run --fast}\n'));
    expect(s.services.map((x) => [x.spec.entrypoint, x.spec.args])).toEqual([
      [['sh', '-c'], ['echo hi']],
      [[], undefined],
      [['/bin/run', '--fast'], undefined],
    ]);
    expect(validateAppSpec({ name: 'a', image: 'x', entrypoint: ['sh'] })).toMatchObject({ ok: true, spec: { entrypoint: ['sh'] } });
    expect(validateAppSpec({ name: 'a', command: ['true'], entrypoint: ['sh'] })).toMatchObject({ ok: false, errors: [{ field: 'entrypoint' }] });
  });

  it('user, working_dir, hostname, stop_signal and stop_grace_period become container options; a process service refuses the container ones', () => {
    const s = parseCompose(input('services:\n  a:\n    image: x\n    user: "1000:1000"\n    working_dir: /app\n    hostname: web\n    stop_signal: SIGQUIT\n    stop_grace_period: 1m30s\n'));
    expect(s.services[0].spec).toMatchObject({ user: '1000:1000', workingDir: '/app', hostname: 'web', stopSignal: 'SIGQUIT', stopTimeoutMs: 90_000 });
    expect(validateAppSpec(s.services[0].spec)).toMatchObject({ ok: true, spec: { user: '1000:1000', workingDir: '/app', hostname: 'web', stopSignal: 'SIGQUIT', stopTimeoutMs: 90_000 } });
    expect(s.warnings).toEqual([]);
    expect(errorsOf(() => parseCompose(input('services:\n  p: {x-omni-driver: process, command: [sleep, "9"], user: nobody, stop_grace_period: 2s}\n')))).toEqual(['services.p.user: only for an image service (a container option): a process service runs on the node']);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, stop_grace_period: 2h}\n')))[0]).toMatch(/^services\.a\.stop_grace_period: must be a duration of at most 10m/);
    for (const bad of [{ user: 'a b' }, { workingDir: 'rel/dir' }, { hostname: '-x' }, { stopSignal: 'kill -9' }, { stopTimeoutMs: 700_000 }]) {
      expect(validateAppSpec({ name: 'a', image: 'x', ...bad }), JSON.stringify(bad)).toMatchObject({ ok: false, errors: [{ field: Object.keys(bad)[0] }] });
    }
    expect(validateAppSpec({ name: 'a', command: ['true'], user: 'nobody' })).toMatchObject({ ok: false, errors: [{ field: 'user' }] });
    expect(validateAppSpec({ name: 'a', command: ['true'], stopTimeoutMs: 20_000 })).toMatchObject({ ok: true, spec: { stopTimeoutMs: 20_000 } });
  });

  it('shm_size, ulimits, tmpfs, read_only and cap_drop limit an image service; bad values are errors', () => {
    const s = parseCompose(input('services:\n  a:\n    image: x\n    shm_size: 2gb\n    ulimits:\n      nproc: 65535\n      nofile: {soft: 20000, hard: 40000}\n    tmpfs: [/run, "/tmp:size=64m,mode=1777"]\n    read_only: true\n    cap_drop: [ALL]\n  b: {image: x, shm_size: 67108864, tmpfs: /cache}\n'));
    expect(s.services[0].spec).toMatchObject({ shmSizeMB: 2048, ulimits: { nproc: { soft: 65535, hard: 65535 }, nofile: { soft: 20000, hard: 40000 } }, tmpfs: [{ path: '/run' }, { path: '/tmp', sizeMB: 64 }], readOnly: true, capDrop: ['ALL'] });
    expect(s.services[1].spec).toMatchObject({ shmSizeMB: 64, tmpfs: [{ path: '/cache' }] });
    expect(s.warnings).toEqual(['services.a.tmpfs[1]: option mode ignored (size is taken)']);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, shm_size: lots}\n')))).toEqual(['services.a.shm_size: must be a size (bytes, or 64m, 2g)']);
    expect(errorsOf(() => parseCompose(input('services:\n  a: {image: x, ulimits: {bogus: 5}}\n')))[0]).toMatch(/ulimits\.bogus: not a limit docker sets/);
    expect(errorsOf(() => parseCompose(input('services:\n  p: {x-omni-driver: process, command: [sleep, "9"], read_only: true}\n')))).toEqual(['services.p.read_only: only for an image service (a container option): a process service runs on the node']);
    // still refused: what would give a container more than Docker's defaults
    for (const k of ['cap_add: [NET_ADMIN]', 'privileged: true', 'sysctls: {net.core.somaxconn: 1024}']) expect(errorsOf(() => parseCompose(input(`services:\n  a: {image: x, ${k}}\n`)))[0], k).toMatch(/a task runs with the driver’s default isolation/);
  });

  it('process-driver services run entrypoint + command on the node', () => {
    const s = parseCompose(input('services:\n  p:\n    x-omni-driver: process\n    entrypoint: [node]\n    command: -e "console.log(1)"\n'));
    expect(s.services[0].spec).toMatchObject({ driver: 'process', command: ['node', '-e', 'console.log(1)'] });
    expect(errorsOf(() => parseCompose(input('services:\n  p: {x-omni-driver: process, image: x}\n')))[0]).toMatch(/not an image or a build/);
    // limits the file gives are hard limits for a process service too (its cgroup); none: reserved only
    const limited = parseCompose(input('services:\n  p:\n    x-omni-driver: process\n    command: [sleep, "1"]\n    cpus: 0.5\n    mem_limit: 128m\n'));
    expect(limited.services[0].spec.resources).toMatchObject({ cpu: 0.5, memoryMB: 128, limit: true });
    const free = parseCompose(input('services:\n  p:\n    x-omni-driver: process\n    command: [sleep, "1"]\n'));
    expect((free.services[0].spec.resources as { limit?: boolean } | undefined)?.limit).toBeUndefined();
    // one limit only: not hard-limited (the other would be a default), and a warning says so
    const half = parseCompose(input('services:\n  p:\n    x-omni-driver: process\n    command: [sleep, "1"]\n    mem_limit: 1g\n'));
    expect((half.services[0].spec.resources as { limit?: boolean }).limit).toBeUndefined();
    expect(half.warnings).toEqual([expect.stringMatching(/both a CPU and a memory limit/)]);
  });

  it('build blocks and build repositories', () => {
    const s = parseCompose(input('services:\n  a:\n    build: {context: ., dockerfile: Dockerfile.server, args: [X=1, "Y", "Z"], target: prod}\n', { env: { Y: 'from-env' } }));
    expect(s.services[0].build).toEqual({ context: '.', dockerfile: 'Dockerfile.server', args: { X: '1', Y: 'from-env' }, target: 'prod' });
    expect(buildRepository('shop', 'api', 'ghcr.io/x/api:1')).toBe('shop-api');
    expect(buildRepository('shop', 'api', 'shop/api:1')).toBe('shop/api');
    expect(buildRepository('shop', 'my_api', undefined)).toBe('shop-my-api');
  });
});

describe('compose: secrets and configs are files', () => {
  const files = { 'db.pw': 'hunter2\n', 'app.conf': 'a=1\n' };
  const text = `services:
  web:
    image: omni-test/busybox:1
    secrets: [db_pw, {source: db_pw, target: other, mode: 0440}]
    configs: [app_conf, {source: inline, target: /etc/app/inline.conf}]
  proc:
    x-omni-driver: process
    command: [sleep, "60"]
    secrets: [db_pw]
secrets:
  db_pw: {file: ./db.pw}
configs:
  app_conf: {file: ./app.conf}
  inline: {content: "x=2"}
`;

  it('secrets at /run/secrets/NAME (or their target), configs at their target or /NAME, never in env', () => {
    const stack = parseCompose(input(text.replace('{source: db_pw, target: other, mode: 0440}', '{source: db_pw2, target: other, mode: 0440}').replace('  db_pw: {file: ./db.pw}', '  db_pw: {file: ./db.pw}\n  db_pw2: {file: ./db.pw}'), {}, files));
    const web = stack.services.find((s) => s.service === 'web')!.spec;
    const b64 = (t: string) => Buffer.from(t).toString('base64');
    expect(web.files).toEqual([
      { kind: 'secret', name: 'db_pw', target: '/run/secrets/db_pw', data: b64('hunter2\n'), mode: 0o444 },
      { kind: 'secret', name: 'db_pw2', target: '/run/secrets/other', data: b64('hunter2\n'), mode: 0o440 },
      { kind: 'config', name: 'app_conf', target: '/app_conf', data: b64('a=1\n'), mode: 0o444 },
      { kind: 'config', name: 'inline', target: '/etc/app/inline.conf', data: b64('x=2'), mode: 0o444 },
    ]);
    expect(JSON.stringify(web.env ?? {})).not.toContain('hunter2');
    const proc = stack.services.find((s) => s.service === 'proc')!.spec;
    expect(proc.files).toHaveLength(1);
    expect(validateAppSpec(web).ok).toBe(true);
    expect(validateAppSpec(proc).ok).toBe(true);
    expect(stack.warnings.join('\n')).not.toContain('hunter2');
  });

  it('the same secret at two targets is two files; a missing file, a file too large, a bad mode: errors', () => {
    expect((parseCompose(input(text, {}, files)).services[0].spec.files as { target: string }[]).map((f) => f.target)).toEqual(['/run/secrets/db_pw', '/run/secrets/other', '/app_conf', '/etc/app/inline.conf']);
    expect(errorsOf(() => parseCompose(input(text.replace('target: other', 'target: db_pw'), {}, files))).join('\n')).toContain('/run/secrets/db_pw is the target of two files');
    expect(errorsOf(() => parseCompose(input(text, {}, { 'app.conf': 'a' })))).toContain('secrets.db_pw.file: ./db.pw not found (relative to compose.yaml)');
    expect(errorsOf(() => parseCompose(input(text, {}, { ...files, 'db.pw': 'x'.repeat(64 * 1024 + 1) })))).toContain('secrets.db_pw: larger than 65536 bytes');
    expect(errorsOf(() => parseCompose(input(text.replace('mode: 0440', 'mode: 999'), {}, files))).join('\n')).toContain('mode: must be a file mode');
  });

  it('the app spec checks files: base64, absolute targets without .., size limits', () => {
    const base = { name: 'a', image: 'x' };
    const bad = (f: object) => validateAppSpec({ ...base, files: [f] });
    expect(bad({ kind: 'secret', name: 'a', target: 'rel', data: '' })).toMatchObject({ ok: false });
    expect(bad({ kind: 'secret', name: 'a', target: '/run/../etc/passwd', data: '' })).toMatchObject({ ok: false });
    expect(bad({ kind: 'secret', name: 'a', target: '/run/x', data: 'not base64!' })).toMatchObject({ ok: false });
    expect(bad({ kind: 'secret', name: 'a', target: '/run/x', data: Buffer.alloc(64 * 1024 + 3).toString('base64') })).toMatchObject({ ok: false });
    expect(bad({ kind: 'secret', name: 'a', target: '/run/x', data: Buffer.alloc(10).toString('base64') })).toMatchObject({ ok: true });
    expect(validateAppSpec({ name: 'a', command: ['true'], healthCheck: { type: 'command', command: ['true'], inContainer: true } })).toMatchObject({ ok: false });
  });
});

describe('compose: resources are limits only when the file gives limits', () => {
  const res = (svc: string) => (parseCompose(input(`services:\n  a:\n    image: x\n${svc}`)).services[0].spec.resources ?? {}) as Record<string, unknown>;
  it('no limits (nothing, or reservations only): reserved for placement, not enforced (limit: false)', () => {
    expect(res('')).toEqual({ limit: false });
    expect(res('    deploy: {resources: {reservations: {cpus: "0.5", memory: 128M}}}\n')).toEqual({ cpu: 0.5, memoryMB: 128, limit: false });
    expect(res('    mem_reservation: 64m\n')).toEqual({ memoryMB: 64, limit: false });
    expect(validateAppSpec({ name: 'a', image: 'x', resources: { limit: false } })).toMatchObject({ ok: true, spec: { resources: { cpu: 0.1, memoryMB: 64, gpus: 0, limit: false } } });
  });
  it('cpus, mem_limit or deploy.resources.limits: enforced', () => {
    expect(res('    cpus: 1.5\n')).toEqual({ cpu: 1.5 });
    expect(res('    mem_limit: 256m\n')).toEqual({ memoryMB: 256 });
    expect(res('    deploy: {resources: {limits: {cpus: "0.5"}}}\n')).toEqual({ cpu: 0.5 });
  });
});
