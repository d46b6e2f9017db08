// The per-node service mesh: after every applied change it recomputes the mesh view (pure,
// protocol/net/mesh.ts) from the replica and keeps
//   - a TCP listener on VIP:port for every service port of every network (VIPs are loopback
//     addresses, protocol/net/vip.ts), and one on every published port;
//   - a hosts file per network (<data>/net/hosts/<network>: alias → VIP) that process tasks see
//     as their /etc/hosts (node/apps/drivers/process.ts bind-mounts it in a private mount namespace);
// and routes each accepted connection to a serving replica, round-robin: to 127.0.0.1:hostPort
// when the replica runs here, else through /omni/tunnel to the node that runs it (node/net/tunnel.ts).
// A UDP port gets a datagram socket instead, each client address a session (node/net/udp-relay.ts).
// It is given the narrow things it uses: the replica, the libp2p host, a membership check, a logger.
import { createServer, type Server, type Socket } from 'node:net';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Logger } from '../logger.js';
import type { StateView } from '../cluster/ports.js';
import type { OmniHost } from '../p2p/host.js';
import { CoalescedLoop } from '../apps/coalesced-loop.js';
import { parseRecord, specKey, type AppRecord } from '../../protocol/apps/model.js';
import type { AppSpec } from '../../protocol/apps/spec.js';
import { buildMesh, endpointKey, hostsFile, mayReach, RoundRobin, viewKey, type MeshView } from '../../protocol/net/mesh.js';
import { ContainerSources, type ListContainerAddresses } from './container-sources.js';
import { networksOf } from '../../protocol/apps/spec.js';
import type { VipRange } from '../../protocol/net/vip.js';
import { Tunnel, connectLocal } from './tunnel.js';
import { DockerVips, dockerVipsAvailable } from './docker-vips.js';
import { pipeSockets } from './pipe.js';
import { UdpListener, localUdpUpstream, type UdpReplies, type UdpUpstream } from './udp-relay.js';
import { DnsServer } from './dns-server.js';
import { nameservers, resolvConf } from '../../protocol/net/dns.js';
import { inRange } from '../../protocol/net/vip.js';

const ROUND_INTERVAL_MS = 1000;

/** The file of a network's (or a view's) hosts and resolv.conf: a view of several is named by a hash (8 names of 63 would not fit a file name). */
function viewFileName(key: string): string {
  return key.includes('+') ? `view-${createHash('sha256').update(key).digest('hex').slice(0, 24)}` : key;
}
const MIN_ROUND_GAP_MS = 200;
/** Replicas tried per connection before it is refused (each failure moves to the next one). */
const MAX_ATTEMPTS = 3;
/** Connections one listener accepts at once. */
const MAX_CONNECTIONS_PER_LISTENER = 4096;
/** A listener that could not bind is retried after this long. */
const RETRY_BIND_MS = 5000;
const MAX_APPS = 100_000;
const MAX_CACHED_SPECS = 10_000;

export interface MeshOptions {
  /** Loopback range the VIPs of this node come from (default DEFAULT_VIP_RANGE). */
  vipRange: VipRange;
  /** Addresses for docker containers' names (an interface of the node's own, root only); null: docker tasks get no names. */
  dockerVipRange: VipRange | null;
  /** Where published ports listen: host (0.0.0.0: every address), and an offset added to each port (several nodes on one host in tests); null: publish nothing. */
  publish: { host: string; portOffset: number } | null;
  /** Tunnels and local proxied connections idle this long are closed. */
  idleMs?: number;
}

export interface MeshDeps {
  readonly id: string;
  readonly log: Logger;
  readonly raft: StateView;
  readonly host: OmniHost;
  readonly dataDir: string;
  /** Throws unless `peer` is a current cluster member. */
  authorize(peer: string): void;
  /**
   * The addresses of this node's running containers, each with its task (the docker driver's);
   * undefined while there is no engine. Absent: containers are not told apart (any container on
   * the host's docker bridges may connect to any docker VIP).
   */
  containerAddresses?: ListContainerAddresses;
}

