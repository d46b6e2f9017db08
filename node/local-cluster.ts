// Runs real omnid processes on loopback: used by `npm start`, the multi-process tests and
// bench:cluster. Each node gets its own data dir under one temporary root; the omni CLI
// config goes there too (OMNI_CONFIG), never into the user's home.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, readFile, readdir, writeFile } from 'node:fs/promises';
import { existsSync, readFileSync, readdirSync, realpathSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { ApiClient } from './api/client.js';
import { createDrivers } from './apps/drivers/index.js';
import { newJoinToken, newNetworkKey } from './api/tokens.js';
import { createServer } from 'node:net';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
/** The launcher: it runs dist/omnid.cjs (the bundle), rebuilt first if a source is newer, or cli/omnid.ts through tsx if that fails. */
const OMNID_LAUNCHER = join(ROOT, 'bin', 'omnid');
/** The scripts an omnid process runs (its command line names one): the bundle, or the TypeScript entry. */
const OMNID_SCRIPTS = [join(realpathSync(ROOT), 'dist', 'omnid.cjs'), join(realpathSync(ROOT), 'cli', 'omnid.ts')];
const START_TIMEOUT_MS = 60_000;
/** Lines of output kept per node for diagnostics. */
const MAX_KEPT_LINES = 400;

export interface LocalNode {
  name: string;
  dataDir: string;
  proc: ChildProcess;
  apiUrl: string;
  lines: string[];
  exited: Promise<number | null>;
  running: boolean;
}

export interface LocalClusterOptions {
  /** Extra omnid flags for every node (timing knobs, log level). */
  flags?: string[];
  /** Echo node output to this process's stderr. */
  echo?: boolean;
  /**
   * Marks the cluster's root dir as owned by this process under this tag (npm start): a later
   * LocalCluster.sweepAbandoned(tag) removes it, with its processes and tasks, once this process
   * is gone. Its omnid processes also get process groups of their own, so a terminal's Ctrl-C
   * reaches only this process, which stops them in order.
   */
  owner?: string;
  /** The address a node listens on for libp2p and its API (default 127.0.0.1): bench:registry gives each node a network namespace's address. */
  hostOf?: (name: string) => string;
  /** A command each node's omnid runs under (e.g. `ip netns exec NS`); default none. */
  launcherOf?: (name: string) => string[];
  /** Extra flags for the Node runtime of every omnid, e.g. --trace-gc (after OMNID_NODE_FLAGS; bin/omnid takes them from OMNI_NODE_ARGS, split on spaces). */
  nodeArgs?: string[];
}

const OWNER_FILE = 'owner.json';
const ROOT_PREFIX = 'omni-cluster-';

/** Every omnid this process started and that still runs: killed if this process exits. */
const liveChildren = new Set<ChildProcess>();
let exitHookInstalled = false;
function trackChild(proc: ChildProcess): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once('exit', () => {
      for (const p of liveChildren) p.kill('SIGKILL');
    });
  }
  liveChildren.add(proc);
  proc.once('exit', () => liveChildren.delete(proc));
}

export class LocalCluster {
  readonly nodes = new Map<string, LocalNode>();
  adminToken = '';
  joinToken = '';
  joinAddr = '';
  /** The cluster CA certificate (PEM) from the init node's client.json: for https APIs (--tls). */
  ca: string | undefined;
  private constructor(
    readonly rootDir: string,
    private readonly opts: LocalClusterOptions,
  ) {}

  private destroyed = false;

  static async create(opts: LocalClusterOptions = {}): Promise<LocalCluster> {
    const c = new LocalCluster(await mkdtemp(join(tmpdir(), ROOT_PREFIX)), opts);
    if (opts.owner) await writeFile(join(c.rootDir, OWNER_FILE), JSON.stringify({ pid: process.pid, tag: opts.owner }) + '\n');
    return c;
  }

  /**
   * Removes the clusters an earlier process with this owner tag left behind (it was killed, or
   * stopped before it could clean up): their omnid processes, their tasks and their data.
   * Returns the root dirs removed.
   */
  static async sweepAbandoned(tag: string): Promise<string[]> {
    const removed: string[] = [];
    for (const name of await readdir(tmpdir()).catch(() => [] as string[])) {
      if (!name.startsWith(ROOT_PREFIX)) continue;
      const rootDir = join(tmpdir(), name);
      let owner: { pid?: unknown; tag?: unknown };
      try {
        owner = JSON.parse(await readFile(join(rootDir, OWNER_FILE), 'utf8'));
      } catch {
        continue; // not a tagged cluster (tests, benchmarks): never touched
      }
      if (owner.tag !== tag || typeof owner.pid !== 'number' || isAlive(owner.pid)) continue;
      // Its omnid processes first (so none restarts a task), then the tasks through their drivers.
      for (const pid of processesUnder(rootDir, OMNID_SCRIPTS)) killQuietly(pid, 'SIGKILL');
      const c = new LocalCluster(rootDir, {});
      for (const d of await readdir(rootDir, { withFileTypes: true }).catch(() => [])) {
        if (d.isDirectory()) c.nodes.set(d.name, { name: d.name, dataDir: join(rootDir, d.name) } as LocalNode);
      }
      await c.stopAllTasks();
      await rm(rootDir, { recursive: true, force: true });
      removed.push(rootDir);
    }
    return removed;
  }

