// A small network for benchmarks, made of Linux network namespaces (needs root and iproute2):
// one hub namespace holding a bridge, one namespace per host with a veth into that bridge on a
// private 10.x.y.0/24 this run picks (checked against the root namespace's routes), and a `tc`
// token-bucket cap on every host's link, each way (egress on the host's side of the veth,
// ingress as egress on the hub's side). The root namespace gets one uncapped veth into the bridge
// too (10.x.y.254), so the benchmark process can reach the hosts' APIs; all bulk traffic runs
// between hosts, through the caps.
//
// Names carry this process's pid (`omnilab-<pid>-<id>-…`), so two runs never clash, and a run
// removes what a killed earlier run left behind (namespaces whose pid is gone). destroy() kills the
// processes started through spawn()/run() and any left in its namespaces, deletes every namespace
// (the veths and the bridge go with them) and runs the clean-ups given to it; it runs on exit,
// SIGINT and SIGTERM too.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';

const PREFIX = 'omnilab-';
/** Interface names are at most 15 characters. */
const ROOT_VETH_PREFIX = 'olab';

export interface LabHost {
  name: string;
  /** Its network namespace. */
  ns: string;
  /** Its address on the lab's subnet. */
  ip: string;
}

function ip(...args: string[]): string {
  return execFileSync('ip', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function tc(...args: string[]): void {
  execFileSync('tc', args, { stdio: ['ignore', 'pipe', 'pipe'] });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Namespace names of this lab scheme that exist now. */
function labNamespaces(): string[] {
  return ip('netns', 'list')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(PREFIX));
}

/** Deletes namespaces (and root veths) left by runs whose process is gone. Returns how many. */
export function sweepAbandonedLabs(): number {
  let n = 0;
  for (const ns of labNamespaces()) {
    const pid = Number(ns.slice(PREFIX.length).split('-')[0]);
    if (!Number.isSafeInteger(pid) || isAlive(pid)) continue;
    try {
      ip('netns', 'del', ns);
      n++;
    } catch {
      // already gone
    }
  }
  return n;
}

function freeSubnet(): string {
  const used = ip('-4', 'addr').concat(ip('-4', 'route'));
  for (let i = 0; i < 50; i++) {
    const [a, b] = randomBytes(2);
    const net = `10.${200 + (a % 50)}.${b}`;
    if (!used.includes(`${net}.`)) return net;
  }
  throw new Error('no free 10.x.y.0/24 subnet found for the lab');
}

export class NetLab {
  readonly id = randomBytes(2).toString('hex');
  readonly subnet = freeSubnet();
  readonly hosts = new Map<string, LabHost>();
  private readonly hub: string;
  private readonly rootVeth: string;
  private readonly children = new Set<ChildProcess>();
  /** Synchronous clean-ups run by destroy() after the processes are gone (temp dirs). */
  private readonly cleanups: (() => void)[] = [];
  private destroyed = false;
  private readonly onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\n${sig}: removing the lab's namespaces\n`);
    this.destroy();
    process.exit(130);
  };
  private readonly onExit = () => this.destroy();

  constructor(private readonly capMbit: number) {
    this.hub = `${PREFIX}${process.pid}-${this.id}-hub`;
    this.rootVeth = `${ROOT_VETH_PREFIX}${this.id}`;
  }

  /** Creates the hub, its bridge and the root namespace's link to it. */
  start(): void {
    process.once('SIGINT', this.onSignal);
    process.once('SIGTERM', this.onSignal);
    process.once('exit', this.onExit);
    ip('netns', 'add', this.hub);
    ip('-n', this.hub, 'link', 'set', 'lo', 'up');
    ip('-n', this.hub, 'link', 'add', 'br0', 'type', 'bridge');
    ip('-n', this.hub, 'link', 'set', 'br0', 'up');
    ip('link', 'add', this.rootVeth, 'type', 'veth', 'peer', 'name', 'root', 'netns', this.hub);
    ip('-n', this.hub, 'link', 'set', 'root', 'master', 'br0');
    ip('-n', this.hub, 'link', 'set', 'root', 'up');
    ip('addr', 'add', `${this.subnet}.254/24`, 'dev', this.rootVeth);
    ip('link', 'set', this.rootVeth, 'up');
  }

  /** A host with its own namespace at 10.x.y.`octet`, its link capped both ways. */
  addHost(name: string, octet: number): LabHost {
    const ns = `${PREFIX}${process.pid}-${this.id}-${name}`;
    const hubSide = `h-${name}`.slice(0, 15);
    ip('netns', 'add', ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', this.hub, 'link', 'add', hubSide, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('-n', this.hub, 'link', 'set', hubSide, 'master', 'br0');
    ip('-n', this.hub, 'link', 'set', hubSide, 'up');
    const addr = `${this.subnet}.${octet}`;
    ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    // The cap: egress of the host, and egress of the hub towards it (the host's ingress).
    for (const [where, dev] of [
      [ns, 'eth0'],
      [this.hub, hubSide],
    ]) {
      tc('-n', where, 'qdisc', 'add', 'dev', dev, 'root', 'tbf', 'rate', `${this.capMbit}mbit`, 'burst', '128kb', 'latency', '100ms');
    }
    const host = { name, ns, ip: addr };
    this.hosts.set(name, host);
    return host;
  }

  /** The command prefix that runs a program inside a host's namespace. */
  launcher(name: string): string[] {
    return ['ip', 'netns', 'exec', this.host(name).ns];
  }

  host(name: string): LabHost {
    const h = this.hosts.get(name);
    if (!h) throw new Error(`no lab host ${name}`);
    return h;
  }

  /** Starts a long-running program inside a host's namespace (killed by destroy()). */
  spawn(name: string, command: string[], opts: { stdio?: 'ignore' | 'pipe' } = {}): ChildProcess {
    const proc = spawn('ip', ['netns', 'exec', this.host(name).ns, ...command], { stdio: ['ignore', opts.stdio ?? 'ignore', opts.stdio ?? 'ignore'] });
    this.children.add(proc);
    proc.once('exit', () => this.children.delete(proc));
    return proc;
  }

  /** Runs a program inside a host's namespace to its end; rejects on a non-zero exit. */
  run(name: string, command: string[]): Promise<string> {
    return new Promise((resolve, reject) => {
      const proc = this.spawn(name, command, { stdio: 'pipe' });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      proc.stdout!.on('data', (c: Buffer) => out.push(c));
      proc.stderr!.on('data', (c: Buffer) => err.push(c));
      proc.once('error', reject);
      // 'close', not 'exit': the output is all read then.
      proc.once('close', (code) => {
        if (code === 0) resolve(Buffer.concat(out).toString('utf8'));
        else reject(new Error(`${command.slice(0, 3).join(' ')} in ${name} exited ${code}: ${Buffer.concat(err).toString('utf8').slice(0, 500)}`));
      });
    });
  }

  /** Bytes a host's interface received and sent so far. */
  counters(name: string): { rxBytes: number; txBytes: number } {
    const out = execFileSync('ip', ['-n', this.host(name).ns, '-s', '-j', 'link', 'show', 'eth0'], { encoding: 'utf8' });
    const s = (JSON.parse(out) as { stats64: { rx: { bytes: number }; tx: { bytes: number } } }[])[0].stats64;
    return { rxBytes: s.rx.bytes, txBytes: s.tx.bytes };
  }

  /** Runs `f` (synchronous) in destroy(), also on SIGINT/SIGTERM, after the lab's processes are killed. */
  addCleanup(f: () => void): void {
    this.cleanups.push(f);
  }

  /** Kills what spawn()/run() started, deletes every namespace of this lab and the root veth. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
    process.off('exit', this.onExit);
    for (const p of this.children) p.kill('SIGKILL');
    // Processes inside a namespace keep it alive after its name is gone: any left are ours.
    for (const h of this.hosts.values()) killInNamespace(h.ns);
    for (const ns of [...[...this.hosts.values()].map((h) => h.ns), this.hub]) {
      try {
        ip('netns', 'del', ns);
      } catch {
        // not created, or already gone
      }
    }
    try {
      ip('link', 'del', this.rootVeth);
    } catch {
      // went with the hub
    }
    for (const f of this.cleanups.splice(0)) {
      try {
        f();
      } catch {
        // best effort
      }
    }
  }
}

/** SIGKILLs the processes running in a namespace (`ip netns pids`). */
function killInNamespace(ns: string): void {
  let pids: number[] = [];
  try {
    pids = ip('netns', 'pids', ns).split('\n').filter(Boolean).map(Number);
  } catch {
    return;
  }
  for (const pid of pids) {
    if (pid === process.pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

/** Whether this process may build a lab (root, with `ip` and `tc`). */
export function labAvailable(): { ok: true } | { ok: false; why: string } {
  if (process.getuid?.() !== 0) return { ok: false, why: 'network namespaces need root' };
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    execFileSync('tc', ['-V'], { stdio: 'ignore' });
  } catch {
    return { ok: false, why: 'ip and tc (iproute2) are not installed' };
  }
  return { ok: true };
}
