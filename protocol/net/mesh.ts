// The service mesh's view of the cluster, computed from the replicated state: which services
// exist on which networks (alias → app, ports), which ports are published cluster-wide, and
// which task replicas serve each of them right now. Pure: node/net/mesh.ts feeds it the apps,
// tasks and statuses it reads from the replica after every applied change and turns the result
// into listeners, hosts files and tunnel routes.
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../apps/model.js';
import { isServing } from '../apps/model.js';
import { networksOf, type AppSpec } from '../apps/spec.js';
import { allocateVips, vipKey, type VipRange } from './vip.js';
import { DNS_ALIAS } from './dns.js';

/** One replica of an app that serves now: connect to hostPort on nodeId. */
export interface Endpoint {
  taskId: string;
  nodeId: string;
  hostPort: number;
}

/** A listener the node's proxy keeps: VIP:port for a service port on a network. */
export interface ServiceListener {
  /** loopback: a 127.x VIP (process tasks); docker: an address of the docker VIP range (containers). */
  kind: 'loopback' | 'docker';
  network: string;
  alias: string;
  vip: string;
  port: number;
  app: string;
  portName: string;
  /** A UDP port: the proxy relays datagrams (absent: TCP). */
  udp?: true;
}

export interface PublishedPort {
  port: number;
  app: string;
  portName: string;
  udp?: true;
}

export interface MeshView {
  listeners: ServiceListener[];
  published: PublishedPort[];
  /**
   * Per network: alias → VIP (what its tasks' hosts files say). Also per view of several networks
   * (viewKey): the names of its networks merged (the first network by name keeps a bare alias on
   * two of them) plus `alias.network` for each.
   */
  hosts: Map<string, Map<string, string>>;
  /** What a task's names are made of: its view key (viewKey) → its networks, sorted. */
  views: Map<string, string[]>;
  /** The same for docker containers (only the networks in MeshInput.dockerNetworks). */
  dockerHosts: Map<string, Map<string, string>>;
  /** Per network with a service, and per view of several networks: its DNS address (protocol/net/dns.ts), and the containers' one when it has docker tasks here. */
  dns: Map<string, { vip: string; dockerVip?: string }>;
  /** `app/portName` → serving replicas, sorted by task id. */
  endpoints: Map<string, Endpoint[]>;
  /** Human-readable problems (an alias claimed twice, a published port claimed twice). */
  conflicts: string[];
}

export interface MeshInput {
  apps: { record: AppRecord; spec: AppSpec }[];
  tasks: TaskRecord[];
  status: (taskId: string) => TaskStatusRecord | undefined;
  /** The spec a task runs (its own version: its hostPorts follow that version's ports). */
  specOf: (app: string, version: number) => AppSpec | undefined;
  range: VipRange;
  /** Addresses for containers, and the networks (and view keys) that need them on this node (docker tasks here). */
  dockerRange?: VipRange;
  dockerNetworks?: ReadonlySet<string>;
  /** View keys of the tasks placed on this node (a task of an app's older version keeps its view while the app moves to other networks). */
  localViews?: Iterable<string>;
}

export const endpointKey = (app: string, portName: string) => `${app}/${portName}`;

/**
 * The key of the names a task of `spec` sees: its network's name, or for several networks their
 * names sorted and joined by `+` (no network name has one); undefined when it is on none.
 */
export function viewKey(spec: Pick<AppSpec, 'network' | 'networks'>): string | undefined {
  const nets = networksOf(spec).map((n) => n.name);
  return nets.length === 0 ? undefined : [...nets].sort().join('+');
}
const udpOf = (p: { protocol?: 'udp' }): { udp?: true } => (p.protocol === 'udp' ? { udp: true } : {});

/** Apps whose names and ports are live: running (not stopped, removing or failed). */
function live(record: AppRecord): boolean {
  return record.state === 'running';
}