/** What a task on a network gets (node/apps/agent.ts adds it to the task's config). */
export interface TaskNetwork {
  /** The network's hosts file (bind-mounted over /etc/hosts by the process driver). */
  hostsFile: string;
  /** OMNI_NETWORK and OMNI_HOST_<ALIAS>=<VIP> for the services known when the task starts. */
  env: Record<string, string>;
  /** The network's resolv.conf (its DNS address first): the task's /etc/resolv.conf; absent while that DNS is not up. */
  resolvConf?: string;
}

interface Route {
  app: string;
  portName: string;
  /** The network a service's VIP serves (docker listeners admit only containers of tasks on it). */
  network?: string;
}

interface Listener {
  /** TCP: a server; UDP: a datagram socket (sessions per client address). */
  server: Server | UdpListener;
  route: Route;
  bound: boolean;
  failedAtMs: number;
  what: string;
}

export class Mesh {
  private view: MeshView = { listeners: [], published: [], hosts: new Map(), views: new Map(), dockerHosts: new Map(), dns: new Map(), endpoints: new Map(), conflicts: [] };
  /** The networks' DNS servers on this node, by `address/network` (bound ones only answer). */
  private readonly dnsServers = new Map<string, { server: DnsServer; bound: boolean; failedAtMs: number }>();
  /** The host's resolvers (read once at start) that the DNS servers forward other names to. */
  private upstreams: string[] = [];
  private readonly dockerVips: DockerVips | undefined;
  private readonly containers: ContainerSources | undefined;
  private serial: Promise<void> = Promise.resolve();
  private readonly rr = new RoundRobin();
  private readonly specCache = new Map<string, AppSpec>();
  /** Per app record (frozen, replaced on change): its spec if it uses the mesh, else null. */
  private readonly meshSpecOf = new WeakMap<AppRecord, AppSpec | null>();
  private readonly listeners = new Map<string, Listener>();
  private readonly hostsWritten = new Map<string, string>();
  private readonly tunnel: Tunnel;
  private readonly loop: CoalescedLoop;
  private readonly warned = new Set<string>();
  private dockerReason = 'docker VIPs are off (--docker-vip-range off)';
  private stopped = false;

  constructor(
    private readonly d: MeshDeps,
    private readonly opts: MeshOptions,
  ) {
    this.tunnel = new Tunnel({ host: d.host, log: d.log, authorize: (p) => d.authorize(p), ownsTaskPort: (id, port) => this.ownsTaskPort(id, port), idleMs: opts.idleMs });
    const docker = dockerVipsAvailable();
    if (opts.dockerVipRange && docker.ok) this.dockerVips = new DockerVips(opts.dockerVipRange, d.dataDir, d.log);
    else if (opts.dockerVipRange && !docker.ok) this.dockerReason = docker.reason;
    if (d.containerAddresses) this.containers = new ContainerSources(d.containerAddresses);
    this.loop = new CoalescedLoop(() => this.round(), { intervalMs: ROUND_INTERVAL_MS, minGapMs: MIN_ROUND_GAP_MS, onError: (err) => d.log.warn(`mesh: ${err.message}`) });
  }

  async start(): Promise<void> {
    // The resolvers the networks' DNS servers forward other names to: the host's, not our own addresses.
    const text = await readFile('/etc/resolv.conf', 'utf8').catch(() => '');
    this.upstreams = nameservers(text, (ip) => inRange(ip, this.opts.vipRange) || (this.opts.dockerVipRange !== null && inRange(ip, this.opts.dockerVipRange)));
    await this.tunnel.start();
    this.loop.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.loop.stop();
    await this.serial;
    for (const l of this.listeners.values()) l.server.close();
    this.listeners.clear();
    for (const d of this.dnsServers.values()) d.server.close();
    this.dnsServers.clear();
    await this.tunnel.stop();
    await this.dockerVips?.remove();
  }

  kick(): void {
    this.loop.kick();
  }

  /** The current view (for tests and status). */
  get current(): MeshView {
    return this.view;
  }

