// What the drivers share about processes on this host: /proc/<pid>/stat, and the shell scripts
// that supervise tasks outside omnid (the process wrapper, the lease watchdog), copied under
// content-named files — a shell reads its script while it runs, so a running one must never change.
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../../files.js';

export interface ProcStat {
  state: string;
  ppid: number;
  pgrp: number;
  ticks: number;
  /** Field 22: when the process started (clock ticks since boot); with the pid, names one process for good. */
  startTicks: string;
  rssPages: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // "pid (comm) state ppid pgrp ..." — comm may hold spaces and parentheses
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return {
    state: f[0],
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    ticks: Number(f[11]) + Number(f[12]),
    startTicks: f[19],
    rssPages: Number(f[21]),
  };
}

/** A process and every descendant (from one scan of /proc), parents first; [] when `root` is gone or there is no /proc. */
export function processTree(root: number): number[] {
  if (!readProcStat(root)) return [];
  const children = new Map<number, number[]>();
  let names: string[];
  try {
    names = readdirSync('/proc');
  } catch {
    return [root];
  }
  for (const n of names) {
    if (n.charCodeAt(0) < 48 || n.charCodeAt(0) > 57) continue;
    const st = readProcStat(Number(n));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(n));
    children.set(st.ppid, list);
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0 && out.length < 10_000) {
    const pid = queue.shift()!;
    if (out.includes(pid)) continue;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** Copies a script shipped beside the drivers into dir as `<prefix>-<content hash>.sh` (once); returns its path. */
export async function installScript(dir: string, source: URL, prefix: string): Promise<string> {
  const text = await readFile(source, 'utf8');
  const p = join(dir, `${prefix}-${createHash('sha256').update(text).digest('hex').slice(0, 12)}.sh`);
  const cur = await readFile(p, 'utf8').catch(() => undefined);
  if (cur !== text) {
    await mkdir(dir, { recursive: true });
    await writeFileAtomic(p, text);
  }
  return p;
}
