// `npm run soak [-- --minutes N]`: a long run that a healthy cluster must survive unchanged.
// Three omnid processes on loopback take writes at concurrency 16 (each worker owns its keys
// and writes increasing sequence numbers into them) while one node is killed with -9 and
// restarted every --kill-every-s seconds (n2 and n3 in turn, whatever their role: often the
// leader). n1 is never killed, so its memory is watched over the whole run.
// At the end every key is read back linearizably: its sequence number must be at least the
// last one acknowledged for it (a lost write otherwise) and at most the last one attempted.
// Figures: unexpected daemon exits, acknowledged / lost writes, RSS growth after warm-up.
// Last line: one JSON object. Not part of `npm test` (it runs for half an hour by default).
import { parseArgs } from 'node:util';
import { readFile } from 'node:fs/promises';
import { LocalCluster, waitFor, type LocalNode } from '../../node/local-cluster.js';
import { Http, log, sleep, round } from './load.js';

const { values } = parseArgs({
  options: {
    minutes: { type: 'string' },
    concurrency: { type: 'string' },
    'kill-every-s': { type: 'string' },
    'keys-per-worker': { type: 'string' },
    help: { type: 'boolean' },
  },
});
if (values.help) {
  process.stdout.write('usage: npm run soak [-- --minutes 30] [--concurrency 16] [--kill-every-s 60] [--keys-per-worker 500]\n');
  process.exit(0);
}
const DURATION_MS = Number(values.minutes ?? 30) * 60_000;
const CONCURRENCY = Number(values.concurrency ?? 16);
const KILL_EVERY_MS = Number(values['kill-every-s'] ?? 60) * 1000;
const KEYS_PER_WORKER = Number(values['keys-per-worker'] ?? 500);
/** How long a killed node stays down before `omnid start`. */
const DOWN_FOR_MS = 5000;
/** RSS is judged only after this much of the run (caches, JIT, first compactions). */
const WARMUP_MS = Math.min(5 * 60_000, DURATION_MS / 4);
/** A sample counts for a restarted node only once its process is this old. */
const MIN_SAMPLE_AGE_MS = 30_000;
const RSS_SAMPLE_MS = 5000;
const WRITE_TIMEOUT_MS = 5000;
const NAMES = ['n1', 'n2', 'n3'];
const VICTIMS = ['n2', 'n3'];

interface RssSample {
  atMs: number;
  ageMs: number;
  rssKb: number;
}

const startedAt = performance.now();
const now = (): number => performance.now() - startedAt;