  /**
   * Names for a task of an app on a network: its hosts file and env. For a docker task the
   * addresses its names point at are on the node's docker VIP interface and listened on before this returns.
   */
  async forTask(spec: AppSpec): Promise<TaskNetwork | undefined> {
    // a task on several networks sees the names of all of them (its view: protocol/net/mesh.ts)
    const key = viewKey(spec);
    if (key === undefined) return undefined;
    const nets = networksOf(spec).map((n) => n.name);
    const docker = spec.driver === 'docker';
    if (docker && !this.dockerVips) this.warnOnce(`mesh: docker tasks on network ${nets.join(', ')} get no service names here: ${this.dockerReason}`);
    await this.round();
    const hosts = (docker ? this.view.dockerHosts : this.view.hosts).get(key);
    const file = await this.writeHosts(key, docker);
    const resolv = await this.writeResolv(key, docker);
    const env: Record<string, string> = { OMNI_NETWORK: nets[0], ...(nets.length > 1 ? { OMNI_NETWORKS: nets.join(',') } : {}) };
    for (const [alias, vip] of hosts ?? []) if (!alias.includes('.')) env[`OMNI_HOST_${alias.toUpperCase().replace(/-/g, '_')}`] = vip;
    return { hostsFile: file, env, ...(resolv ? { resolvConf: resolv } : {}) };
  }

  /** Tunnel requests: only a task placed here, desired running, and one of its own host ports. */
  private ownsTaskPort(taskId: string, hostPort: number): boolean {
    const t = this.d.raft.state.tables.task(taskId);
    return t !== undefined && t.nodeId === this.d.id && t.desired === 'run' && t.hostPorts.includes(hostPort);
  }

  /**
   * The spec of an app's version. Each stored spec is parsed once: keyed by its key and the Raft
   * index that wrote it (an app removed and created again reuses version numbers).
   */
  private specOf(app: string, version: number): AppSpec | undefined {
    const rec = this.d.raft.state.kvGet(specKey(app, version));
    if (!rec) return undefined;
    const k = `${rec.key}@${rec.modIndex}`;
    let s = this.specCache.get(k);
    if (s === undefined) {
      s = parseRecord<AppSpec>(rec.value);
      if (s) this.specCache.set(k, s);
    }
    return s;
  }

  /**
   * Whether a connection from `remote` may use a docker address that serves `networks` (a
   * service VIP: its network; a view's DNS address: its networks). Sources must be on the host's
   * docker bridges or loopback; a container must be one of this node's tasks on each of those
   * networks (a container of another network, or one Omni did not start, is refused). Loopback
   * sources — processes of the host, process tasks among them — are not told apart.
   */
  private async containerMayReach(remote: string | undefined, networks: readonly string[]): Promise<boolean> {
    if (!this.dockerVips || !(await this.dockerVips.sourceAllowed(remote))) return false;
    const address = (remote ?? '').replace(/^::ffff:/, '');
    if (!this.containers || address.startsWith('127.')) return true;
    const tables = this.d.raft.state.tables;
    let taskId: string | undefined;
    try {
      // a cached task that is not running here now may have left its address to another container
      taskId = await this.containers.taskOf(address, (id) => {
        const t = tables.task(id);
        return t?.nodeId === this.d.id && t.desired === 'run' && tables.status(id)?.state === 'running';
      });
    } catch (err) {
      this.warnOnce(`mesh: cannot tell which container ${address} is (${(err as Error).message}): its connections to service addresses are refused`);
      return false;
    }
    const task = taskId === undefined ? undefined : tables.task(taskId);
    const spec = task ? this.specOf(task.app, task.version) : undefined;
    if (task && spec && mayReach(networksOf(spec).map((n) => n.name), networks)) return true;
    this.warnOnce(
      task
        ? `mesh: refused connections from task ${task.id} (app ${task.app}) to an address of network ${networks.join('+')}: the app is not on it`
        : `mesh: refused connections from ${address} to an address of network ${networks.join('+')}: not a container of a task of this node`,
    );
    return false;
  }

