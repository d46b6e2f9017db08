import { describe, expect, it } from 'vitest';
import { SchedulerState, schedule, DYNAMIC_PORT_MIN, type SchedNode, type SchedTask } from '../../protocol/apps/scheduler.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';

const GiB = 1024 ** 3;
const node = (id: string, over: Partial<SchedNode> = {}): SchedNode => ({ id, name: id, status: 'up', arch: 'amd64', labels: {}, cpu: 4, memoryBytes: 8 * GiB, gpus: 0, ...over });
function spec(over: Record<string, unknown> = {}): AppSpec {
  const r = validateAppSpec({ name: 'app', command: ['x'], ports: [{ name: 'http', port: 80 }], ...over });
  if (!r.ok) throw new Error(JSON.stringify(r.errors));
  return r.spec;
}

describe('scheduler: feasibility', () => {
  it('never places on nodes that are down, lack memory or fail constraints', () => {
    const nodes = [node('a', { status: 'down' }), node('b', { memoryBytes: 1 * GiB }), node('c', { arch: 'arm64' }), node('d')];
    const plan = schedule(nodes, [], { app: 'x', version: 1, count: 1, spec: spec({ resources: { memory: '2G' }, constraints: ['arch==amd64'] }) });
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['d']);
  });

  it('explains why nothing fits, and names missing GPUs plainly', () => {
    const nodes = [node('a', { arch: 'arm64' }), node('b', { memoryBytes: GiB })];
    const plan = schedule(nodes, [], { app: 'x', version: 1, count: 2, spec: spec({ resources: { memory: '2G' }, constraints: ['arch==amd64'] }) });
    expect(plan.unplaced).toBe(2);
    expect(plan.reason).toMatch(/0 of 2 nodes fit: .*1 fail constraint arch==amd64.*|0 of 2 nodes fit: .*lack memory/);
    expect(plan.reason).toMatch(/memory/);
    expect(plan.reason).toMatch(/arch==amd64/);
    const gpu = schedule([node('a', { gpus: 2 })], [], { app: 'g', version: 1, count: 1, spec: spec({ resources: { gpus: 4 } }) });
    expect(gpu.reason).toBe('no node with 4 GPUs');
  });

  it('places a task only on a node that can run its driver (a node that reports none is not filtered); driver.NAME constraints', () => {
    const nodes = [node('a', { drivers: ['forge', 'process'] }), node('b', { drivers: ['docker', 'forge', 'process'] }), node('c')];
    const dockerSpec = spec({ command: undefined, image: 'web:1' });
    expect(dockerSpec.driver).toBe('docker');
    const placed = schedule(nodes, [], { app: 'web', version: 1, count: 3, spec: { ...dockerSpec, antiAffinity: true } });
    expect(placed.placements.map((p) => p.nodeId).sort()).toEqual(['b', 'c']);
    expect(placed.reason).toBe('0 of 3 nodes fit: 2 already run a replica (anti-affinity), 1 cannot run the docker driver (no Docker engine answers there)');
    const none = schedule([node('a', { drivers: ['process'] })], [], { app: 'web', version: 1, count: 1, spec: dockerSpec });
    expect(none.reason).toBe('0 of 1 nodes fit: 1 cannot run the docker driver (no Docker engine answers there)');
    // a process task whose work needs an engine (a build): the constraint, not the driver, says so
    const build = spec({ constraints: ['driver.docker'] });
    expect(build.constraints).toEqual([{ attribute: 'driver.docker', op: 'exists', value: '' }]);
    expect(schedule([node('a', { drivers: ['process'] }), node('b', { drivers: ['docker', 'process'] })], [], { app: 'b', version: 1, count: 1, spec: build }).placements.map((p) => p.nodeId)).toEqual(['b']);
    expect(validateAppSpec({ name: 'x', command: ['x'], constraints: ['driver.Docker!'] }).ok).toBe(false);
  });

  it('reserves the workspace disk (resources.diskMB): a node without room is not chosen, and the reason says so', () => {
    // a: 5 GiB free, b: 50 GiB free, 30 GiB of it reserved by an existing task
    const existing: SchedTask[] = [{ id: 't0', app: 'old', version: 1, nodeId: 'b', cpu: 0.1, memoryBytes: 0, gpus: 0, hostPorts: [], diskBytes: 30 * GiB }];
    const s = new SchedulerState([node('a', { diskBytes: 5 * GiB }), node('b', { diskBytes: 50 * GiB }), node('c', { diskBytes: 12 * GiB })], existing);
    const ask = { app: 'w', version: 1, count: 1, spec: spec({ ports: [], resources: { disk: '10G' } }) };
    expect(ask.spec.resources.diskMB).toBe(10 * 1024);
    const first = s.place(ask);
    expect(first.placements.map((p) => p.nodeId)).toEqual(['b']); // b has 20 GiB left, c 12 GiB: both fit; a does not
    const second = s.place({ ...ask, app: 'w2' });
    const third = s.place({ ...ask, app: 'w3' });
    // b (10 GiB left after the first) and c (12 GiB) take one each; then nothing has 10 GiB left
    expect([...second.placements, ...third.placements].map((p) => p.nodeId).sort()).toEqual(['b', 'c']);
    const fourth = s.place({ ...ask, app: 'w4' });
    expect(fourth.unplaced).toBe(1);
    expect(fourth.reason).toMatch(/3 lack disk \(need 10240 MiB/);
    // without diskMB nothing is reserved, whatever the free disk
    expect(s.place({ app: 'n', version: 1, count: 1, spec: spec({ ports: [] }) }).unplaced).toBe(0);
  });

  it('never over-commits a node across successive asks and existing tasks', () => {
    const existing: SchedTask[] = [{ id: 't0', app: 'old', version: 1, nodeId: 'a', cpu: 3, memoryBytes: GiB, gpus: 0, hostPorts: [] }];
    const s = new SchedulerState([node('a'), node('b')], existing);
    const first = s.place({ app: 'x', version: 1, count: 4, spec: spec({ resources: { cpu: 1 } }) });
    const second = s.place({ app: 'y', version: 1, count: 5, spec: spec({ resources: { cpu: 1 } }) });
    const perNode = new Map<string, number>();
    for (const p of [...first.placements, ...second.placements]) perNode.set(p.nodeId, (perNode.get(p.nodeId) ?? 0) + 1);
    expect(perNode.get('a') ?? 0).toBeLessThanOrEqual(1); // 4 cores - 3 used
    expect(perNode.get('b') ?? 0).toBeLessThanOrEqual(4);
    expect(first.placements.length + second.placements.length).toBe(5);
    expect(second.unplaced).toBe(4);
    expect(second.reason).toMatch(/lack CPU/);
  });

  it('honours a fixed host port and hands out distinct dynamic ports', () => {
    const s = new SchedulerState([node('a')], [{ id: 't', app: 'o', version: 1, nodeId: 'a', cpu: 0, memoryBytes: 0, gpus: 0, hostPorts: [8080, DYNAMIC_PORT_MIN] }]);
    expect(s.place({ app: 'x', version: 1, count: 1, spec: spec({ ports: [{ name: 'http', port: 80, hostPort: 8080 }] }) }).reason).toMatch(/host port/);
    const dyn = s.place({ app: 'y', version: 1, count: 3, spec: spec() });
    const ports = dyn.placements.map((p) => p.hostPorts[0]);
    expect(new Set(ports).size).toBe(3);
    expect(ports).not.toContain(DYNAMIC_PORT_MIN);
  });

  it('nodes on one host share its port space', () => {
    const nodes = [node('a', { host: '127.0.0.1' }), node('b', { host: '127.0.0.1' })];
    const plan = schedule(nodes, [], { app: 'x', version: 1, count: 2, spec: spec({ antiAffinity: true }) });
    expect(new Set(plan.placements.map((p) => p.hostPorts[0])).size).toBe(2);
  });

  it('keeps a volume-pinned app on its node', () => {
    const plan = schedule([node('a'), node('b'), node('c')], [], { app: 'db', version: 1, count: 1, spec: spec({ volumes: [{ name: 'data', path: '/data' }] }), pinnedNodeId: 'c' });
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['c']);
  });
});

