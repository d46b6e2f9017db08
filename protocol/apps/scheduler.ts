// Nomad-style placement as a pure function over a snapshot: feasibility (node up, constraints,
// resources left, GPUs, host ports, anti-affinity, volume pin), then ranking (bin-pack or
// spread, spreading over a label when asked), with deterministic tie-breaks. SchedulerState
// keeps per-node accounting incrementally, so successive asks in one round see each other's
// placements and a node is never over-committed.
//
// Speed: like Nomad's LimitIterator, each placement ranks only the first K feasible nodes in a
// deterministic per-app rotation (K = max(3, ceil(log2 N)); the rotation advances after each
// placement so replicas fan out). If fewer than K are feasible it keeps scanning to the end,
// so a placement that fits anywhere is always found. That trades perfectly tight packing for
// O(K) work per placement on large clusters.
import type { AppSpec, Constraint } from './spec.js';
import type { NodeRecord } from '../cluster/state.js';
import { nodeHost } from '../cluster/node-host.js';

export interface SchedNode {
  id: string; name: string; status: 'up' | 'down' | 'left'; arch: string; labels: Record<string, string>; cpu: number; memoryBytes: number; gpus: number;
  /** Free disk of the node's data dir as its Director reported it (absent: not known, no disk is reserved there). */
  diskBytes?: number;
  /** Nodes on the same host (same address) share one port space; default: the node's own. */
  host?: string;
  /** false: no new tasks are placed here (ineligible or draining; `omni nodes drain`). Default true. */
  eligible?: boolean;
  /** The node is being drained: its tasks move to other nodes (reconcile). */
  draining?: boolean;
  /** The task drivers the node can run (its Director's fingerprint); absent: not known, any driver may go there. */
  drivers?: readonly string[];
}
/**
 * A task that holds resources. portsOnly: a stopped task not yet known to have exited (e.g. on
 * a node that is down: its process may still run there) — it keeps its host ports, nothing else.
 */
export interface SchedTask { id: string; app: string; version: number; nodeId: string; cpu: number; memoryBytes: number; gpus: number; hostPorts: number[]; portsOnly?: boolean; /** The disk its spec reserves (resources.diskMB). */ diskBytes?: number }
/**
 * avoidNodeIds: nodes where this app's tasks failed recently — used only when no other node fits.
 * preferNodeIds: a soft preference (a score bonus, never a filter), e.g. the nodes that already
 * hold a build's cached dependency layer: a preferred node that fits wins over an equal other, and
 * is looked at even when the rotation would not reach it; a node that fits always wins over none.
 */
export interface PlacementAsk { app: string; version: number; count: number; spec: AppSpec; pinnedNodeId?: string; avoidNodeIds?: ReadonlySet<string>; preferNodeIds?: ReadonlySet<string> }
export interface Placement { nodeId: string; hostPorts: number[] }
export interface PlacementPlan { placements: Placement[]; unplaced: number; reason: string }

export const DYNAMIC_PORT_MIN = 20000;
/** Score bonus of a preferred node: more than any utilisation difference (≤ 1), less than a recent failure (100) or a spread label (10). */
export const PREFER_BONUS = 2;
export const DYNAMIC_PORT_MAX = 32000;
const MIB = 1024 * 1024;

interface NodeAcc {
  node: SchedNode;
  cpuUsed: number;
  memUsed: number;
  gpusUsed: number;
  diskUsed: number;
  /** Host ports in use on this node's host (shared by nodes on one machine). */
  ports: Set<number>;
  /** Tasks per "app@version" (anti-affinity) and per app (spread). */
  perVersion: Map<string, number>;
}

type Why = 'down' | 'ineligible' | 'driver' | 'cpu' | 'memory' | 'gpus' | 'disk' | 'port' | 'anti-affinity' | 'pinned' | `constraint ${string}`;

export class SchedulerState {
  private readonly nodes: NodeAcc[];
  private readonly byId = new Map<string, NodeAcc>();

