// GET /metrics: this node in the Prometheus text format (prom-client), for a scraper pointed at
// every node (as etcd's and Nomad's /metrics are). Read at scrape time from what the node already
// knows — its Raft state, the replicated state's size and quota, the nodes, apps and tasks as it
// sees them, its own tasks with a CPU and memory sample from their drivers (as omni stats) — plus
// the API's request counts and durations and Node's process metrics. Cluster-wide gauges are the
// same on every node up to replication lag: aggregate them with max(), not sum().
//
// A scrape needs a token: an admin token, or a pull token (the read-only one; it has no other API
// access). Task samples are cached for a few seconds, so scrapes from several Prometheus servers
// do not each wait for the engine.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { TaskStatsSample } from '../apps/task-stats.js';

/** A task sample is reused this long (docker's own sample takes about a second). */
export const TASK_SAMPLE_TTL_MS = 5000;

export interface RaftFigures {
  term: number;
  commitIndex: number;
  appliedIndex: number;
  isLeader: boolean;
  hasLeader: boolean;
  voters: number;
  learners: number;
}

export interface LocalTask {
  id: string;
  app: string;
  state: string;
  health: string;
  restarts: number;
}

export interface MetricsSources {
  node: { id: string; name: string; clusterId(): string };
  raft(): RaftFigures;
  state(): { bytes: number; quotaBytes: number; nodes: { status: string }[]; apps: number; recordsAsText: number };
  /** This node's tasks (desired to run here) with their reported status. */
  localTasks(): LocalTask[];
  /** CPU and memory of this node's running tasks (never rejects). */
  sampleTasks(): Promise<TaskStatsSample[]>;
  /**
   * The registry's blobs on this node, and — on the leader, which re-replicates — the blobs below
   * their copy count and those no live node holds (undefined: no registry here; absent: not the leader).
   */
  registry?(): { blobs: number; bytes: number; underReplicated?: number; lost?: number } | undefined;
  /** Forge builds in the cluster (build apps), each with its phase and outcome (protocol/apps/model.ts jobPhase). */
  builds?(): { phase: string; outcome: string }[];
  now?: () => number;
}

