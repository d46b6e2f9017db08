// Samples the memory of running processes from /proc/<pid>/status (Linux) at a fixed interval,
// by name, with the phase of the benchmark each sample fell in: used by bench:state.
// VmRSS = RssAnon (heap, native allocations) + RssFile (mapped files, e.g. LevelDB tables or
// etcd's bbolt file; reclaimable by the kernel) + RssShmem.
import { readFile, appendFile } from 'node:fs/promises';

export interface Mem {
  rssKb: number;
  anonKb: number;
  fileKb: number;
}

export interface ProcRef {
  name: string;
  pid: number;
}

export interface PhaseMax {
  /** Highest VmRSS seen, and RssAnon/RssFile of that same sample. */
  rss: Mem;
  /** Highest RssAnon seen (may come from another sample). */
  anonKb: number;
  samples: number;
}

export async function memOf(pid: number): Promise<Mem | undefined> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
    const m = { rssKb: kb('VmRSS'), anonKb: kb('RssAnon'), fileKb: kb('RssFile') };
    return Number.isNaN(m.rssKb) ? undefined : m;
  } catch {
    return undefined; // exited
  }
}

/** What V8's --trace-gc says about full GCs (Mark-Compact), per node and phase, in MB. */
export interface GcMax {
  /** Largest heap committed by V8 (the figure in parentheses). */
  committedMb: number;
  /** Largest heap still in use right after a full GC: the live objects. */
  liveAfterMb: number;
  fullGcs: number;
}

/** `[pid:0x…]  1234 ms: Mark-Compact 45.3 (60.1) -> 40.2 (58.3) MB, …` */
const GC_LINE = /(Mark-Compact|Mark-sweep)[^0-9]*([\d.]+) \(([\d.]+)\) -> ([\d.]+) \(([\d.]+)\) MB/;

export class RssSampler {
  /** node → phase → max. */
  readonly max = new Map<string, Map<string, PhaseMax>>();
  /** node → phase → full-GC figures (only with --trace-gc lines fed to gcLine). */
  readonly gc = new Map<string, Map<string, GcMax>>();
  readonly last = new Map<string, Mem>();
  private phaseName = 'start';
  private timer: NodeJS.Timeout | undefined;
  private readonly t0 = performance.now();

  /** `procs` is asked at every tick (restarted processes get new pids). `csv`: append every sample there. */
  constructor(
    private readonly procs: () => ProcRef[],
    private readonly intervalMs = 500,
    private readonly csv?: string,
  ) {}

  start(): this {
    if (this.csv) void appendFile(this.csv, 'ms,phase,node,pid,rss_kb,anon_kb,file_kb\n');
    const tick = async () => {
      await this.sample();
      if (this.timer) this.timer = setTimeout(tick, this.intervalMs);
    };
    this.timer = setTimeout(tick, 0);
    return this;
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  phase(name: string): void {
    this.phaseName = name;
  }

  /** A line of a process's output: counted if it is a --trace-gc full-GC line. */
  gcLine(name: string, line: string): void {
    const m = GC_LINE.exec(line);
    if (!m) return;
    let byPhase = this.gc.get(name);
    if (!byPhase) this.gc.set(name, (byPhase = new Map()));
    const cur = byPhase.get(this.phaseName) ?? { committedMb: 0, liveAfterMb: 0, fullGcs: 0 };
    cur.committedMb = Math.max(cur.committedMb, Number(m[3]), Number(m[5]));
    cur.liveAfterMb = Math.max(cur.liveAfterMb, Number(m[4]));
    cur.fullGcs++;
    byPhase.set(this.phaseName, cur);
  }

  async sample(): Promise<void> {
    const lines: string[] = [];
    for (const p of this.procs()) {
      const m = await memOf(p.pid);
      if (!m) continue;
      this.last.set(p.name, m);
      let byPhase = this.max.get(p.name);
      if (!byPhase) this.max.set(p.name, (byPhase = new Map()));
      const cur = byPhase.get(this.phaseName) ?? { rss: { rssKb: 0, anonKb: 0, fileKb: 0 }, anonKb: 0, samples: 0 };
      if (m.rssKb > cur.rss.rssKb) cur.rss = m;
      cur.anonKb = Math.max(cur.anonKb, m.anonKb);
      cur.samples++;
      byPhase.set(this.phaseName, cur);
      if (this.csv) lines.push(`${Math.round(performance.now() - this.t0)},${this.phaseName},${p.name},${p.pid},${m.rssKb},${m.anonKb},${m.fileKb}`);
    }
    if (this.csv && lines.length > 0) await appendFile(this.csv, lines.join('\n') + '\n');
  }

  /** Highest VmRSS of a node over every phase (MiB), or undefined if never sampled. */
  maxMib(name: string): number | undefined {
    const byPhase = this.max.get(name);
    if (!byPhase) return undefined;
    return Math.round(Math.max(...[...byPhase.values()].map((p) => p.rss.rssKb)) / 1024);
  }

  /** One line per node: the max of each phase as rss (anon/file) MiB. */
  describe(): string[] {
    const mib = (kb: number) => Math.round(kb / 1024);
    return [...this.max.entries()].map(([name, byPhase]) => {
      const parts = [...byPhase.entries()].map(([phase, p]) => `${phase} ${mib(p.rss.rssKb)} (${mib(p.rss.anonKb)}/${mib(p.rss.fileKb)})`);
      return `${name}: ${parts.join(', ')}`;
    });
  }

  /** One line per node: V8 heap committed / live after full GC by phase, MB (with --trace-gc). */
  describeGc(): string[] {
    return [...this.gc.entries()].map(([name, byPhase]) => {
      const parts = [...byPhase.entries()].map(([phase, g]) => `${phase} ${Math.round(g.committedMb)}/${Math.round(g.liveAfterMb)} (${g.fullGcs} GCs)`);
      return `${name}: ${parts.join(', ')}`;
    });
  }
}