export function buildMesh(input: MeshInput): MeshView {
  const conflicts: string[] = [];
  const apps = [...input.apps].filter((a) => live(a.record)).sort((a, b) => (a.record.name < b.record.name ? -1 : a.record.name > b.record.name ? 1 : 0));
  // An alias belongs to the first app (by name) that claims it on its network.
  const owner = new Map<string, string>();
  // Views of several networks: the sets the apps are on (a task of such an app sees all their names).
  const views = new Map<string, string[]>();
  for (const { record, spec } of apps) {
    for (const net of networksOf(spec)) {
      for (const alias of net.aliases) {
        const k = vipKey(net.name, alias);
        const prev = owner.get(k);
        if (prev === undefined) owner.set(k, record.name);
        else if (prev !== record.name) conflicts.push(`alias ${alias} on network ${net.name} is claimed by ${prev} and ${record.name}: ${prev} keeps it`);
      }
    }
    const key = viewKey(spec);
    if (key !== undefined) views.set(key, key.split('+'));
  }
  // Each network with a service, and each view of several, also gets a DNS address: the VIP of its reserved alias.
  const networks = new Set([...owner.keys()].map((k) => k.slice(0, k.lastIndexOf('/'))));
  for (const n of networks) views.set(n, [n]);
  for (const key of input.localViews ?? []) if (!views.has(key)) views.set(key, key.split('+'));
  const multi = [...views.keys()].filter((k) => k.includes('+'));
  const keys = [...owner.keys(), ...[...networks, ...multi].map((n) => vipKey(n, DNS_ALIAS))];
  const vips = allocateVips(keys, input.range);
  const dockerVips = input.dockerRange ? allocateVips(keys, input.dockerRange) : new Map<string, string>();
  const dns = new Map<string, { vip: string; dockerVip?: string }>();
  for (const n of [...networks, ...multi]) {
    const vip = vips.get(vipKey(n, DNS_ALIAS));
    const dockerVip = input.dockerNetworks?.has(n) ? dockerVips.get(vipKey(n, DNS_ALIAS)) : undefined;
    if (vip !== undefined) dns.set(n, { vip, ...(dockerVip !== undefined ? { dockerVip } : {}) });
  }
  const hosts = new Map<string, Map<string, string>>();
  const dockerHosts = new Map<string, Map<string, string>>();
  const listeners: ServiceListener[] = [];
  const published: PublishedPort[] = [];
  // TCP and UDP ports of one number are two ports.
  const publishedBy = new Map<string, string>();
  const specByApp = new Map<string, AppSpec>();
  for (const { record, spec } of apps) {
    specByApp.set(record.name, spec);
    for (const net of networksOf(spec)) {
      let h = hosts.get(net.name);
      if (!h) hosts.set(net.name, (h = new Map()));
      for (const alias of net.aliases) {
        const k = vipKey(net.name, alias);
        const vip = vips.get(k);
        if (owner.get(k) !== record.name) continue;
        if (vip === undefined) {
          conflicts.push(`no VIP left in ${input.range.cidr} for ${alias} on network ${net.name}`);
          continue;
        }
        h.set(alias, vip);
        for (const p of spec.ports) listeners.push({ kind: 'loopback', network: net.name, alias, vip, port: p.port, app: record.name, portName: p.name, ...udpOf(p) });
        const dvip = dockerVips.get(k);
        if (dvip === undefined || !input.dockerNetworks?.has(net.name)) continue;
        let dh = dockerHosts.get(net.name);
        if (!dh) dockerHosts.set(net.name, (dh = new Map()));
        dh.set(alias, dvip);
        for (const p of spec.ports) listeners.push({ kind: 'docker', network: net.name, alias, vip: dvip, port: p.port, app: record.name, portName: p.name, ...udpOf(p) });
      }
    }
    for (const p of spec.ports) {
      if (p.publish === undefined) continue;
      const key = `${p.publish}/${p.protocol ?? 'tcp'}`;
      const prev = publishedBy.get(key);
      if (prev !== undefined) {
        conflicts.push(`port ${p.publish}${p.protocol === 'udp' ? '/udp' : ''} is published by ${prev} and ${record.name}: ${prev} keeps it`);
        continue;
      }
      publishedBy.set(key, record.name);
      published.push({ port: p.publish, app: record.name, portName: p.name, ...udpOf(p) });
    }
  }
  // The names of each view of several networks: bare aliases (the first network by name keeps one
  // on two of them), then `alias.network` for every network's services.
  for (const key of multi) {
    const nets = views.get(key)!;
    for (const all of [hosts, dockerHosts]) {
      if (all === dockerHosts && !input.dockerNetworks?.has(key)) continue;
      const merged = new Map<string, string>();
      const firstOn = new Map<string, string>();
      for (const n of nets) {
        for (const [alias, vip] of all.get(n) ?? []) {
          if (!merged.has(alias)) {
            merged.set(alias, vip);
            firstOn.set(alias, n);
          } else if (all === hosts && !alias.includes('.') && owner.get(vipKey(firstOn.get(alias)!, alias)) !== owner.get(vipKey(n, alias))) {
            // two apps (not one app on both networks) answer to the bare name
            conflicts.push(`alias ${alias} is a service on networks ${firstOn.get(alias)} and ${n}: tasks on both see ${firstOn.get(alias)}'s as ${alias} (ask for ${alias}.${n} for the other)`);
          }
        }
      }
      for (const n of nets) for (const [alias, vip] of all.get(n) ?? []) merged.set(`${alias}.${n}`, vip);
      all.set(key, merged);
    }
  }
  // Endpoints: tasks desired to run whose status says they serve (running, health passing).
  const endpoints = new Map<string, Endpoint[]>();
  for (const t of input.tasks) {
    if (t.desired !== 'run' || !specByApp.has(t.app) || !isServing(input.status(t.id))) continue;
    const spec = input.specOf(t.app, t.version);
    if (!spec) continue;
    spec.ports.forEach((p, i) => {
      const hostPort = t.hostPorts[i];
      if (!(hostPort > 0)) return;
      const k = endpointKey(t.app, p.name);
      let list = endpoints.get(k);
      if (!list) endpoints.set(k, (list = []));
      list.push({ taskId: t.id, nodeId: t.nodeId, hostPort });
    });
  }
  for (const list of endpoints.values()) list.sort((a, b) => (a.taskId < b.taskId ? -1 : a.taskId > b.taskId ? 1 : 0));
  return { listeners, published, hosts, views, dockerHosts, dns, endpoints, conflicts };
}

