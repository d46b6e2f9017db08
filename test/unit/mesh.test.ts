// The pure parts of service networking: VIP allocation, the mesh view (aliases, published
// ports, serving endpoints), round-robin, hosts files, the tunnel header and the spec fields.
import { describe, expect, it } from 'vitest';
import { allocateVips, fnv1a, parseVipRange, vipKey, DEFAULT_VIP_RANGE, type VipRange } from '../../protocol/net/vip.js';
import { buildMesh, hostsFile, mayReach, RoundRobin, viewKey, type MeshInput } from '../../protocol/net/mesh.js';
import { HeaderReader, encodeHeader, readReply, readRequest, MAX_TUNNEL_HEADER_BYTES } from '../../protocol/net/tunnel-wire.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../../protocol/apps/model.js';

const range = (cidr = DEFAULT_VIP_RANGE): VipRange => {
  const r = parseVipRange(cidr);
  if (!r.ok) throw new Error(r.message);
  return r.range;
};

describe('VIP ranges and allocation', () => {
  it('accepts loopback ranges without 127.0.0.1, refuses the rest with a reason', () => {
    expect(range('127.77.0.0/16')).toEqual({ base: ((127 << 24) | (77 << 16)) >>> 0, size: 65536, cidr: '127.77.0.0/16' });
    expect(range('127.77.48.9/20').cidr).toBe('127.77.48.0/20');
    const bad = (c: string) => {
      const r = parseVipRange(c);
      return r.ok ? '' : r.message;
    };
    expect(bad('10.0.0.0/16')).toMatch(/inside 127\.0\.0\.0\/8/);
    expect(bad('127.0.0.0/16')).toMatch(/contains 127\.0\.0\.1/);
    expect(bad('127.77.0.0/8')).toMatch(/\/12 to \/24/);
    expect(bad('127.77.0.0/28')).toMatch(/\/12 to \/24/);
    expect(bad('127.300.0.0/16')).toMatch(/CIDR/);
  });

  it('is deterministic, unique, inside the range, never .0 or .255', () => {
    const keys = Array.from({ length: 2000 }, (_, i) => vipKey(`net${i % 7}`, `svc-${i}`));
    const r = range();
    const a = allocateVips(keys, r);
    const b = allocateVips([...keys].reverse(), r);
    expect(a).toEqual(b);
    expect(a.size).toBe(2000);
    expect(new Set(a.values()).size).toBe(2000);
    for (const ip of a.values()) {
      expect(ip).toMatch(/^127\.77\.\d+\.\d+$/);
      const last = Number(ip.split('.')[3]);
      expect(last).not.toBe(0);
      expect(last).not.toBe(255);
    }
  });

  it('resolves a collision by probing: both keys get an address, the first in sorted order keeps the hashed one', () => {
    const r = range('127.77.0.0/24'); // 254 usable addresses: collisions are certain among 100 keys
    const keys = Array.from({ length: 100 }, (_, i) => vipKey('n', `s${i}`));
    const got = allocateVips(keys, r);
    expect(new Set(got.values()).size).toBe(100);
    // Find two keys hashing to the same slot and check who keeps it.
    const bySlot = new Map<number, string[]>();
    for (const k of [...keys].sort()) bySlot.set(fnv1a(k) % 256, [...(bySlot.get(fnv1a(k) % 256) ?? []), k]);
    const pair = [...bySlot.entries()].find(([slot, ks]) => ks.length > 1 && slot !== 0 && slot !== 255 && !keys.some((k) => k < ks[0] && got.get(k) === `127.77.0.${slot}`));
    expect(pair).toBeDefined();
    expect(got.get(pair![1][0])).toBe(`127.77.0.${pair![0]}`);
    expect(got.get(pair![1][1])).not.toBe(`127.77.0.${pair![0]}`);
  });

  it('docker ranges: outside loopback, 0/8 and multicast', () => {
    const ok = parseVipRange('198.18.48.0/20', 'docker');
    expect(ok.ok && ok.range.cidr).toBe('198.18.48.0/20');
    for (const bad of ['127.77.0.0/16', '0.1.0.0/16', '224.1.0.0/16', '198.18.0.0/8']) expect(parseVipRange(bad, 'docker').ok).toBe(false);
  });

  it('leaves keys past the capacity without an address', () => {
    const r = range('127.77.0.0/24');
    const got = allocateVips(Array.from({ length: 300 }, (_, i) => `n/s${i}`), r);
    expect(got.size).toBe(254);
  });
});

