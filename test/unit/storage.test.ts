import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Level } from 'level';
import { RaftStorage, StorageCorruptError } from '../../node/raft-storage.js';
import { EntryType, type Entry } from '../../protocol/raft/types.js';

const dirs: string[] = [];
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'omni-storage-'));
  dirs.push(d);
  return d;
}
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push({ term, index: i, type: EntryType.Normal, data: new TextEncoder().encode(`t${term}-${i}`) });
  return out;
}

describe('RaftStorage (level)', () => {
  it('round-trips hard state and entries across a reopen', async () => {
    const dir = await tempDir();
    const s = await RaftStorage.open(dir);
    await s.save({ hardState: { term: 3, vote: 'a', commit: 5 }, entries: entries(1, 10, 3) }, true);
    await s.close();
    const r = await RaftStorage.open(dir);
    const st = await r.load();
    expect(st.hardState).toEqual({ term: 3, vote: 'a', commit: 5 });
    expect(st.entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(new TextDecoder().decode(st.entries[9].data)).toBe('t3-10');
    expect(r.lastIndex()).toBe(10);
    await r.close();
  });

  it('replaces a conflicting suffix', async () => {
    const s = await RaftStorage.open(await tempDir());
    await s.save({ entries: entries(1, 10, 1) }, true);
    await s.save({ entries: entries(6, 7, 2) }, true);
    const st = await s.load();
    expect(st.entries.map((e) => `${e.index}@${e.term}`)).toEqual(['1@1', '2@1', '3@1', '4@1', '5@1', '6@2', '7@2']);
    await s.close();
  });

  it('a snapshot drops the entries it covers', async () => {
    const s = await RaftStorage.open(await tempDir());
    await s.save({ entries: entries(1, 20, 1) }, true);
    await s.saveSnapshot({ meta: { index: 12, term: 1, conf: { voters: ['a'], learners: [] } }, data: new Uint8Array([9]) });
    let st = await s.load();
    expect(st.snapshot?.meta.index).toBe(12);
    expect(st.entries.map((e) => e.index)).toEqual([13, 14, 15, 16, 17, 18, 19, 20]);
    // A snapshot received from the leader replaces everything it covers, and the log restarts after it.
    await s.save({ entries: [], snapshot: { meta: { index: 30, term: 2, conf: { voters: ['a'], learners: [] } }, data: new Uint8Array([7]) } }, true);
    st = await s.load();
    expect(st.snapshot?.meta.index).toBe(30);
    expect(st.entries).toEqual([]);
    await s.save({ entries: entries(31, 32, 2) }, true);
    expect((await s.load()).entries.map((e) => e.index)).toEqual([31, 32]);
    await s.close();
  });

  it('keeps node-local metadata', async () => {
    const dir = await tempDir();
    const s = await RaftStorage.open(dir);
    await s.putMeta('cluster', { id: 'x', n: 1 });
    await s.close();
    const r = await RaftStorage.open(dir);
    expect(await r.getMeta('cluster')).toEqual({ id: 'x', n: 1 });
    expect(await r.getMeta('missing')).toBeUndefined();
    await r.close();
  });

  it('reports a damaged record instead of loading a wrong log', async () => {
    const dir = await tempDir();
    const s = await RaftStorage.open(dir);
    await s.save({ entries: entries(1, 3, 1) }, true);
    await s.close();
    const raw = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
    await raw.put('e/0000000000000002', new Uint8Array([0xff, 0xff, 0xff]));
    await raw.close();
    const r = await RaftStorage.open(dir);
    await expect(r.load()).rejects.toBeInstanceOf(StorageCorruptError);
    await r.close();
  });

  it('loses no acknowledged entry when the writer is killed with SIGKILL (three crashes)', async () => {
    const dir = await tempDir();
    let acked = 0;
    for (let round = 0; round < 3; round++) {
      const target = acked + 150;
      const child = spawn(join(process.cwd(), 'node_modules/.bin/node'), ['--import', 'tsx', 'test/fixtures/storage-writer.ts', dir], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise((r) => child.once('exit', r));
      await new Promise<void>((resolve) => {
        createInterface({ input: child.stdout! }).on('line', (line) => {
          const n = Number(/^acked (\d+)$/.exec(line)?.[1]);
          if (n > acked) acked = n;
          if (acked >= target) {
            child.kill('SIGKILL');
            resolve();
          }
        });
      });
      await exited;
      const s = await RaftStorage.open(dir);
      const st = await s.load();
      await s.close();
      expect(st.entries.length).toBeGreaterThanOrEqual(acked);
      st.entries.forEach((e, i) => {
        expect(e.index).toBe(i + 1);
        expect(new TextDecoder().decode(e.data).startsWith(`entry-${e.index}.`)).toBe(true);
      });
    }
  }, 60_000);
});