  private compute(): MeshView {
    const state = this.d.raft.state;
    const tables = state.tables;
    if (this.specCache.size > MAX_CACHED_SPECS) this.specCache.clear();
    const specOf = (app: string, version: number) => this.specOf(app, version);
    const apps: { record: AppRecord; spec: AppSpec }[] = [];
    for (const record of tables.apps().slice(0, MAX_APPS)) {
      // Records are frozen and replaced on every change: one lookup per record version, so a
      // round over many apps without networks costs a map lookup each.
      let spec = this.meshSpecOf.get(record);
      if (spec === undefined) {
        const s = specOf(record.name, record.version);
        spec = s && (networksOf(s).length > 0 || s.ports.some((p) => p.publish !== undefined)) ? s : null;
        this.meshSpecOf.set(record, spec);
      }
      if (spec) apps.push({ record, spec });
    }
    const tasks = apps.flatMap((a) => tables.tasksOfApp(a.record.name));
    // The views of the tasks placed here, from the spec each runs (an older version's too), and
    // docker VIPs only for the networks of docker tasks placed here.
    const localViews = new Set<string>();
    const dockerNetworks = new Set<string>();
    for (const t of tasks) {
      if (t.nodeId !== this.d.id || t.desired !== 'run') continue;
      const s = specOf(t.app, t.version);
      const key = s ? viewKey(s) : undefined;
      if (key === undefined) continue;
      localViews.add(key);
      if (!this.dockerVips || s?.driver !== 'docker') continue;
      dockerNetworks.add(key);
      for (const n of key.split('+')) dockerNetworks.add(n);
    }
    return buildMesh({ apps, tasks, status: (id) => tables.status(id), specOf, range: this.opts.vipRange, dockerRange: this.opts.dockerVipRange ?? undefined, dockerNetworks, localViews });
  }

  /** One round at a time (the loop's, and the ones a starting task waits for). */
  private round(): Promise<void> {
    const next = this.serial.then(() => this.roundNow());
    this.serial = next.catch(() => undefined);
    return next;
  }

  private async roundNow(): Promise<void> {
    if (this.stopped) return;
    this.view = this.compute();
    for (const c of this.view.conflicts) this.warnOnce(c);
    for (const net of this.view.hosts.keys()) await this.writeHosts(net, false);
    for (const net of this.view.dockerHosts.keys()) await this.writeHosts(net, true);
    if (this.dockerVips) {
      try {
        const dnsVips = [...this.view.dns.values()].flatMap((d) => (d.dockerVip ? [d.dockerVip] : []));
        await this.dockerVips.sync(new Set([...this.view.listeners.filter((l) => l.kind === 'docker').map((l) => l.vip), ...dnsVips]));
      } catch (err) {
        this.warnOnce(`mesh: ${(err as Error).message}`);
      }
    }
    await this.syncDns();
    const want = new Map<string, { host: string; port: number; route: Route; what: string; docker: boolean; udp: boolean }>();
    const proto = (udp?: true) => (udp ? 'udp' : 'tcp');
    for (const l of this.view.listeners) want.set(`${l.vip}:${l.port}/${proto(l.udp)}`, { host: l.vip, port: l.port, route: { app: l.app, portName: l.portName, network: l.network }, what: `${l.alias}:${l.port}${l.udp ? '/udp' : ''} (network ${l.network}${l.kind === 'docker' ? ', containers' : ''})`, docker: l.kind === 'docker', udp: l.udp === true });
    if (this.opts.publish) {
      for (const p of this.view.published) {
        const port = p.port + this.opts.publish.portOffset;
        if (port > 65535) continue;
        want.set(`${this.opts.publish.host}:${port}/${proto(p.udp)}`, { host: this.opts.publish.host, port, route: { app: p.app, portName: p.portName }, what: `published port ${p.port}${p.udp ? '/udp' : ''} of ${p.app}`, docker: false, udp: p.udp === true });
      }
    }
    for (const [key, l] of this.listeners) {
      const w = want.get(key);
      if (!w) {
        l.server.close();
        this.listeners.delete(key);
      } else if (!l.bound && l.failedAtMs > 0 && Date.now() - l.failedAtMs > RETRY_BIND_MS) {
        l.server.close();
        this.listeners.delete(key);
      } else {
        l.route = w.route;
      }
    }
    const binding: Promise<void>[] = [];
    for (const [key, w] of want) if (!this.listeners.has(key)) binding.push(w.udp ? this.listenUdp(key, w.host, w.port, w.route, w.what, w.docker) : this.listen(key, w.host, w.port, w.route, w.what, w.docker));
    await Promise.all(binding);
  }