export class NodeMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'method' | 'code'>;
  private readonly durations: Histogram<'method'>;
  private samples: { atMs: number; list: Promise<TaskStatsSample[]> } | undefined;

  constructor(s: MetricsSources) {
    const r = this.registry;
    const now = s.now ?? Date.now;
    collectDefaultMetrics({ register: r });
    const gauge = <L extends string = never>(name: string, help: string, collect: (g: Gauge<L>) => void | Promise<void>, labelNames: L[] = []) =>
      new Gauge<L>({
        name,
        help,
        labelNames,
        registers: [r],
        collect() {
          return collect(this);
        },
      });
    gauge<'node' | 'node_id' | 'cluster'>('omni_node_info', 'This node (always 1), with its name, id and cluster id.', (g) => {
      g.reset();
      g.set({ node: s.node.name, node_id: s.node.id, cluster: s.node.clusterId() }, 1);
    }, ['node', 'node_id', 'cluster']);
    const raft = (name: string, help: string, pick: (f: RaftFigures) => number) => gauge(name, help, (g) => g.set(pick(s.raft())));
    raft('omni_raft_term', 'The Raft term this node is in.', (f) => f.term);
    raft('omni_raft_commit_index', 'The highest Raft log index known committed.', (f) => f.commitIndex);
    raft('omni_raft_applied_index', 'The highest Raft log index applied to this replica.', (f) => f.appliedIndex);
    raft('omni_raft_is_leader', '1 while this node leads.', (f) => (f.isLeader ? 1 : 0));
    raft('omni_raft_has_leader', '1 while this node knows a leader.', (f) => (f.hasLeader ? 1 : 0));
    raft('omni_raft_voters', 'Voters in the Raft configuration.', (f) => f.voters);
    raft('omni_raft_learners', 'Non-voting members in the Raft configuration.', (f) => f.learners);
    gauge('omni_state_bytes', 'Size of the replicated state.', (g) => g.set(s.state().bytes));
    gauge('omni_state_quota_bytes', 'The replicated state quota (writes past it are refused with QUOTA_EXCEEDED).', (g) => g.set(s.state().quotaBytes));
    gauge('omni_apps', 'Apps in the cluster.', (g) => g.set(s.state().apps));
    gauge('omni_state_records_as_text', "The apps' records kept as JSON text rather than protobuf (written by hand through the kv API, or by another omnid version).", (g) => g.set(s.state().recordsAsText));
    gauge<'status'>('omni_cluster_nodes', 'Member nodes by status.', (g) => {
      g.reset();
      const counts = new Map<string, number>([['up', 0], ['down', 0]]);
      for (const n of s.state().nodes) if (n.status !== 'left') counts.set(n.status, (counts.get(n.status) ?? 0) + 1);
      for (const [status, n] of counts) g.set({ status }, n);
    }, ['status']);
    gauge<'app' | 'state' | 'health'>('omni_node_tasks', "This node's tasks by app, state and health.", (g) => {
      g.reset();
      const counts = new Map<string, { app: string; state: string; health: string; n: number }>();
      for (const t of s.localTasks()) {
        const k = `${t.app}\0${t.state}\0${t.health}`;
        const c = counts.get(k) ?? { app: t.app, state: t.state, health: t.health, n: 0 };
        c.n++;
        counts.set(k, c);
      }
      for (const c of counts.values()) g.set({ app: c.app, state: c.state, health: c.health }, c.n);
    }, ['app', 'state', 'health']);
    gauge<'app' | 'task'>('omni_task_restarts', 'Restarts in place of each task on this node.', (g) => {
      g.reset();
      for (const t of s.localTasks()) g.set({ app: t.app, task: t.id }, t.restarts);
    }, ['app', 'task']);
    const sampled = async (): Promise<{ app: string; sample: TaskStatsSample }[]> => {
      const t = now();
      if (!this.samples || t - this.samples.atMs > TASK_SAMPLE_TTL_MS) this.samples = { atMs: t, list: s.sampleTasks() };
      const appOf = new Map(s.localTasks().map((x) => [x.id, x.app]));
      return (await this.samples.list).flatMap((sample) => (appOf.has(sample.task) ? [{ app: appOf.get(sample.task)!, sample }] : []));
    };
    gauge<'app' | 'task'>('omni_task_cpu_percent', 'CPU of each running task on this node, in percent of one core (as docker stats).', async (g) => {
      g.reset();
      for (const { app, sample } of await sampled()) if (sample.cpuPercent !== undefined) g.set({ app, task: sample.task }, sample.cpuPercent);
    }, ['app', 'task']);
    gauge<'app' | 'task'>('omni_task_memory_bytes', 'Memory of each running task on this node (without the page cache).', async (g) => {
      g.reset();
      for (const { app, sample } of await sampled()) if (sample.memoryBytes !== undefined) g.set({ app, task: sample.task }, sample.memoryBytes);
    }, ['app', 'task']);
    if (s.registry) {
      const reg = s.registry;
      gauge('omni_registry_blobs', "Blobs of the cluster's registry held on this node.", (g) => g.set(reg()?.blobs ?? 0));
      gauge('omni_registry_blob_bytes', "Bytes of the cluster's registry held on this node.", (g) => g.set(reg()?.bytes ?? 0));
      const leaderOnly = (name: string, help: string, pick: (r: NonNullable<ReturnType<typeof reg>>) => number | undefined) =>
        gauge<'leader'>(name, help, (g) => {
          g.reset();
          const v = reg();
          const n = v ? pick(v) : undefined;
          if (n !== undefined) g.set({ leader: s.node.name }, n);
        }, ['leader']);
      leaderOnly('omni_registry_blobs_under_replicated', 'Blobs below their copy count on live nodes at the last re-replication round (reported by the leader only).', (r) => r.underReplicated);
      leaderOnly('omni_registry_blobs_lost', 'Blobs no live node holds at the last re-replication round (reported by the leader only).', (r) => r.lost);
    }
    if (s.builds) {
      const builds = s.builds;
      gauge<'phase' | 'outcome'>('omni_builds', 'Forge builds in the cluster by phase (CREATED, RUNNING, STOPPED) and outcome (succeeded, failed, stopped; empty while not stopped).', (g) => {
        g.reset();
        const counts = new Map<string, number>();
        for (const b of builds()) counts.set(`${b.phase}\0${b.outcome}`, (counts.get(`${b.phase}\0${b.outcome}`) ?? 0) + 1);
        for (const [k, n] of counts) {
          const [phase, outcome] = k.split('\0');
          g.set({ phase, outcome }, n);
        }
      }, ['phase', 'outcome']);
    }
    this.requests = new Counter({ name: 'omni_api_requests_total', help: 'API requests answered by this node, by method and status code.', labelNames: ['method', 'code'], registers: [r] });
    this.durations = new Histogram({ name: 'omni_api_request_duration_seconds', help: 'Time to answer an API request (to the end of a streamed one).', labelNames: ['method'], buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers: [r] });
  }

  /** One answered API request (the server's hook). */
  observeRequest(method: string, status: number, durationMs: number): void {
    const m = ['GET', 'PUT', 'POST', 'DELETE', 'HEAD', 'PATCH'].includes(method) ? method : 'OTHER';
    this.requests.inc({ method: m, code: String(status) });
    this.durations.observe({ method: m }, durationMs / 1000);
  }

  /** The exposition text and its content type. */
  async render(): Promise<{ text: string; contentType: string }> {
    return { text: await this.registry.metrics(), contentType: this.registry.contentType };
  }
}