/**
 * Round-robin over a service's endpoints: each call returns them all, starting one further than
 * the previous call for the same key, so connections spread evenly and a caller can fall back to
 * the next one when a connection fails. Replicas on this node are not preferred: spreading load
 * matters more than one hop for the small clusters this targets.
 */
export class RoundRobin {
  private readonly next = new Map<string, number>();
  private static readonly MAX_KEYS = 100_000;

  order<T>(key: string, endpoints: readonly T[]): T[] {
    if (endpoints.length === 0) return [];
    const n = this.next.get(key) ?? 0;
    if (this.next.size >= RoundRobin.MAX_KEYS && !this.next.has(key)) this.next.clear();
    this.next.set(key, (n + 1) % endpoints.length);
    const start = n % endpoints.length;
    return [...endpoints.slice(start), ...endpoints.slice(0, start)];
  }
}

/** The hosts file of a network's tasks: localhost lines, then `VIP alias` per service. */
export function hostsFile(network: Map<string, string> | undefined): string {
  const lines = ['127.0.0.1\tlocalhost', '::1\tlocalhost ip6-localhost ip6-loopback'];
  for (const [alias, vip] of [...(network ?? new Map<string, string>()).entries()].sort()) lines.push(`${vip}\t${alias}`);
  return lines.join('\n') + '\n';
}

/**
 * Whether a task on `taskNetworks` may connect to an address that serves `target`: a service's
 * VIP serves its one network, a view's DNS address all the networks of that view. Only a task on
 * each of them may (containers: node/net/mesh.ts asks which task a connection comes from).
 */
export function mayReach(taskNetworks: readonly string[], target: readonly string[]): boolean {
  return target.length > 0 && target.every((n) => taskNetworks.includes(n));
}