  dataDir(name: string): string {
    return join(this.rootDir, name);
  }

  /** The last lines a node printed (for a failing test's message); empty for an unknown node. */
  recentOutput(name: string, lines = 30): string[] {
    return this.nodes.get(name)?.lines.slice(-lines) ?? [];
  }

  /** omnid init on a new node; records the join command and admin token it prints. */
  async init(name: string, extra: string[] = [], listen?: string): Promise<LocalNode> {
    const node = this.spawnNode(name, ['init', ...this.commonArgs(name, listen), ...extra]);
    const joinLine = await this.waitLine(node, (l) => l.startsWith('omnid join '));
    const exportLine = await this.waitLine(node, (l) => l.startsWith('export OMNI_ADDR='));
    const m = /^omnid join (\S+) --token (\S+)$/.exec(joinLine);
    const e = /^export OMNI_ADDR=(\S+) OMNI_TOKEN=(\S+)(?: OMNI_CA=\S+)?$/.exec(exportLine);
    if (!m || !e) throw new Error(`unexpected init output: ${joinLine} / ${exportLine}`);
    [this.joinAddr, this.joinToken] = [m[1], m[2]];
    [node.apiUrl, this.adminToken] = [e[1], e[2]];
    this.ca = (JSON.parse(await readFile(join(node.dataDir, 'client.json'), 'utf8')) as { ca?: string }).ca;
    return node;
  }

  /**
   * Hosts provisioned together (README: Hosts provisioned together): a join token made in
   * advance, the root on a port chosen here, and every node started at the same moment — the
   * joins retry until the root answers. Resolves once each has said it initialised or joined.
   */
  async startTogether(names: readonly string[]): Promise<void> {
    const [root, ...others] = names;
    const host = this.hostOf(root);
    const rootAddr = `/ip4/${host}/tcp/${await freeTcpPort(host)}`;
    const token = newJoinToken(newNetworkKey());
    await Promise.all([
      this.init(root, ['--join-token', token], rootAddr),
      ...others.map((n) => this.join(n, [], rootAddr, token)),
    ]);
  }

  /** omnid join through `via` (default: the init node's address). */
  async join(name: string, extra: string[] = [], via = this.joinAddr, token = this.joinToken): Promise<LocalNode> {
    const node = this.spawnNode(name, ['join', via, '--token', token, ...this.commonArgs(name), ...extra]);
    const line = await this.waitLine(node, (l) => l.startsWith('omnid: joined cluster'));
    node.apiUrl = /API (\S+)$/.exec(line)![1];
    return node;
  }

  /** omnid start of a stopped node from its data dir. */
  async restart(name: string, extra: string[] = []): Promise<LocalNode> {
    const old = this.nodes.get(name);
    if (old?.running) throw new Error(`${name} is still running`);
    const node = this.spawnNode(name, ['start', '--data', this.dataDir(name), '--api', `${this.hostOf(name)}:0`, '--registry', '127.0.0.1:0', ...(this.opts.flags ?? []), ...extra]);
    const line = await this.waitLine(node, (l) => l.startsWith('omnid: started'));
    node.apiUrl = /API (\S+)$/.exec(line)![1];
    return node;
  }

  client(name: string, token: string | undefined = this.adminToken): ApiClient {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return new ApiClient(n.apiUrl, token, 10_000, { ca: this.ca });
  }

  /** Resolves once `name`'s replica sees `voters` voters, the root retired and a leader (benchmarks' start). */
  async waitForVoters(name: string, voters: number, timeoutMs: number): Promise<void> {
    await waitFor(`${voters} voters`, async () => {
      const cl = this.client(name);
      try {
        const s = await cl.get<{ voters: unknown[]; rootRetired: boolean; leader: string | null }>('/v1/status');
        return s.voters.length === voters && s.rootRetired && s.leader !== null ? true : undefined;
      } catch {
        return undefined;
      } finally {
        cl.close();
      }
    }, timeoutMs);
  }

  running(): LocalNode[] {
    return [...this.nodes.values()].filter((n) => n.running);
  }

  kill(name: string, signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    const n = this.nodes.get(name)!;
    n.proc.kill(signal);
    return n.exited;
  }