describe('scheduler: ranking and spreading', () => {
  it('anti-affinity puts one replica per node and leaves the rest pending', () => {
    const plan = schedule([node('a'), node('b'), node('c')], [], { app: 'web', version: 1, count: 4, spec: spec({ antiAffinity: true }) });
    expect(plan.placements.map((p) => p.nodeId).sort()).toEqual(['a', 'b', 'c']);
    expect(plan.unplaced).toBe(1);
    expect(plan.reason).toMatch(/anti-affinity/);
  });

  it('bin-pack fills the fuller node; spread picks the emptier one', () => {
    const busy: SchedTask[] = [{ id: 't', app: 'o', version: 1, nodeId: 'a', cpu: 2, memoryBytes: 4 * GiB, gpus: 0, hostPorts: [] }];
    const ask = (placement: string) => ({ app: 'x', version: 1, count: 1, spec: spec({ placement }) });
    expect(schedule([node('a'), node('b')], busy, ask('binpack')).placements[0].nodeId).toBe('a');
    expect(schedule([node('a'), node('b')], busy, ask('spread')).placements[0].nodeId).toBe('b');
  });

  it('spreadBy balances replicas across label values (zones)', () => {
    const nodes = [node('a1', { labels: { zone: 'a' } }), node('a2', { labels: { zone: 'a' } }), node('b1', { labels: { zone: 'b' } }), node('b2', { labels: { zone: 'b' } })];
    const plan = schedule(nodes, [], { app: 'z', version: 1, count: 4, spec: spec({ spreadBy: 'zone' }) });
    const zones = plan.placements.map((p) => nodes.find((n) => n.id === p.nodeId)!.labels.zone);
    expect(zones.filter((z) => z === 'a')).toHaveLength(2);
    expect(zones.filter((z) => z === 'b')).toHaveLength(2);
  });

  it('is deterministic: same input, or the nodes in another order, gives the same plan', () => {
    const nodes = Array.from({ length: 50 }, (_, i) => node(`n${String(i).padStart(2, '0')}`, { cpu: 2 + (i % 3), labels: { zone: `z${i % 3}` } }));
    const ask = { app: 'd', version: 1, count: 40, spec: spec({ resources: { cpu: 0.5 }, spreadBy: 'zone' }) };
    const a = schedule(nodes, [], ask);
    const b = schedule([...nodes].reverse(), [], ask);
    expect(b).toEqual(a);
    expect(schedule(nodes, [], ask)).toEqual(a);
  });
});

