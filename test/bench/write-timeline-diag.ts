// Diagnostic (not part of npm test): where one write's time goes across the three processes of a
// 3-node loopback cluster. N sequential writes (c=1) to the leader with OMNI_TIMELINE_DIR set, so
// every omnid marks points on the write path on the host's monotonic clock (node/timeline.ts);
// then, per write (the leader's request in → its answer written), the time between those points,
// p10 / p50 / p90. L is the leader, F the follower whose frame came first.
// Usage: node --import tsx test/bench/write-timeline-diag.ts [N=400]
// DIAG_NODE_ARGS: Node flags for every omnid, e.g. "--cpu-prof --cpu-prof-interval 25
// --cpu-prof-dir=DIR" (V8 timestamps are on the same clock: a profile can be cut to these windows).
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster, waitFor } from '../../node/local-cluster.js';
import { Http, log } from './load.js';

const N = Number(process.argv[2] ?? 400);

interface Mark {
  ns: bigint;
  pid: string;
  label: string;
}

/** Per window, µs from the first `from` of process `a` to the first `to` of process `b` after it. */
type Step = { from: string; who: 'L' | 'F'; to: string; toWho: 'L' | 'F'; afterFollowerSave?: true };
const STEPS: Step[] = [
  { from: 'http-in', who: 'L', to: 'authed', toWho: 'L' },
  { from: 'authed', who: 'L', to: 'body-read', toWho: 'L' },
  { from: 'body-read', who: 'L', to: 'propose', toWho: 'L' },
  { from: 'propose', who: 'L', to: 'save-start', toWho: 'L' },
  { from: 'save-start', who: 'L', to: 'sock-write', toWho: 'L' },
  { from: 'save-start', who: 'L', to: 'save-end', toWho: 'L' },
  { from: 'sock-write', who: 'L', to: 'frame-in', toWho: 'F' },
  { from: 'frame-in', who: 'F', to: 'save-start', toWho: 'F' },
  { from: 'save-start', who: 'F', to: 'save-end', toWho: 'F' },
  { from: 'save-start', who: 'F', to: 'batch-built', toWho: 'F' },
  { from: 'batch-built', who: 'F', to: 'save-end', toWho: 'F' },
  { from: 'save-end', who: 'F', to: 'sock-write', toWho: 'F' },
  // after the follower's log write: an AppResp before it answers the previous write's commit broadcast
  { from: 'sock-write', who: 'F', to: 'recv-appresp', toWho: 'L', afterFollowerSave: true },
  { from: 'recv-appresp', who: 'L', to: 'ready-commit', toWho: 'L', afterFollowerSave: true },
  { from: 'ready-commit', who: 'L', to: 'resolve', toWho: 'L' },
  { from: 'resolve', who: 'L', to: 'http-out', toWho: 'L' },
  { from: 'http-in', who: 'L', to: 'http-out', toWho: 'L' },
];

function pct(values: number[]): string {
  const v = [...values].sort((a, b) => a - b);
  if (v.length === 0) return 'n=0';
  const at = (q: number) => v[Math.min(v.length - 1, Math.floor(v.length * q))].toFixed(0);
  return `p10 ${at(0.1).padStart(5)}  p50 ${at(0.5).padStart(5)}  p90 ${at(0.9).padStart(5)} µs  (n=${v.length})`;
}

async function readMarks(dir: string): Promise<Mark[]> {
  const marks: Mark[] = [];
  for (const f of await readdir(dir)) {
    for (const line of (await readFile(join(dir, f), 'utf8')).split('\n')) {
      const [ns, pid, ...label] = line.split(' ');
      if (ns && pid && label.length > 0) marks.push({ ns: BigInt(ns), pid, label: label.join(' ') });
    }
  }
  return marks.sort((a, b) => (a.ns < b.ns ? -1 : a.ns > b.ns ? 1 : 0));
}