function spec(over: Partial<AppSpec> & { name: string }): AppSpec {
  const r = validateAppSpec({ command: ['x'], ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}
const record = (name: string, state: AppRecord['state'] = 'running'): AppRecord =>
  ({ name, version: 1, previousVersion: 0, latestVersion: 1, state, deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [] });
const task = (id: string, app: string, nodeId: string, hostPorts: number[], desired: TaskRecord['desired'] = 'run'): TaskRecord => ({ id, app, version: 1, nodeId, hostPorts, desired, createdAtMs: 0, stopReason: '' });
const status = (id: string, state: TaskStatusRecord['state'], health: TaskStatusRecord['health']): TaskStatusRecord => ({ id, state, health, exitCode: null, reason: '', restarts: 0, startedAtMs: 0, updatedAtMs: 0 });

describe('mesh view', () => {
  const api = spec({ name: 'api', ports: [{ name: 'http', port: 8080, hostPort: 0, publish: 80 }, { name: 'admin', port: 9000, hostPort: 0 }], network: { name: 'shop', aliases: ['api', 'backend'] } } as never);
  const web = spec({ name: 'web', ports: [{ name: 'http', port: 3000, hostPort: 0 }], network: { name: 'shop' } } as never);
  const input = (over: Partial<MeshInput> = {}): MeshInput => {
    const apps = [{ record: record('api'), spec: api }, { record: record('web'), spec: web }];
    const statuses = new Map([
      ['api-1', status('api-1', 'running', 'healthy')],
      ['api-2', status('api-2', 'running', 'unhealthy')],
      ['api-3', status('api-3', 'running', 'none')],
      ['api-4', status('api-4', 'running', 'healthy')],
      ['web-1', status('web-1', 'starting', 'starting')],
    ]);
    return {
      apps,
      tasks: [task('api-3', 'api', 'n2', [20001, 20002]), task('api-1', 'api', 'n1', [20000, 20001]), task('api-2', 'api', 'n1', [20003, 20004]), task('api-4', 'api', 'n3', [20005, 20006], 'stop'), task('web-1', 'web', 'n1', [20009])],
      status: (id) => statuses.get(id),
      specOf: (app) => apps.find((a) => a.record.name === app)?.spec,
      range: range(),
      ...over,
    };
  };

  it('an app on several networks: its aliases on each, its tasks see all their names (qualified too), an app of one network sees only its own', () => {
    const db = spec({ name: 'db', ports: [{ name: 'redis', port: 6379, hostPort: 0 }], network: { name: 'back' } } as never);
    const mid = spec({ name: 'mid', ports: [{ name: 'http', port: 8081, hostPort: 0 }], networks: [{ name: 'shop', aliases: ['mid'] }, { name: 'back', aliases: ['mid', 'gw'] }] } as never);
    expect(mid.networks).toEqual([{ name: 'shop', aliases: ['mid'] }, { name: 'back', aliases: ['mid', 'gw'] }]);
    expect(viewKey(mid)).toBe('back+shop');
    expect(viewKey(db)).toBe('back');
    const apps = [...input().apps, { record: record('db'), spec: db }, { record: record('mid'), spec: mid }];
    const v = buildMesh(input({ apps, dockerRange: parseVipRange('198.18.0.0/16', 'docker').ok ? (parseVipRange('198.18.0.0/16', 'docker') as { range: VipRange }).range : undefined, dockerNetworks: new Set(['back+shop', 'back', 'shop']) }));
    // shop's tasks: no db, no gw; back's: no api, no web
    expect([...v.hosts.get('shop')!.keys()].sort()).toEqual(['api', 'backend', 'mid', 'web']);
    expect([...v.hosts.get('back')!.keys()].sort()).toEqual(['db', 'gw', 'mid']);
    // mid's own tasks: every name of both, and each qualified by its network
    const both = v.hosts.get('back+shop')!;
    expect([...both.keys()].sort()).toEqual(['api', 'api.shop', 'backend', 'backend.shop', 'db', 'db.back', 'gw', 'gw.back', 'mid', 'mid.back', 'mid.shop', 'web', 'web.shop']);
    expect(both.get('mid')).toBe(v.hosts.get('back')!.get('mid')); // back sorts first
    expect(both.get('mid.shop')).toBe(v.hosts.get('shop')!.get('mid'));
    expect(v.hosts.get('back')!.get('mid')).not.toBe(v.hosts.get('shop')!.get('mid')); // one VIP per network
    expect(v.views.get('back+shop')).toEqual(['back', 'shop']);
    expect(v.dns.get('back+shop')?.vip).toMatch(/^127\.77\./);
    expect(new Set([v.dns.get('back+shop')!.vip, v.dns.get('back')!.vip, v.dns.get('shop')!.vip]).size).toBe(3);
    expect(v.dockerHosts.get('back+shop')!.get('db.back')).toMatch(/^198\.18\./);
    expect(v.listeners.filter((l) => l.app === 'mid' && l.kind === 'loopback').map((l) => `${l.network}/${l.alias}`).sort()).toEqual(['back/gw', 'back/mid', 'shop/mid']);
    expect(v.conflicts).toEqual([]);
    // the same alias on both networks: said once, and the bare name is the first network's
    const dup = spec({ name: 'mid2', ports: [{ name: 'http', port: 8081, hostPort: 0 }], network: { name: 'back', aliases: ['web'] } } as never);
    const both2 = buildMesh(input({ apps: [...apps, { record: record('mid2'), spec: dup }] }));
    expect(both2.conflicts).toEqual(['alias web is a service on networks back and shop: tasks on both see back\'s as web (ask for web.shop for the other)']);
    expect(both2.hosts.get('back+shop')!.get('web')).toBe(both2.hosts.get('back')!.get('web'));
    expect(both2.hosts.get('back+shop')!.get('web.shop')).toBe(both2.hosts.get('shop')!.get('web'));
    // a task here of an older version on back+shop keeps its view (names, DNS) after its app moved to one network
    const moved = buildMesh(input({ apps: [...input().apps, { record: record('db'), spec: db }], localViews: ['back+shop'] }));
    expect([...moved.hosts.get('back+shop')!.keys()]).toContain('db.back');
    expect(moved.dns.get('back+shop')).toBeDefined();
    // the spec: both forms refused together, a network listed twice refused, one network written as network
    expect(validateAppSpec({ name: 'x', command: ['x'], network: { name: 'a' }, networks: [{ name: 'b' }, { name: 'c' }] }).ok).toBe(false);
    expect(validateAppSpec({ name: 'x', command: ['x'], networks: [{ name: 'b' }, { name: 'b' }] }).ok).toBe(false);
    const one = validateAppSpec({ name: 'x', command: ['x'], networks: [{ name: 'b' }] });
    expect(one.ok && one.spec.network).toEqual({ name: 'b', aliases: ['x'] });
    expect(one.ok && one.spec.networks).toBeUndefined();
  });

  it('listens per alias and port, publishes, and routes only to serving replicas desired to run', () => {
    const v = buildMesh(input());
    expect(web.network).toEqual({ name: 'shop', aliases: ['web'] });
    expect(v.listeners.map((l) => `${l.alias}:${l.port}>${l.app}/${l.portName}`).sort()).toEqual(['api:8080>api/http', 'api:9000>api/admin', 'backend:8080>api/http', 'backend:9000>api/admin', 'web:3000>web/http']);
    const hosts = v.hosts.get('shop')!;
    expect([...hosts.keys()].sort()).toEqual(['api', 'backend', 'web']);
    expect(v.listeners.find((l) => l.alias === 'api')!.vip).toBe(hosts.get('api'));
    expect(v.published).toEqual([{ port: 80, app: 'api', portName: 'http' }]);
    // api-2 unhealthy, api-4 desired stop, web-1 not running yet.
    expect(v.endpoints.get('api/http')).toEqual([{ taskId: 'api-1', nodeId: 'n1', hostPort: 20000 }, { taskId: 'api-3', nodeId: 'n2', hostPort: 20001 }]);
    expect(v.endpoints.get('api/admin')!.map((e) => e.hostPort)).toEqual([20001, 20002]);
    expect(v.endpoints.get('web/http')).toBeUndefined();
    expect(v.conflicts).toEqual([]);
  });

  it('drops stopped apps, reports an alias or a published port claimed twice (the first app by name keeps it)', () => {
    const dup = spec({ name: 'zeta', ports: [{ name: 'http', port: 1, hostPort: 0, publish: 80 }], network: { name: 'shop', aliases: ['api'] } } as never);
    const base = input();
    const v = buildMesh({ ...base, apps: [...base.apps, { record: record('zeta'), spec: dup }] });
    expect(v.conflicts).toEqual(['alias api on network shop is claimed by api and zeta: api keeps it', 'port 80 is published by api and zeta: api keeps it']);
    expect(v.listeners.filter((l) => l.app === 'zeta')).toEqual([]);
    const stopped = buildMesh({ ...base, apps: [{ record: record('api', 'stopped'), spec: api }, base.apps[1]] });
    expect(stopped.published).toEqual([]);
    expect(stopped.endpoints.get('api/http')).toBeUndefined();
    expect([...stopped.hosts.get('shop')!.keys()]).toEqual(['web']);
  });

  it('gives docker VIPs only to the networks with docker tasks on this node', () => {
    const dockerRange = parseVipRange('198.18.0.0/16', 'docker');
    if (!dockerRange.ok) throw new Error(dockerRange.message);
    const none = buildMesh(input({ dockerRange: dockerRange.range, dockerNetworks: new Set() }));
    expect(none.listeners.filter((l) => l.kind === 'docker')).toEqual([]);
    expect(none.dockerHosts.size).toBe(0);
    const v = buildMesh(input({ dockerRange: dockerRange.range, dockerNetworks: new Set(['shop']) }));
    const d = v.dockerHosts.get('shop')!;
    expect([...d.keys()].sort()).toEqual(['api', 'backend', 'web']);
    for (const ip of d.values()) expect(ip).toMatch(/^198\.18\./);
    const docker = v.listeners.filter((l) => l.kind === 'docker');
    expect(docker.map((l) => `${l.vip}:${l.port}`).sort()).toEqual(v.listeners.filter((l) => l.kind === 'loopback').map((l) => `${d.get(l.alias)}:${l.port}`).sort());
  });

  it('round-robins, each call starting one further, over the current list', () => {
    const rr = new RoundRobin();
    const eps = ['a', 'b', 'c'];
    expect([rr.order('k', eps), rr.order('k', eps), rr.order('k', eps), rr.order('k', eps)]).toEqual([['a', 'b', 'c'], ['b', 'c', 'a'], ['c', 'a', 'b'], ['a', 'b', 'c']]);
    expect(rr.order('other', eps)[0]).toBe('a');
    expect(rr.order('k', ['x'])).toEqual(['x']);
    expect(rr.order('k', [])).toEqual([]);
  });

  it('writes hosts files with localhost first and one line per alias', () => {
    expect(hostsFile(new Map([['web', '127.77.0.9'], ['api', '127.77.1.2']]))).toBe('127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.77.1.2\tapi\n127.77.0.9\tweb\n');
    expect(hostsFile(undefined)).toBe('127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n');
  });
});

describe('mayReach: which addresses a container may connect to', () => {
  it("a service's VIP only from a task on its network; a view's DNS address only from a task on all of the view's networks", () => {
    expect(mayReach(['net1'], ['net1'])).toBe(true);
    expect(mayReach(['net1'], ['net2'])).toBe(false);
    expect(mayReach(['net1', 'net2'], ['net2'])).toBe(true);
    expect(mayReach(['net1', 'net2'], ['net1', 'net2'])).toBe(true);
    expect(mayReach(['net1'], ['net1', 'net2'])).toBe(false);
    expect(mayReach([], ['net1'])).toBe(false);
    expect(mayReach(['net1'], [])).toBe(false);
  });
});

describe('tunnel header', () => {
  it('round-trips a request and keeps the bytes that follow it', () => {
    const h = encodeHeader({ taskId: 'api-1a2b3c', hostPort: 20000 });
    const bytes = new Uint8Array([...h, 1, 2, 3]);
    const r = new HeaderReader();
    expect(r.push(bytes.subarray(0, 1))).toBeUndefined();
    expect(r.push(bytes.subarray(1, 5))).toBeUndefined();
    const got = r.push(bytes.subarray(5))!;
    expect(readRequest(got.header)).toEqual({ taskId: 'api-1a2b3c', hostPort: 20000 });
    expect([...got.rest]).toEqual([1, 2, 3]);
  });

  it('refuses oversized, malformed and hostile headers', () => {
    expect(() => new HeaderReader().push(new Uint8Array([0xff, 0xff]))).toThrow(/at most/);
    expect(() => new HeaderReader().push(new Uint8Array([0, 0]))).toThrow();
    expect(() => new HeaderReader().push(new Uint8Array([0, 2, 0x7b, 0x7b]))).toThrow(/JSON/);
    expect(() => encodeHeader({ ok: false, code: 'X', message: 'm'.repeat(MAX_TUNNEL_HEADER_BYTES) })).toThrow();
    for (const bad of [null, {}, { taskId: '../x', hostPort: 1 }, { taskId: 'a', hostPort: 0 }, { taskId: 'a', hostPort: 70000 }, { taskId: 'a', hostPort: 1.5 }, { taskId: 'a', hostPort: '80' }, { taskId: 'A', hostPort: 80 }]) {
      expect(() => readRequest(bad)).toThrow(/malformed/);
    }
    expect(readReply({ ok: true })).toEqual({ ok: true });
    expect(readReply({ ok: false, code: 'NOT_HERE', message: 'no' })).toEqual({ ok: false, code: 'NOT_HERE', message: 'no' });
    expect(() => readReply({ ok: 'yes' })).toThrow();
  });
});

describe('spec: network and publish', () => {
  const errs = (input: Record<string, unknown>) => {
    const r = validateAppSpec({ name: 'api', command: ['x'], ...input });
    return r.ok ? [] : r.errors.map((e) => `${e.field}: ${e.message}`);
  };
  it('defaults aliases to the app name, dedupes, and keeps publish', () => {
    const r = validateAppSpec({ name: 'api', command: ['x'], network: { name: 'shop' }, ports: [{ name: 'http', port: 8080, publish: 80 }] });
    expect(r.ok && r.spec.network).toEqual({ name: 'shop', aliases: ['api'] });
    expect(r.ok && r.spec.ports[0]).toEqual({ name: 'http', port: 8080, hostPort: 0, publish: 80 });
    const d = validateAppSpec({ name: 'api', command: ['x'], network: { name: 'shop', aliases: ['a', 'b', 'a'] } });
    expect(d.ok && d.spec.network!.aliases).toEqual(['a', 'b']);
    const none = validateAppSpec({ name: 'api', command: ['x'] });
    expect(none.ok && 'network' in none.spec).toBe(false);
  });
  it('names the offending field', () => {
    expect(errs({ network: 'shop' })).toEqual(['network: must be {name, aliases?}']);
    expect(errs({ network: { name: 'Shop' } })[0]).toMatch(/^network\.name: /);
    expect(errs({ network: { name: 'shop', aliases: [] } })[0]).toMatch(/^network\.aliases: must be a list of 1 to 8/);
    expect(errs({ network: { name: 'shop', aliases: ['ok', 'no_underscore'] } })[0]).toMatch(/^network\.aliases\[1\]: /);
    expect(errs({ network: { name: 'shop', aliases: ['localhost'] } })[0]).toMatch(/not localhost/);
    expect(errs({ network: { name: 'shop', alias: ['x'] } })[0]).toMatch(/network\.alias: unknown field 'alias' \(did you mean 'aliases'\?\)/);
    expect(errs({ ports: [{ name: 'a', port: 1, publish: 0 }] })[0]).toMatch(/^ports\[0\]\.publish: must be a whole number from 1 to 65535/);
    expect(errs({ ports: [{ name: 'a', port: 1, publish: 80 }, { name: 'b', port: 2, publish: 80 }] })).toEqual(['ports[1].publish: port 80 is published twice']);
  });
});
