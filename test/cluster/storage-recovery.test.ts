// A node whose Raft storage is damaged refuses to start (STORAGE_CORRUPT, one line, exit 1)
// instead of coming up with an older vote; the documented recovery brings the cluster back to
// its voters: `omni nodes remove NAME` on a healthy member, then `omnid join` under the same
// name with a fresh data dir.
import { afterEach, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { LocalCluster } from '../../node/local-cluster.js';
import { formCluster, status, put, get, waitFor } from './helpers.js';

const run = promisify(execFile);
let c: LocalCluster | undefined;
afterEach(async () => {
  await c?.destroy();
  c = undefined;
});

/** Flips a byte near the end of the newest non-empty LevelDB write-ahead log in DIR/raft. */
async function damageNewestLog(dataDir: string): Promise<string> {
  const dir = join(dataDir, 'raft');
  const logs = (await readdir(dir)).filter((n) => /^\d+\.log$/.test(n)).sort().reverse();
  for (const name of logs) {
    const path = join(dir, name);
    if ((await stat(path)).size < 64) continue;
    const bytes = await readFile(path);
    bytes[bytes.length - 3] ^= 0x01;
    await writeFile(path, bytes);
    return name;
  }
  throw new Error(`no LevelDB log with records in ${dir}`);
}

async function nodeStatus(cl: LocalCluster, via: string, name: string): Promise<string | undefined> {
  const client = cl.client(via);
  try {
    return (await client.get<{ nodes: { name: string; status: string }[] }>('/v1/nodes')).nodes.find((n) => n.name === name && n.status !== 'left')?.status;
  } finally {
    client.close();
  }
}

describe('damaged storage', () => {
  it('a node with a damaged log refuses to start; removing it and rejoining under the same name restores the voters', async () => {
    const names = ['d1', 'd2', 'd3'];
    c = await formCluster(names);
    for (let i = 0; i < 20; i++) await put(c, 'd2', `before/${i}`, `v${i}`);
    const leader = (await status(c, 'd1')).leader;
    const victim = names.find((n) => n !== 'd1' && n !== leader)!;
    const healthy = names.find((n) => n !== victim && n !== 'd1')!;
    await waitFor(`${victim} has every write`, async () => (await get(c!, victim, 'before/19', true).catch(() => undefined))?.value === 'v19');
    // Removal guards: a member still heard from, and the node answering, are refused.
    const admin = c.client(healthy);
    const refused = [await admin.raw('DELETE', `/v1/nodes/${victim}`), await admin.raw('DELETE', `/v1/nodes/${healthy}`)];
    admin.close();
    expect(refused.map((r) => [r.status, (r.body as { error: { code: string } }).error.code])).toEqual([[409, 'CONFLICT'], [409, 'CONFLICT']]);
    await c.kill(victim, 'SIGTERM');

    const log = await damageNewestLog(c.dataDir(victim));
    await expect(c.restart(victim)).rejects.toThrow(/exited with 1/);
    expect(await c.nodes.get(victim)!.exited).toBe(1);
    const reported = c.nodes.get(victim)!.lines.filter((l) => l.includes('STORAGE_CORRUPT'));
    expect(reported).toHaveLength(1);
    expect(reported[0]).toMatch(new RegExp(`^error: LevelDB log ${log.replace('.', '\\.')} is damaged at byte \\d+: checksum mismatch .*omni nodes remove.*\\(STORAGE_CORRUPT\\)$`));

    // The two others keep the cluster going and see the dead member go down.
    await waitFor(`${victim} marked down`, async () => (await nodeStatus(c!, healthy, victim)) === 'down', 30_000, 200);
    const api = ['--addr', c.nodes.get(healthy)!.apiUrl, '--token', c.adminToken];
    await expect(run('bin/omni', ['nodes', 'remove', 'nosuch', ...api])).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('(NOT_FOUND)') });
    const removed = await run('bin/omni', ['nodes', 'remove', victim, '--json', ...api]);
    expect(JSON.parse(removed.stdout)).toMatchObject({ removed: victim, wasVoter: true });
    const after = await status(c, healthy);
    expect(after.voters).toHaveLength(2);
    expect(after.voters).not.toContain(victim);

    // Recovery: the damaged dir moves away, the host joins again under the same name.
    await rename(c.dataDir(victim), `${c.dataDir(victim)}.damaged`);
    await c.join(victim);
    const back = await waitFor(
      'three voters again, the rejoined node among them',
      async () => {
        const s = await status(c!, victim);
        return s.voters.length === 3 && s.voters.includes(victim) && s.health === 'healthy' ? s : undefined;
      },
      60_000,
      200,
    );
    expect([...back.voters].sort()).toEqual(names);
    expect((await get(c, victim, 'before/19')).value).toBe('v19');
    await put(c, victim, 'after/recovery', 'ok');
    expect((await get(c, healthy, 'after/recovery')).value).toBe('ok');
  }, 240_000);
});