function analyse(marks: Mark[]): void {
  const proposes = new Map<string, number>();
  for (const m of marks) if (m.label === 'propose') proposes.set(m.pid, (proposes.get(m.pid) ?? 0) + 1);
  const leader = [...proposes].sort((a, b) => b[1] - a[1])[0]?.[0];
  if (!leader) throw new Error('no proposal was marked: was OMNI_TIMELINE_DIR passed to the omnids?');
  // windows: the leader's request in → its answer written, with exactly one proposal inside
  const windows: Mark[][] = [];
  let start = -1;
  for (let i = 0; i < marks.length; i++) {
    const m = marks[i];
    if (m.pid !== leader) continue;
    if (m.label === 'http-in') start = i;
    else if (m.label === 'http-out' && start >= 0) {
      const w = marks.slice(start, i + 1);
      if (w.filter((x) => x.pid === leader && x.label === 'propose').length === 1) windows.push(w);
      start = -1;
    }
  }
  const firstAfter = (w: Mark[], after: bigint, label: string, pid: (p: string) => boolean) => w.find((m) => m.ns >= after && m.label === label && pid(m.pid));
  log(`${windows.length} writes with one proposal each; leader pid ${leader}`);
  for (const s of STEPS) {
    const gaps: number[] = [];
    for (const w of windows) {
      // F: the follower whose frame of this write came first
      const follower = w.find((m) => m.pid !== leader && m.label === 'frame-in')?.pid;
      const isWho = (who: 'L' | 'F') => (p: string) => (who === 'L' ? p === leader : p === follower);
      const anchor = s.afterFollowerSave ? firstAfter(w, w[0].ns, 'save-end', isWho('F')) : w[0];
      const a = anchor && firstAfter(w, anchor.ns, s.from, isWho(s.who));
      const b = a && firstAfter(w, a.ns, s.to, isWho(s.toWho));
      if (a && b) gaps.push(Number(b.ns - a.ns) / 1000);
    }
    log(`${`${s.who}:${s.from} → ${s.toWho}:${s.to}`.padEnd(34)} ${pct(gaps)}`);
  }
  // Which ends later: the leader's own log write or the acknowledgement of this write's entries
  // (the commit waits for both) — the leader's first AppResp after a follower's log write ended:
  // an earlier one in the window answers the previous write's commit broadcast. Then how long the
  // commit's Ready comes after both are in.
  const after: number[] = [];
  const realLead: number[] = [];
  for (const w of windows) {
    const saveStart = w.find((m) => m.pid === leader && m.label === 'save-start');
    const save = w.find((m) => m.pid === leader && m.label === 'save-end');
    const fSave = saveStart && w.find((m) => m.pid !== leader && m.label === 'save-end' && m.ns > saveStart.ns);
    const ack = fSave && firstAfter(w, fSave.ns, 'recv-appresp', (p) => p === leader);
    const commit = ack && save && firstAfter(w, save.ns > ack.ns ? save.ns : ack.ns, 'ready-commit', (p) => p === leader);
    if (save && ack) realLead.push(Number(save.ns - ack.ns) / 1000);
    if (save && ack && commit) after.push(Number(commit.ns - (save.ns > ack.ns ? save.ns : ack.ns)) / 1000);
  }
  log(`L's own log write ends after this write's acknowledgement by: ${pct(realLead)} (negative: before it)`);
  log(`the commit's Ready after both are in: ${pct(after)}`);
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'omni-timeline-'));
  process.env.OMNI_TIMELINE_DIR = dir; // the omnids inherit it (this process marks nothing)
  const c = await LocalCluster.create({ nodeArgs: process.env.DIAG_NODE_ARGS ? process.env.DIAG_NODE_ARGS.split(' ') : [] });
  const http = new Http();
  try {
    await c.init('t1');
    await Promise.all(['t2', 't3'].map((n) => c.join(n)));
    const auth = { authorization: `Bearer ${c.adminToken}` };
    const status = async (n: string) => JSON.parse((await http.call(`${c.nodes.get(n)!.apiUrl}/v1/status`, 'GET', undefined, auth)).body);
    await waitFor('formed', async () => {
      const s = await status('t3');
      return s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
    }, 60_000, 50);
    let leader = 't1';
    for (const n of ['t1', 't2', 't3']) if ((await status(n)).role === 'leader') leader = n;
    const ep = c.nodes.get(leader)!.apiUrl;
    // a warm-up, then the marks of the measured writes only
    for (let i = 0; i < 100; i++) await http.call(`${ep}/v1/kv/warm${i % 10}`, 'PUT', { value: 'x'.repeat(256) }, auth);
    await new Promise((r) => setTimeout(r, 1500));
    for (const f of await readdir(dir)) await rm(join(dir, f), { force: true });
    for (let i = 0; i < N; i++) {
      const r = await http.call(`${ep}/v1/kv/${encodeURIComponent(`lat/${i % 100}`)}`, 'PUT', { value: 'x'.repeat(256) }, auth);
      if (r.status !== 200) throw new Error(`HTTP ${r.status} ${r.body}`);
    }
    await new Promise((r) => setTimeout(r, 1500)); // the omnids flush their marks once a second
    analyse(await readMarks(dir));
  } finally {
    http.close();
    await c.destroy();
    await rm(dir, { recursive: true, force: true });
  }
}
void main();