describe('scheduler: eligibility, failures and ports held by stopped tasks', () => {
  it('never places on an ineligible (drained) node, and says so', () => {
    const plan = schedule([node('a', { eligible: false }), node('b')], [], { app: 'x', version: 1, count: 2, spec: spec({ antiAffinity: true }) });
    expect(plan.placements.map((p) => p.nodeId)).toEqual(['b']);
    expect(plan.reason).toMatch(/1 are not eligible \(drained\)/);
  });

  it('avoids the nodes where the app just failed while another node fits, but uses them when none does', () => {
    const ask = { app: 'x', version: 1, count: 1, spec: spec(), avoidNodeIds: new Set(['a', 'b']) };
    expect(schedule([node('a'), node('b'), node('c', { memoryBytes: GiB })], [], ask).placements[0].nodeId).toBe('c');
    expect(schedule([node('a'), node('b')], [], ask).placements).toHaveLength(1);
    // on a large cluster the avoided nodes do not use up the K candidates ranked
    const many = Array.from({ length: 64 }, (_, i) => node(`n${String(i).padStart(2, '0')}`));
    const avoid = new Set(many.slice(0, 60).map((n) => n.id));
    expect(avoid.has(schedule(many, [], { ...ask, avoidNodeIds: avoid }).placements[0].nodeId)).toBe(false);
  });

  it('a stopped task not known to have exited keeps its host ports on that host, and nothing else', () => {
    const orphan: SchedTask = { id: 'o', app: 'x', version: 1, nodeId: 'a', cpu: 4, memoryBytes: 8 * GiB, gpus: 0, hostPorts: [DYNAMIC_PORT_MIN], portsOnly: true };
    // a and b share a host (same address): the orphan's port is taken on both
    const plan = schedule([node('a', { host: 'h1' }), node('b', { host: 'h1' })], [orphan], { app: 'x', version: 2, count: 1, spec: spec({ resources: { cpu: 4 } }) });
    expect(plan.placements).toHaveLength(1);
    expect(plan.placements[0].hostPorts).toEqual([DYNAMIC_PORT_MIN + 1]);
  });
});


