// A 3-member etcd cluster on 127.0.0.1 for bench:cluster, driven through etcd's v3 JSON
// gateway. Same Raft timing as omnid's defaults (heartbeat 100 ms, election 1000 ms).
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
}

export class EtcdCluster {
  readonly http = new Http();
  private constructor(
    readonly dir: string,
    readonly members: Member[],
  ) {}

  static async start(): Promise<EtcdCluster> {
    const dir = await mkdtemp(join(tmpdir(), 'omni-bench-etcd-'));
    const ports = await freePorts(6);
    const members = [0, 1, 2].map((i) => ({ name: `e${i + 1}`, clientUrl: `http://127.0.0.1:${ports[i]}`, peerUrl: `http://127.0.0.1:${ports[i + 3]}` }));
    const c = new EtcdCluster(dir, members);
    for (const m of members) c.spawn(m, 'new');
    return c;
  }

  private spawn(m: Member, state: 'new' | 'existing'): void {
    const initialCluster = this.members.map((x) => `${x.name}=${x.peerUrl}`).join(',');
    m.proc = spawn('etcd', [
      '--name', m.name, '--data-dir', join(this.dir, m.name),
      '--listen-client-urls', m.clientUrl, '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl, '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', initialCluster, '--initial-cluster-state', state, '--initial-cluster-token', 'omni-bench',
      '--heartbeat-interval', '100', '--election-timeout', '1000', '--log-level', 'error',
    ], { stdio: 'ignore' });
  }

  endpoints(): string[] {
    return this.members.filter((m) => m.proc && m.proc.exitCode === null && m.proc.signalCode === null).map((m) => m.clientUrl);
  }

  async put(endpoint: string, key: string, value: string, timeoutMs = 5000): Promise<void> {
    const r = await this.http.call(`${endpoint}/v3/kv/put`, 'POST', { key: b64(key), value: b64(value) }, {}, timeoutMs);
    if (r.status !== 200) throw new Error(`etcd put: HTTP ${r.status} ${r.body.slice(0, 200)}`);
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
        if (this.endpoints().length === 3 && (await this.leader())) return;
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