  /** Stops every node (SIGTERM, then SIGKILL) and removes the data dirs. */
  async destroy(keepData = false): Promise<void> {
    this.destroyed = true;
    await Promise.all(
      this.running().map(async (n) => {
        n.proc.kill('SIGTERM');
        const t = setTimeout(() => n.proc.kill('SIGKILL'), 5000);
        await n.exited;
        clearTimeout(t);
      }),
    );
    // Tasks outlive omnid on purpose (a restarted agent re-attaches); a destroyed cluster takes them along.
    if (!keepData) await this.stopAllTasks();
    if (!keepData) await rm(this.rootDir, { recursive: true, force: true });
  }

  private async stopAllTasks(): Promise<void> {
    for (const n of this.nodes.values()) {
      for (const driver of Object.values(createDrivers(n.dataDir))) {
        if (driver.name === 'mock' || !(await driver.available().catch(() => ({ ok: false }))).ok) continue;
        for (const t of await driver.recover().catch(() => [])) {
          await driver.stop(t.taskId, 2000).catch(() => undefined);
          await driver.destroy(t.taskId).catch(() => undefined);
        }
      }
    }
  }

  private commonArgs(name: string, listen?: string): string[] {
    const host = this.hostOf(name);
    return ['--data', this.dataDir(name), '--name', name, '--listen', listen ?? `/ip4/${host}/tcp/0`, '--api', `${host}:0`, '--registry', '127.0.0.1:0', ...(this.opts.flags ?? [])];
  }

  private hostOf(name: string): string {
    return this.opts.hostOf?.(name) ?? '127.0.0.1';
  }

  private spawnNode(name: string, args: string[]): LocalNode {
    if (this.destroyed) throw new Error(`the local cluster is being stopped; ${name} is not started`);
    const launcher = this.opts.launcherOf?.(name) ?? [];
    const command = [...launcher, OMNID_LAUNCHER, ...args];
    const env: NodeJS.ProcessEnv = { ...process.env, OMNI_CONFIG: join(this.rootDir, 'omni-cli.json') };
    if (this.opts.nodeArgs?.length) env.OMNI_NODE_ARGS = this.opts.nodeArgs.join(' ');
    else delete env.OMNI_NODE_ARGS;
    const proc = spawn(command[0], command.slice(1), {
      cwd: ROOT,
      detached: this.opts.owner !== undefined,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    trackChild(proc);
    const node: LocalNode = { name, dataDir: this.dataDir(name), proc, apiUrl: '', lines: [], running: true, exited: undefined! };
    node.exited = new Promise((resolve) => proc.once('exit', (code, sig) => ((node.running = false), resolve(code ?? (sig ? -1 : null)))));
    for (const stream of [proc.stdout!, proc.stderr!]) {
      createInterface({ input: stream }).on('line', (line) => {
        node.lines.push(line);
        if (node.lines.length > MAX_KEPT_LINES) node.lines.shift();
        if (this.opts.echo) process.stderr.write(`[${name}] ${line}\n`);
      });
    }
    this.nodes.set(name, node);
    return node;
  }

  private waitLine(node: LocalNode, match: (line: string) => boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      const found = node.lines.find(match);
      if (found) return resolve(found);
      const timer = setTimeout(() => fail(`timed out waiting for ${node.name} to start`), START_TIMEOUT_MS);
      const onLine = (line: string) => {
        if (match(line)) {
          clearTimeout(timer);
          resolve(line);
        }
      };
      const fail = (why: string) => reject(new Error(`${why}; last output:\n${node.lines.slice(-30).join('\n')}`));
      for (const s of [node.proc.stdout!, node.proc.stderr!]) createInterface({ input: s }).on('line', onLine);
      void node.exited.then((code) => {
        clearTimeout(timer);
        setTimeout(() => fail(`${node.name} exited with ${code}`), 50);
      });
    });
  }
}

/** Polls `check` until it returns a truthy value (errors count as "not yet"). */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastErr = '';
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      lastErr = (err as Error).message;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${lastErr ? ` (last error: ${lastErr})` : ''}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** Processes running one of `scripts` with a path under `dir` in their command line (Linux /proc; elsewhere none are found). */
function processesUnder(dir: string, scripts: string[]): number[] {
  if (!existsSync('/proc')) return [];
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (args.some((a) => scripts.includes(a)) && args.some((a) => a.startsWith(dir + '/'))) pids.push(Number(entry));
    } catch {
      // gone, or not ours to read
    }
  }
  return pids;
}

/**
 * A TCP port free on `host` now, for a listener chosen in advance (the root of hosts started
 * together). Taken from 32001–32767: above the scheduler's dynamic host ports (20000–32000) and
 * below the kernel's ephemeral range (from 32768), so no outgoing connection or `tcp/0` listener
 * of the other processes can take it between this check and its use.
 */
export async function freeTcpPort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = 32_001 + Math.floor(Math.random() * 767);
    if (await tcpPortFree(host, port)) return port;
  }
  throw new Error(`no free TCP port in 32001-32767 on ${host}`);
}

/** Whether a listener could bind `host`:`port` now (it is closed again at once). */
export function tcpPortFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}