async function rssKb(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Mean of the samples whose time falls in [fromMs, toMs). */
function meanIn(samples: RssSample[], fromMs: number, toMs: number): number | undefined {
  const xs = samples.filter((s) => s.atMs >= fromMs && s.atMs < toMs && s.ageMs >= MIN_SAMPLE_AGE_MS).map((s) => s.rssKb);
  return xs.length === 0 ? undefined : xs.reduce((a, b) => a + b, 0) / xs.length;
}

async function main(): Promise<void> {
  const cluster = await LocalCluster.create({ flags: ['--heartbeat-ms', '250', '--down-after-ms', '2000', '--replace-after-ms', '30000'] });
  const http = new Http();
  const auth = (): Record<string, string> => ({ authorization: `Bearer ${cluster.adminToken}` });
  const expectedExit = new Set<LocalNode>();
  const unexpected: string[] = [];
  const watch = (n: LocalNode): void => {
    const spawnedAtMs = now();
    void n.exited.then((code) => {
      if (expectedExit.has(n) || stopping) return;
      unexpected.push(`${n.name} exited with ${code} after ${Math.round((now() - spawnedAtMs) / 1000)} s: ${n.lines.slice(-5).join(' | ')}`);
      log(`!!! ${n.name} exited unexpectedly (code ${code}); last output:\n${n.lines.slice(-20).join('\n')}`);
      // Bring it back, so one crash does not end the run (it is counted all the same).
      void sleep(DOWN_FOR_MS).then(async () => {
        if (stopping || cluster.nodes.get(n.name) !== n) return;
        const again = await cluster.restart(n.name);
        bornAt.set(n.name, now());
        watch(again);
      }).catch((err: Error) => log(`!!! restarting ${n.name} after its crash failed: ${err.message}`));
    });
  };
  let stopping = false;
  const samples = new Map<string, RssSample[]>(NAMES.map((n) => [n, []]));
  const bornAt = new Map<string, number>();

  try {
    log(`soak: ${DURATION_MS / 60_000} min, ${CONCURRENCY} writers, a node killed -9 every ${KILL_EVERY_MS / 1000} s`);
    watch(await cluster.init(NAMES[0]));
    for (const n of NAMES.slice(1)) watch(await cluster.join(n));
    for (const n of NAMES) bornAt.set(n, now());
    await waitFor('3 voters and root step-down', async () => {
      const r = await http.call(`${cluster.nodes.get('n3')!.apiUrl}/v1/status`, 'GET', undefined, auth(), 2000);
      const s = JSON.parse(r.body) as { voters: string[]; rootRetired: boolean; health: string };
      return r.status === 200 && s.voters.length === 3 && s.rootRetired && s.health === 'healthy';
    }, 60_000);
    log('soak: cluster formed');
    const runStart = now();
    const deadline = runStart + DURATION_MS;

    // --- writers: worker w owns keys soak/w/k and writes increasing sequence numbers
    const lastAcked = new Map<string, number>();
    const lastAttempted = new Map<string, number>();
    let acked = 0;
    let failed = 0;
    const writers = Array.from({ length: CONCURRENCY }, async (_, w) => {
      let target = w;
      for (let seq = 1; now() < deadline; seq++) {
        const key = `soak/${w}/${seq % KEYS_PER_WORKER}`;
        const live = cluster.running().filter((n) => n.apiUrl);
        if (live.length === 0) {
          await sleep(100);
          continue;
        }
        const node = live[target % live.length];
        lastAttempted.set(key, seq);
        try {
          const r = await http.call(`${node.apiUrl}/v1/kv/${encodeURIComponent(key)}`, 'PUT', { value: `${w}:${seq}` }, auth(), WRITE_TIMEOUT_MS);
          if (r.status === 200) {
            lastAcked.set(key, seq);
            acked++;
            continue;
          }
          failed++;
        } catch {
          failed++;
        }
        target++; // try another node next time
        await sleep(20);
      }
    });

    // --- memory sampler
    const sampler = (async () => {
      while (now() < deadline) {
        for (const name of NAMES) {
          const n = cluster.nodes.get(name)!;
          const kb = n.running ? await rssKb(n.proc.pid) : undefined;
          if (kb !== undefined) samples.get(name)!.push({ atMs: now(), ageMs: now() - bornAt.get(name)!, rssKb: kb });
        }
        await sleep(RSS_SAMPLE_MS);
      }
    })();

    // --- killer: n2 and n3 in turn, kill -9, down for a while, omnid start
    let kills = 0;
    const killer = (async () => {
      for (let i = 0; ; i++) {
        await sleep(Math.max(0, Math.min(KILL_EVERY_MS - DOWN_FOR_MS, deadline - now())));
        if (now() + DOWN_FOR_MS + 15_000 > deadline) return;
        const name = VICTIMS[i % VICTIMS.length];
        const n = cluster.nodes.get(name)!;
        if (!n.running) continue;
        expectedExit.add(n);
        await cluster.kill(name, 'SIGKILL');
        kills++;
        log(`soak: ${Math.round(now() / 1000)} s: killed ${name} (-9), acked ${acked}, failed ${failed}`);
        await sleep(DOWN_FOR_MS);
        const restarted = await cluster.restart(name);
        bornAt.set(name, now());
        watch(restarted);
      }
    })();

    await Promise.all([...writers, sampler, killer]);
    log(`soak: load done: ${acked} acknowledged writes, ${failed} failed or refused, ${kills} kills`);

    // --- read everything back (linearizable reads through any live node)
    await waitFor('a quorum up for the read-back', () => cluster.running().length >= 2, 60_000);
    let lost = 0;
    let phantom = 0;
    const lostExamples: string[] = [];
    for (const [key, seq] of lastAcked) {
      const live = cluster.running();
      const node = live[(lost + phantom) % live.length];
      let value: string | undefined;
      for (let attempt = 0; attempt < 20 && value === undefined; attempt++) {
        try {
          const r = await http.call(`${node.apiUrl}/v1/kv/${encodeURIComponent(key)}`, 'GET', undefined, auth(), WRITE_TIMEOUT_MS);
          if (r.status === 200) value = (JSON.parse(r.body) as { value: string }).value;
          else if (r.status === 404) value = '';
          else await sleep(200);
        } catch {
          await sleep(200);
        }
      }
      const got = value ? Number(value.split(':')[1]) : 0;
      if (value === undefined || got < seq) {
        lost++;
        if (lostExamples.length < 5) lostExamples.push(`${key}: acked ${seq}, read ${value ?? '(unreadable)'}`);
      } else if (got > lastAttempted.get(key)!) phantom++;
    }
    if (lostExamples.length > 0) log(`!!! lost writes, e.g. ${lostExamples.join('; ')}`);

    // --- memory: the first window after warm-up against the last window
    const windowMs = Math.max(60_000, (DURATION_MS - WARMUP_MS) / 5);
    const growth: Record<string, number> = {};
    for (const name of NAMES) {
      const s = samples.get(name)!;
      const early = meanIn(s, runStart + WARMUP_MS, runStart + WARMUP_MS + windowMs);
      const late = meanIn(s, deadline - windowMs, deadline + 1);
      if (early !== undefined && late !== undefined) growth[name] = round(((late - early) / early) * 100);
      log(`soak: ${name} RSS ${early ? Math.round(early / 1024) : '?'} MB after warm-up, ${late ? Math.round(late / 1024) : '?'} MB at the end`);
    }
    const growthValues = Object.values(growth);
    const rssGrowthPct = growthValues.length === 0 ? null : Math.max(...growthValues);
    stopping = true;
    const result = {
      minutes: DURATION_MS / 60_000,
      concurrency: CONCURRENCY,
      kills,
      unexpected_exits: unexpected.length,
      acked_writes: acked,
      failed_writes: failed,
      lost_writes: lost,
      writes_newer_than_attempted: phantom,
      rss_growth_pct: rssGrowthPct,
      rss_growth_pct_by_node: growth,
      rss_mb_end: Object.fromEntries(NAMES.map((n) => [n, Math.round((samples.get(n)!.at(-1)?.rssKb ?? 0) / 1024)])),
    };
    if (unexpected.length > 0) log(`!!! unexpected exits:\n${unexpected.join('\n')}`);
    process.stdout.write(JSON.stringify(result) + '\n');
    process.exitCode = unexpected.length === 0 && lost === 0 && phantom === 0 ? 0 : 1;
  } finally {
    stopping = true;
    http.close();
    await cluster.destroy();
  }
}

await main();