  /** Resolves once the listener is bound or failed (a failed one is retried in a later round). */
  private listen(key: string, host: string, port: number, route: Route, what: string, docker: boolean): Promise<void> {
    const l: Listener = { server: undefined as unknown as Server, route, bound: false, failedAtMs: 0, what };
    let settle!: () => void;
    const settled = new Promise<void>((r) => (settle = r));
    l.server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (sock) => {
      if (!docker) return void this.accept(sock, l.route);
      // Docker VIPs: only containers of tasks on the service's network (and local processes).
      void this.containerMayReach(sock.remoteAddress, l.route.network ? [l.route.network] : []).then((ok) => {
        if (ok) void this.accept(sock, l.route);
        else sock.resetAndDestroy();
      });
    });
    l.server.maxConnections = MAX_CONNECTIONS_PER_LISTENER;
    l.server.on('error', (err: NodeJS.ErrnoException) => {
      l.failedAtMs = Date.now();
      settle();
      this.warnOnce(`mesh: cannot listen on ${host}:${port} for ${what}: ${err.code ?? err.message} (retrying every ${RETRY_BIND_MS / 1000} s)`);
    });
    l.server.listen({ host, port, exclusive: true }, () => {
      l.bound = true;
      settle();
      this.d.log.debug(`mesh: listening on ${host}:${port} for ${what}`);
    });
    this.listeners.set(key, l);
    return settled;
  }

  /** One DNS server per network and kind (loopback for process tasks, docker for containers), as the view says. */
  private async syncDns(): Promise<void> {
    const want = new Map<string, { host: string; network: string; docker: boolean }>();
    for (const [network, d] of this.view.dns) {
      want.set(`${d.vip}/${network}`, { host: d.vip, network, docker: false });
      if (d.dockerVip && this.dockerVips) want.set(`${d.dockerVip}/${network}`, { host: d.dockerVip, network, docker: true });
    }
    for (const [key, d] of this.dnsServers) {
      if (want.has(key) && (d.bound || Date.now() - d.failedAtMs < RETRY_BIND_MS)) continue;
      d.server.close();
      this.dnsServers.delete(key);
    }
    await Promise.all(
      [...want].filter(([key]) => !this.dnsServers.has(key)).map(async ([key, w]) => {
        const server = new DnsServer({
          host: w.host,
          network: w.network,
          view: () => (this.view.views.get(w.network) ?? [w.network]).map((network) => ({ network, names: (w.docker ? this.view.dockerHosts : this.view.hosts).get(network) ?? new Map<string, string>() })),
          upstreams: this.upstreams,
          ...(w.docker ? { allow: (address: string) => this.containerMayReach(address, this.view.views.get(w.network) ?? [w.network]) } : {}),
        });
        const entry = { server, bound: false, failedAtMs: 0 };
        this.dnsServers.set(key, entry);
        try {
          await server.bind();
          entry.bound = true;
        } catch (err) {
          entry.failedAtMs = Date.now();
          this.warnOnce(`mesh: no DNS for network ${w.network} at ${w.host}:53 (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; port 53 needs root): its tasks find names in /etc/hosts only`);
        }
      }),
    );
  }

  /** The resolv.conf of a network's tasks, or of a view of several (undefined while its DNS server is not up here). */
  private async writeResolv(network: string, docker: boolean): Promise<string | undefined> {
    const d = this.view.dns.get(network);
    const vip = docker ? d?.dockerVip : d?.vip;
    if (!vip || !this.dnsServers.get(`${vip}/${network}`)?.bound) return undefined;
    const dir = join(this.d.dataDir, 'net', docker ? 'resolv-docker' : 'resolv');
    const file = join(dir, viewFileName(network));
    const text = resolvConf(this.view.views.get(network) ?? network, vip, this.upstreams);
    if (this.hostsWritten.get(file) !== text) {
      await mkdir(dir, { recursive: true });
      await writeFile(file, text, { mode: 0o644 });
      this.hostsWritten.set(file, text);
    }
    return file;
  }

  /** A UDP port: resolves once bound or failed (retried in a later round, as a TCP one). */
  private async listenUdp(key: string, host: string, port: number, route: Route, what: string, docker: boolean): Promise<void> {
    const l: Listener = { server: undefined as unknown as UdpListener, route, bound: false, failedAtMs: 0, what };
    const u = new UdpListener({
      host,
      port,
      open: (_client, r) => this.openUdp(l.route, r),
      ...(docker ? { allow: (address: string) => this.containerMayReach(address, l.route.network ? [l.route.network] : []) } : {}),
      ...(this.opts.idleMs !== undefined ? { idleMs: Math.min(this.opts.idleMs, 60_000) } : {}),
      onError: (err) => this.d.log.debug(`mesh: ${what}: ${err.message}`),
    });
    l.server = u;
    this.listeners.set(key, l);
    try {
      await u.bind();
      l.bound = true;
      this.d.log.debug(`mesh: listening on ${host}:${port}/udp for ${what}`);
    } catch (err) {
      l.failedAtMs = Date.now();
      this.warnOnce(`mesh: cannot listen on ${host}:${port}/udp for ${what}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (retrying every ${RETRY_BIND_MS / 1000} s)`);
    }
  }

  /** A new UDP session's upstream: the replicas in round-robin order, at most MAX_ATTEMPTS tried. */
  private async openUdp(route: Route, r: UdpReplies): Promise<UdpUpstream> {
    const key = endpointKey(route.app, route.portName);
    const order = this.rr.order(key, this.view.endpoints.get(key) ?? []).slice(0, MAX_ATTEMPTS);
    let last: Error = new Error(`no serving replica of ${key}`);
    for (const ep of order) {
      try {
        return ep.nodeId === this.d.id ? await localUdpUpstream(ep.hostPort, r) : await this.tunnel.openUdp(ep.nodeId, { taskId: ep.taskId, hostPort: ep.hostPort }, r);
      } catch (err) {
        last = err as Error;
        this.d.log.debug(`mesh: ${key} (udp) via task ${ep.taskId}: ${last.message}`);
      }
    }
    throw last;
  }

  private async accept(sock: Socket, route: Route): Promise<void> {
    sock.on('error', () => sock.destroy());
    const key = endpointKey(route.app, route.portName);
    const order = this.rr.order(key, this.view.endpoints.get(key) ?? []).slice(0, MAX_ATTEMPTS);
    for (const ep of order) {
      if (sock.destroyed) return;
      try {
        if (ep.nodeId === this.d.id) {
          const up = await connectLocal(ep.hostPort);
          if (sock.destroyed) return void up.destroy();
          await pipeSockets(sock, up, this.opts.idleMs);
        } else {
          const { piped } = await this.tunnel.open(ep.nodeId, { taskId: ep.taskId, hostPort: ep.hostPort }, sock);
          await piped;
        }
        return;
      } catch (err) {
        this.d.log.debug(`mesh: ${key} via task ${ep.taskId}: ${(err as Error).message}`);
      }
    }
    // No serving replica answered: refuse (a reset, as when nothing listens).
    sock.resetAndDestroy();
  }

  private async writeHosts(network: string, docker: boolean): Promise<string> {
    const dir = join(this.d.dataDir, 'net', docker ? 'hosts-docker' : 'hosts');
    const file = join(dir, viewFileName(network));
    const text = hostsFile((docker ? this.view.dockerHosts : this.view.hosts).get(network));
    if (this.hostsWritten.get(file) !== text) {
      await mkdir(dir, { recursive: true });
      // In place (same inode): a bind mount of the file keeps showing its current content.
      await writeFile(file, text, { mode: 0o644 });
      this.hostsWritten.set(file, text);
    }
    return file;
  }

  private warnOnce(msg: string): void {
    if (this.warned.has(msg)) return;
    if (this.warned.size > 1000) this.warned.clear();
    this.warned.add(msg);
    this.d.log.warn(msg);
  }
}