  constructor(nodes: SchedNode[], tasks: SchedTask[]) {
    const portsByHost = new Map<string, Set<number>>();
    const portsOf = (n: SchedNode) => {
      const host = n.host ?? `node:${n.id}`;
      if (!portsByHost.has(host)) portsByHost.set(host, new Set());
      return portsByHost.get(host)!;
    };
    this.nodes = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).map((node) => ({ node, cpuUsed: 0, memUsed: 0, gpusUsed: 0, diskUsed: 0, ports: portsOf(node), perVersion: new Map() }));
    for (const n of this.nodes) this.byId.set(n.node.id, n);
    for (const t of tasks) {
      const n = this.byId.get(t.nodeId);
      if (!n) continue;
      for (const p of t.hostPorts) n.ports.add(p);
      if (t.portsOnly) continue;
      n.cpuUsed += t.cpu;
      n.memUsed += t.memoryBytes;
      n.gpusUsed += t.gpus;
      n.diskUsed += t.diskBytes ?? 0;
      const k = `${t.app}@${t.version}`;
      n.perVersion.set(k, (n.perVersion.get(k) ?? 0) + 1);
    }
  }

  place(ask: PlacementAsk): PlacementPlan {
    const placements: Placement[] = [];
    const N = this.nodes.length;
    const K = Math.max(3, Math.ceil(Math.log2(Math.max(2, N))));
    let cursor = N === 0 ? 0 : hash(`${ask.app}@${ask.version}`) % N;
    let lastWhy = new Map<Why, number>();
    for (let i = 0; i < ask.count; i++) {
      const why = new Map<Why, number>();
      let best: { acc: NodeAcc; score: number; idx: number } | undefined;
      let feasible = 0;
      for (let step = 0; step < N && feasible < K; step++) {
        const idx = (cursor + step) % N;
        const acc = this.nodes[idx];
        const fail = this.infeasible(acc, ask);
        if (fail) {
          why.set(fail, (why.get(fail) ?? 0) + 1);
          continue;
        }
        // Nodes to avoid do not count toward K: the scan goes on to find K others.
        if (!ask.avoidNodeIds?.has(acc.node.id)) feasible++;
        const score = this.score(acc, ask);
        if (!best || score > best.score + 1e-12 || (Math.abs(score - best.score) <= 1e-12 && acc.node.id < best.acc.node.id)) best = { acc, score, idx };
      }
      // Preferred nodes the rotation did not reach are ranked too (they are few: a soft preference must not depend on where the rotation starts).
      if (ask.preferNodeIds && ask.preferNodeIds.size > 0) {
        for (const id of [...ask.preferNodeIds].sort()) {
          const acc = this.byId.get(id);
          if (!acc || acc === best?.acc || this.infeasible(acc, ask)) continue;
          const score = this.score(acc, ask);
          if (!best || score > best.score + 1e-12 || (Math.abs(score - best.score) <= 1e-12 && acc.node.id < best.acc.node.id)) best = { acc, score, idx: this.nodes.indexOf(acc) };
        }
      }
      if (!best) {
        lastWhy = why;
        return { placements, unplaced: ask.count - placements.length, reason: this.explain(ask, lastWhy) };
      }
      placements.push({ nodeId: best.acc.node.id, hostPorts: this.commit(best.acc, ask) });
      cursor = (best.idx + 1) % N;
    }
    return { placements, unplaced: 0, reason: '' };
  }

  private infeasible(acc: NodeAcc, ask: PlacementAsk): Why | undefined {
    const { node } = acc;
    const res = ask.spec.resources;
    if (node.status !== 'up') return 'down';
    if (node.eligible === false) return 'ineligible';
    if (ask.pinnedNodeId && node.id !== ask.pinnedNodeId) return 'pinned';
    if (node.drivers && !node.drivers.includes(ask.spec.driver)) return 'driver';
    for (const c of ask.spec.constraints) if (!matches(c, node)) return `constraint ${show(c)}`;
    if (res.gpus > node.gpus - acc.gpusUsed) return 'gpus';
    if (res.cpu > node.cpu - acc.cpuUsed + 1e-9) return 'cpu';
    if (res.memoryMB * MIB > node.memoryBytes - acc.memUsed) return 'memory';
    // A node whose free disk is not known (0: statfs failed) has no disk to reserve from.
    if (res.diskMB && node.diskBytes !== undefined && res.diskMB * MIB > node.diskBytes - acc.diskUsed) return 'disk';
    if (ask.spec.antiAffinity && (acc.perVersion.get(`${ask.app}@${ask.version}`) ?? 0) > 0) return 'anti-affinity';
    for (const p of ask.spec.ports) if (p.hostPort > 0 && acc.ports.has(p.hostPort)) return 'port';
    return undefined;
  }

  /** Higher is better. Bin-pack: fullest after placement; spread: emptiest; spreadBy: fewest replicas in this label value. */
  private score(acc: NodeAcc, ask: PlacementAsk): number {
    const res = ask.spec.resources;
    const cpuFrac = acc.node.cpu > 0 ? (acc.cpuUsed + res.cpu) / acc.node.cpu : 1;
    const memFrac = acc.node.memoryBytes > 0 ? (acc.memUsed + res.memoryMB * MIB) / acc.node.memoryBytes : 1;
    const util = (cpuFrac + memFrac) / 2;
    let score = ask.spec.placement === 'spread' ? 1 - util : util;
    // Nomad's reschedule penalty: a replacement goes elsewhere than where the app just failed.
    if (ask.avoidNodeIds?.has(acc.node.id)) score -= 100;
    // A soft preference (a warm build cache here): a bonus, never a filter.
    if (ask.preferNodeIds?.has(acc.node.id)) score += PREFER_BONUS;
    // Replicas of the same app on one node count against it (soft spread even without anti-affinity).
    score -= 0.1 * (acc.perVersion.get(`${ask.app}@${ask.version}`) ?? 0);
    if (ask.spec.spreadBy) {
      const value = acc.node.labels[ask.spec.spreadBy] ?? '';
      let inValue = 0;
      for (const other of this.nodes) if ((other.node.labels[ask.spec.spreadBy] ?? '') === value) inValue += other.perVersion.get(`${ask.app}@${ask.version}`) ?? 0;
      score -= 10 * inValue;
    }
    return score;
  }

  private commit(acc: NodeAcc, ask: PlacementAsk): number[] {
    const res = ask.spec.resources;
    acc.cpuUsed += res.cpu;
    acc.memUsed += res.memoryMB * MIB;
    acc.gpusUsed += res.gpus;
    acc.diskUsed += (res.diskMB ?? 0) * MIB;
    const k = `${ask.app}@${ask.version}`;
    acc.perVersion.set(k, (acc.perVersion.get(k) ?? 0) + 1);
    const ports: number[] = [];
    for (const p of ask.spec.ports) {
      let port = p.hostPort;
      if (port === 0) {
        port = DYNAMIC_PORT_MIN;
        while (acc.ports.has(port) && port <= DYNAMIC_PORT_MAX) port++;
      }
      acc.ports.add(port);
      ports.push(port);
    }
    return ports;
  }

  private explain(ask: PlacementAsk, why: Map<Why, number>): string {
    const res = ask.spec.resources;
    if (res.gpus > 0 && !this.nodes.some((n) => n.node.status === 'up' && n.node.gpus >= res.gpus)) return `no node with ${res.gpus} GPU${res.gpus === 1 ? '' : 's'}`;
    if (this.nodes.length === 0) return 'the cluster has no nodes';
    const parts: string[] = [];
    const label: Record<string, string> = {
      down: 'are down',
      ineligible: 'are not eligible (drained)',
      driver: `cannot run the ${ask.spec.driver} driver${ask.spec.driver === 'docker' ? ' (no Docker engine answers there)' : ''}`,
      cpu: `lack CPU (need ${res.cpu} cores)`,
      memory: `lack memory (need ${res.memoryMB} MiB)`,
      gpus: `lack GPUs (need ${res.gpus})`,
      disk: `lack disk (need ${res.diskMB ?? 0} MiB of free disk in the data dir for the workspace)`,
      port: 'have the host port in use',
      'anti-affinity': 'already run a replica (anti-affinity)',
      pinned: 'do not hold its volume',
    };
    for (const [k, n] of [...why].sort((a, b) => b[1] - a[1])) parts.push(`${n} ${k.startsWith('constraint') ? `fail ${k}` : label[k]}`);
    return `0 of ${this.nodes.length} nodes fit: ${parts.join(', ')}`;
  }
}