describe('scheduler: soft preference (warm build cache)', () => {
  const nodes = (n: number) => Array.from({ length: n }, (_, i) => node(`n${String(i).padStart(2, '0')}`));

  it('places on a preferred node that fits, whatever bin-packing or the rotation says', () => {
    // Bin-pack would choose the fuller node n00; the preference moves the build to n01.
    const busy: SchedTask[] = [{ id: 't', app: 'other', version: 1, nodeId: 'n00', cpu: 3, memoryBytes: 4 * GiB, gpus: 0, hostPorts: [] }];
    const plain = schedule(nodes(2), busy, { app: 'build-x', version: 1, count: 1, spec: spec({ ports: [] }) });
    expect(plain.placements[0].nodeId).toBe('n00');
    const preferred = schedule(nodes(2), busy, { app: 'build-x', version: 1, count: 1, spec: spec({ ports: [] }), preferNodeIds: new Set(['n01']) });
    expect(preferred.placements[0].nodeId).toBe('n01');
    // On a large cluster the rotation ranks only K nodes: every preferred node is looked at anyway.
    for (const target of ['n00', 'n17', 'n31', 'n63']) {
      const plan = schedule(nodes(64), [], { app: 'build-y', version: 1, count: 1, spec: spec({ ports: [] }), preferNodeIds: new Set([target]) });
      expect(plan.placements[0].nodeId).toBe(target);
    }
  });

  it('is never a filter: a preferred node that does not fit is passed over for one that does', () => {
    const ns = [node('a', { memoryBytes: GiB }), node('b'), node('c', { status: 'down' })];
    const plan = schedule(ns, [], { app: 'build-z', version: 1, count: 1, spec: spec({ ports: [], resources: { memory: '2G' } }), preferNodeIds: new Set(['a', 'c', 'gone']) });
    expect(plan.unplaced).toBe(0);
    expect(plan.placements[0].nodeId).toBe('b');
    // Nothing fits at all: unplaced with the usual reason, the preference changes nothing.
    const none = schedule([node('a', { memoryBytes: GiB })], [], { app: 'build-z', version: 1, count: 1, spec: spec({ ports: [], resources: { memory: '2G' } }), preferNodeIds: new Set(['a']) });
    expect(none.unplaced).toBe(1);
    expect(none.reason).toMatch(/lack memory/);
  });

  it('weighs less than a recent failure there', () => {
    const plan = schedule([node('a'), node('b')], [], { app: 'build-w', version: 1, count: 1, spec: spec({ ports: [] }), preferNodeIds: new Set(['a']), avoidNodeIds: new Set(['a']) });
    expect(plan.placements[0].nodeId).toBe('b');
  });
});
