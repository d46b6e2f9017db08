// A 3-member etcd cluster on 127.0.0.1 for bench:cluster and bench:state, driven through etcd's
// v3 JSON gateway. Same Raft timing as omnid's defaults (heartbeat 100 ms, election 1000 ms).
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Http, freePorts, sleep } from './load.js';

export function etcdAvailable(): boolean {
  try {
    execFileSync('etcd', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

interface Member {
  name: string;
  clientUrl: string;
  peerUrl: string;
  proc?: ChildProcess;
  /** --initial-cluster for a member added later (from `etcdctl member add`). */
  initialCluster?: string;
}

export interface EtcdOptions {
  /** Extra etcd flags for every member (e.g. --quota-backend-bytes). */
  flags?: string[];
}

/** What /v3/maintenance/status reports (numbers arrive as strings). */
export interface EtcdStatus {
  revision: number;
  raftIndex: number;
  raftAppliedIndex: number;
  dbSize: number;
  dbSizeInUse: number;
  isLeader: boolean;
  raftTerm: number;
}

export class EtcdCluster {
  readonly http = new Http();
  private constructor(
    readonly dir: string,
    readonly members: Member[],
    private readonly opts: EtcdOptions = {},
  ) {}

  static async start(opts: EtcdOptions = {}): Promise<EtcdCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'omni-bench-etcd-'));
    const ports = await freePorts(6);
    const members = [0, 1, 2].map((i) => ({ name: `e${i + 1}`, clientUrl: `http://127.0.0.1:${ports[i]}`, peerUrl: `http://127.0.0.1:${ports[i + 3]}` }));
    const c = new EtcdCluster(dir, members, opts);
    for (const m of members) c.spawn(m, 'new');
    return c;
  }

  private spawn(m: Member, state: 'new' | 'existing'): void {
    const initialCluster = m.initialCluster ?? this.members.filter((x) => !x.initialCluster).map((x) => `${x.name}=${x.peerUrl}`).join(',');
    m.proc = spawn('etcd', [
      '--name', m.name, '--data-dir', join(this.dir, m.name),
      '--listen-client-urls', m.clientUrl, '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-state', state, '--initial-cluster-token', 'omni-bench',
      '--heartbeat-interval', '100', '--election-timeout', '1000', '--log-level', 'error',
      ...(this.opts.flags ?? []),
    ], { stdio: 'ignore' });
  }

  pid(name: string): number | undefined {
    const m = this.members.find((x) => x.name === name);
    return m?.proc && m.proc.exitCode === null && m.proc.signalCode === null ? m.proc.pid : undefined;
  }

  endpointOf(name: string): string {
    return this.members.find((x) => x.name === name)!.clientUrl;
  }

  async status(endpoint: string, timeoutMs = 2000): Promise<EtcdStatus> {
    const r = await this.http.call(`${endpoint}/v3/maintenance/status`, 'POST', {}, {}, timeoutMs);
    if (r.status !== 200) throw new Error(`etcd status: HTTP ${r.status} ${r.body.slice(0, 200)}`);
    const s = JSON.parse(r.body) as { header?: { revision?: string; member_id?: string }; leader?: string; raftIndex?: string; raftAppliedIndex?: string; dbSize?: string; dbSizeInUse?: string; raftTerm?: string };
    return {
      revision: Number(s.header?.revision ?? 0),
      raftIndex: Number(s.raftIndex ?? 0),
      raftAppliedIndex: Number(s.raftAppliedIndex ?? 0),
      dbSize: Number(s.dbSize ?? 0),
      dbSizeInUse: Number(s.dbSizeInUse ?? 0),
      isLeader: s.leader !== undefined && s.leader === s.header?.member_id,
      raftTerm: Number(s.raftTerm ?? 0),
    };
  }

  /**
   * `etcdctl member add` (as a learner when asked: what omnid join makes) through a running
   * member, then starts the new member with a fresh data dir. Resolves once it is spawned.
   */
  async addMember(name: string, learner: boolean): Promise<void> {
    const [clientPort, peerPort] = await freePorts(2);
    const m: Member = { name, clientUrl: `http://127.0.0.1:${clientPort}`, peerUrl: `http://127.0.0.1:${peerPort}` };
    const out = await new Promise<string>((resolve, reject) => {
      const p = spawn('etcdctl', ['--endpoints', this.endpoints().join(','), 'member', 'add', name, '--peer-urls', m.peerUrl, ...(learner ? ['--learner'] : [])], { env: { ...process.env, ETCDCTL_API: '3' } });
      let text = '';
      p.stdout.on('data', (c: Buffer) => (text += c.toString()));
      p.stderr.on('data', (c: Buffer) => (text += c.toString()));
      p.once('error', reject);
      p.once('exit', (code) => (code === 0 ? resolve(text) : reject(new Error(`etcdctl member add exited ${code}: ${text.slice(0, 500)}`))));
    });
    const ic = /ETCD_INITIAL_CLUSTER="([^"]+)"/.exec(out);
    if (!ic) throw new Error(`etcdctl member add: no ETCD_INITIAL_CLUSTER in ${out.slice(0, 500)}`);
    m.initialCluster = ic[1];
    this.members.push(m);
    this.spawn(m, 'existing');
  }

  /** SIGTERM and wait for the exit. */
  stopMember(name: string): Promise<void> {
    const m = this.members.find((x) => x.name === name)!;
    if (!m.proc || m.proc.exitCode !== null || m.proc.signalCode !== null) return Promise.resolve();
    const exited = new Promise<void>((r) => m.proc!.once('exit', () => r()));
    m.proc.kill('SIGTERM');
    return exited;
  }

  endpoints(): string[] {
    return this.members.filter((m) => m.proc && m.proc.exitCode === null && m.proc.signalCode === null).map((m) => m.clientUrl);
  }

  async put(endpoint: string, key: string, value: string, timeoutMs = 5000): Promise<void> {
    const r = await this.http.call(`${endpoint}/v3/kv/put`, 'POST', { key: b64(key), value: b64(value) }, {}, timeoutMs);
    if (r.status !== 200) throw new Error(`etcd put: HTTP ${r.status} ${r.body.slice(0, 200)}`);
  }

  /** A linearizable range read of one key (etcd's default); throws unless it answers 200. */
  async get(endpoint: string, key: string, timeoutMs = 5000): Promise<void> {
    const r = await this.http.call(`${endpoint}/v3/kv/range`, 'POST', { key: b64(key) }, {}, timeoutMs);
    if (r.status !== 200) throw new Error(`etcd range: HTTP ${r.status} ${r.body.slice(0, 200)}`);
  }

  /** The name of the current leader, or undefined. */
  async leader(): Promise<string | undefined> {
    for (const m of this.members) {
      if (!this.endpoints().includes(m.clientUrl)) continue;
      try {
        const r = await this.http.call(`${m.clientUrl}/v3/maintenance/status`, 'POST', {}, {}, 1000);
        const s = JSON.parse(r.body) as { leader?: string; header?: { member_id?: string } };
        if (s.leader && s.leader === s.header?.member_id) return m.name;
      } catch {
        // try the next member
      }
    }
    return undefined;
  }

  kill(name: string): Promise<void> {
    const m = this.members.find((x) => x.name === name)!;
    const exited = new Promise<void>((r) => m.proc!.once('exit', () => r()));
    m.proc!.kill('SIGKILL');
    return exited;
  }

  restart(name: string): void {
    this.spawn(this.members.find((x) => x.name === name)!, 'existing');
  }

  /** Waits until every member answers and a put succeeds. */
  async waitHealthy(timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        for (const ep of this.endpoints()) await this.put(ep, 'health', 'x', 1000);
        if (this.endpoints().length >= 3 && (await this.leader())) return;
      } catch {
        // not yet
      }
      await sleep(50);
    }
    throw new Error('etcd cluster did not become healthy');
  }

  async stop(): Promise<void> {
    await Promise.all(
      this.members.map(
        (m) =>
          new Promise<void>((resolve) => {
            if (!m.proc || m.proc.exitCode !== null || m.proc.signalCode !== null) return resolve();
            m.proc.once('exit', () => resolve());
            m.proc.kill('SIGTERM');
          }),
      ),
    );
    this.http.close();
    await rm(this.dir, { recursive: true, force: true });
  }
}

function b64(s: string): string {
  return Buffer.from(s).toString('base64');
}