/** A node record as the scheduler sees it. */
export function schedNodeOf(n: NodeRecord): SchedNode {
  return { id: n.id, name: n.name, status: n.status, arch: n.resources.arch, labels: n.labels, cpu: n.resources.cpuCores, memoryBytes: n.resources.memoryBytes, gpus: n.resources.gpus.length, diskBytes: n.resources.diskBytes, host: nodeHost(n.addrs), eligible: n.eligibility === undefined, draining: n.eligibility === 'draining', ...(n.resources.drivers ? { drivers: n.resources.drivers } : {}) };
}

/** The replicas an app wants: its spec's, or for a global app its nodes now (globalReplicas). */
export function wantedReplicas(spec: Pick<AppSpec, 'mode' | 'replicas' | 'driver' | 'constraints'>, nodes: () => readonly SchedNode[]): number {
  return spec.mode === 'global' ? globalReplicas(nodes(), spec) : spec.replicas;
}

/**
 * A global app's replicas: its nodes — up, eligible, not draining, with its driver and matching
 * its constraints (resources are not counted: a node without room shows a pending task, as Swarm does).
 */
export function globalReplicas(nodes: readonly SchedNode[], spec: Pick<AppSpec, 'driver' | 'constraints'>): number {
  return globalNodeIds(nodes, spec).length;
}

/** The nodes a global app runs on now (globalReplicas). */
export function globalNodeIds(nodes: readonly SchedNode[], spec: Pick<AppSpec, 'driver' | 'constraints'>): string[] {
  return nodes.filter((n) => n.status === 'up' && n.eligible !== false && !n.draining && (!n.drivers || n.drivers.includes(spec.driver)) && spec.constraints.every((c) => matches(c, n))).map((n) => n.id);
}

export function schedule(nodes: SchedNode[], tasks: SchedTask[], ask: PlacementAsk): PlacementPlan {
  return new SchedulerState(nodes, tasks).place(ask);
}

function matches(c: Constraint, node: SchedNode): boolean {
  // driver.NAME: the node can run that driver (a node that reports none is taken to have it).
  if (c.attribute.startsWith('driver.')) {
    const has = !node.drivers || node.drivers.includes(c.attribute.slice('driver.'.length));
    return c.op === '!=' ? !has : has;
  }
  const actual = c.attribute === 'arch' ? node.arch : c.attribute === 'node.name' ? node.name : node.labels[c.attribute.slice('label.'.length)];
  if (c.op === 'exists') return actual !== undefined;
  return c.op === '==' ? actual === c.value : actual !== c.value;
}

function show(c: Constraint): string {
  return c.op === 'exists' ? c.attribute : `${c.attribute}${c.op}${c.value}`;
}

/** FNV-1a: a stable per-app starting point for the rotation. */
function hash(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
