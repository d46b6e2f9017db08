import { afterEach, describe, expect, it } from 'vitest';
import { cp, mkdtemp, readFile, readdir, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { Level } from 'level';
import { RaftStorage, StorageCorruptError } from '../../node/raft/raft-storage.js';
import { sealRecord, unsealRecord } from '../../node/raft/storage-integrity.js';
import { WITNESS_FILE } from '../../node/raft/hard-state-witness.js';
import { decodeHardState, encodeEntry, encodeHardState } from '../../protocol/codec.js';
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

describe('sealed records', () => {
  it('an empty payload seals and unseals, however its array was made; moved to another key it fails', () => {
    for (const empty of [new TextEncoder().encode(''), new Uint8Array(0), new Uint8Array(new ArrayBuffer(0)), Buffer.alloc(0), new Uint8Array(4).subarray(4)]) {
      const sealed = sealRecord('sg', empty);
      expect(unsealRecord('sg', sealed)?.length).toBe(0);
      expect(unsealRecord('sh', sealed)).toBeUndefined();
    }
    // What a version with node:zlib's empty-array pitfall wrote (CRC 0) is still read.
    expect(unsealRecord('sg', new Uint8Array([1, 0, 0, 0, 0]))?.length).toBe(0);
    expect(unsealRecord('sg', new Uint8Array([1, 0, 0, 0, 0, 0x62]))).toBeUndefined();
  });
});

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
    await s.saveSnapshot({ meta: { index: 12, term: 1, conf: { voters: ['a'], learners: [] } }, data: new Uint8Array([9]) }, 12);
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

  it('a local compaction keeps the tail it names on disk: load() returns it with the snapshot', async () => {
    const dir = await tempDir();
    const s = await RaftStorage.open(dir);
    await s.save({ entries: entries(1, 20, 1) }, true);
    const conf = { voters: ['a'], learners: [] };
    // Snapshot at the applied index 15, the log compacted to 10 (etcd's SnapshotCatchUpEntries).
    await s.saveSnapshot({ meta: { index: 15, term: 1, conf }, data: new Uint8Array([9]) }, 10);
    await s.close();
    let r = await RaftStorage.open(dir);
    let st = await r.load();
    expect(st.snapshot?.meta.index).toBe(15);
    expect(st.entries.map((e) => e.index)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect(r.firstIndex()).toBe(11);
    // The next compaction drops more of it; new entries append after the last.
    await r.saveSnapshot({ meta: { index: 20, term: 1, conf }, data: new Uint8Array([9]) }, 17);
    await r.save({ entries: entries(21, 22, 1) }, true);
    st = await r.load();
    expect(st.entries.map((e) => e.index)).toEqual([18, 19, 20, 21, 22]);
    await expect(r.saveSnapshot({ meta: { index: 22, term: 1, conf }, data: new Uint8Array([9]) }, 23)).rejects.toThrow(/compactedTo 23/);
    await r.close();
    // An old snapshot's tail that no longer joins the log is a gap, not a silent truncation.
    r = await RaftStorage.open(dir);
    await r.saveSnapshot({ meta: { index: 20, term: 1, conf }, data: new Uint8Array([9]) }, 17);
    const db = (r as unknown as { db: { del(k: string): Promise<void> } }).db;
    await db.del('e/0000000000000013'); // entry 19
    const err = await rejection(r.load());
    expect(err.code).toBe('STORAGE_CORRUPT');
    expect(err.message).toMatch(/log gap or misplaced entry .*expected index 19, found 20/);
    await r.close();
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

/** The error a promise rejects with (fails the test if it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; detail?: Record<string, unknown> }> {
  try {
    await p;
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a rejection');
}

/** Flips one bit of the value stored under key, through LevelDB itself. */
async function flipStoredByte(dir: string, key: string): Promise<void> {
  const raw = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
  const v = Uint8Array.from((await raw.get(key))!);
  v[v.length - 1] ^= 0x01;
  await raw.put(key, v);
  await raw.close();
}

/** LevelDB's newest write-ahead log (it holds every write since the store was last opened). */
async function newestLog(dir: string): Promise<string> {
  const logs = (await readdir(dir)).filter((n) => /^\d+\.log$/.test(n)).sort();
  return join(dir, logs[logs.length - 1]);
}

/** Two elections' worth of synced hard state: the last record votes for b in term 2. */
async function twoVotes(dir: string): Promise<void> {
  const s = await RaftStorage.open(dir);
  await s.save({ hardState: { term: 1, vote: 'a', commit: 0 }, entries: entries(1, 3, 1) }, true);
  await s.save({ hardState: { term: 2, vote: 'b', commit: 3 }, entries: [] }, true);
  await s.close();
}

describe('RaftStorage integrity: damage is STORAGE_CORRUPT, never skipped', () => {
  it('a flipped byte in the stored hard state stops the open, naming the key', async () => {
    const dir = await tempDir();
    await twoVotes(dir);
    await flipStoredByte(dir, 'hs');
    const err = await rejection(RaftStorage.open(dir));
    expect(err).toBeInstanceOf(StorageCorruptError);
    expect(err.code).toBe('STORAGE_CORRUPT');
    expect(err.message).toContain('record hs fails its checksum');
    expect(err.message).not.toContain('\n');
    expect(err.detail).toMatchObject({ key: 'hs' });
  });

  it('a flipped byte in a log entry, the snapshot or node-local metadata is reported with its key', async () => {
    const dir = await tempDir();
    const s = await RaftStorage.open(dir);
    await s.save({ hardState: { term: 1, vote: 'a', commit: 0 }, entries: entries(1, 5, 1) }, true);
    await s.saveSnapshot({ meta: { index: 2, term: 1, conf: { voters: ['a'], learners: [] } }, data: new Uint8Array([1, 2, 3]) }, 2);
    await s.putMeta('cluster', { id: 'x' });
    await s.close();
    for (const key of ['e/0000000000000004', 'snap', 'm/cluster']) {
      await flipStoredByte(dir, key);
      const r = await RaftStorage.open(dir);
      const err = await rejection(key === 'm/cluster' ? r.getMeta('cluster') : r.load());
      await r.close();
      expect(err.code).toBe('STORAGE_CORRUPT');
      expect(err.message).toContain(`record ${key} fails its checksum`);
      await flipStoredByte(dir, key); // undo, so the next key is the only damage
    }
  });

  it("a damaged record at the end of LevelDB's newest log is not skipped: the vote it holds is not silently lost", async () => {
    const dir = await tempDir();
    await twoVotes(dir);
    const log = await newestLog(dir);
    const bytes = await readFile(log);
    bytes[bytes.length - 3] ^= 0x01;
    await writeFile(log, bytes);
    const copy = await tempDir();
    await cp(dir, copy, { recursive: true });
    // Omni refuses, names the log, and leaves the evidence in place.
    const err = await rejection(RaftStorage.open(dir));
    expect(err.code).toBe('STORAGE_CORRUPT');
    expect(err.message).toMatch(/LevelDB log \d+\.log is damaged at byte \d+: checksum mismatch/);
    expect((await stat(log)).size).toBe(bytes.length);
    // What LevelDB alone does with it (the outside trial): it drops the record and comes up
    // with the older vote (then deletes the log). Shown on the copy.
    const raw = new Level<string, Uint8Array>(copy, { valueEncoding: 'view' });
    const hs = decodeHardState(unsealRecord('hs', (await raw.get('hs'))!)!);
    await raw.close();
    expect(hs).toEqual({ term: 1, vote: 'a', commit: 0 });
  });

  it('a synced vote cut off the end of the log (it looks like a torn write to LevelDB) is caught by the witness', async () => {
    const dir = await tempDir();
    await twoVotes(dir);
    const log = await newestLog(dir);
    await truncate(log, (await stat(log)).size - 3);
    const err = await rejection(RaftStorage.open(dir));
    expect(err.code).toBe('STORAGE_CORRUPT');
    expect(err.message).toContain('record hs is older than its witness (term 1 is older than the witnessed term 2)');
    expect(err.detail).toMatchObject({ key: 'hs' });
  });

  it('a torn tail after the last synced write is not fatal: the store opens with its synced state', async () => {
    for (const damage of ['cut', 'zeros'] as const) {
      const dir = await tempDir();
      const s = await RaftStorage.open(dir);
      await s.save({ hardState: { term: 2, vote: 'b', commit: 0 }, entries: entries(1, 3, 2) }, true);
      // Commit-index updates are not synced (Raft does not require it): a crash may tear them.
      await s.save({ hardState: { term: 2, vote: 'b', commit: 3 }, entries: [] }, false);
      await s.close();
      const log = await newestLog(dir);
      if (damage === 'cut') await truncate(log, (await stat(log)).size - 3);
      else await writeFile(log, Buffer.concat([await readFile(log), Buffer.alloc(40_000)]));
      const r = await RaftStorage.open(dir);
      const st = await r.load();
      await r.close();
      expect(st.hardState).toEqual({ term: 2, vote: 'b', commit: damage === 'cut' ? 0 : 3 });
      expect(st.entries.map((e) => e.index)).toEqual([1, 2, 3]);
    }
  });

  it('a damaged or missing hard-state witness stops the open', async () => {
    const dir = await tempDir();
    await twoVotes(dir);
    const file = join(dir, WITNESS_FILE);
    const good = await readFile(file, 'utf8');
    await writeFile(file, good.replace('"term":2', '"term":1'));
    expect((await rejection(RaftStorage.open(dir))).message).toContain(`witness ${WITNESS_FILE} fails its checksum`);
    await rm(file);
    expect((await rejection(RaftStorage.open(dir))).message).toContain(`witness ${WITNESS_FILE} is missing`);
    await writeFile(file, good);
    const r = await RaftStorage.open(dir);
    expect((await r.load()).hardState).toEqual({ term: 2, vote: 'b', commit: 3 });
    await r.close();
  });

  it('seals a data dir written before records carried checksums', async () => {
    const dir = await tempDir();
    const raw = new Level<string, Uint8Array>(dir, { valueEncoding: 'view' });
    await raw.put('hs', encodeHardState({ term: 4, vote: 'c', commit: 2 }));
    for (const e of entries(1, 2, 4)) await raw.put(`e/${e.index.toString(16).padStart(16, '0')}`, encodeEntry(e));
    await raw.put('m/cluster', new TextEncoder().encode(JSON.stringify({ id: 'old' })));
    await raw.close();
    const s = await RaftStorage.open(dir);
    const st = await s.load();
    expect(st.hardState).toEqual({ term: 4, vote: 'c', commit: 2 });
    expect(st.entries.map((e) => e.index)).toEqual([1, 2]);
    expect(await s.getMeta('cluster')).toEqual({ id: 'old' });
    await s.close();
    expect(JSON.parse(await readFile(join(dir, WITNESS_FILE), 'utf8'))).toMatchObject({ term: 4, vote: 'c', commit: 2 });
    // Sealed now: a flipped byte is caught.
    await flipStoredByte(dir, 'e/0000000000000002');
    const r = await RaftStorage.open(dir);
    expect((await rejection(r.load())).message).toContain('record e/0000000000000002 fails its checksum');
    await r.close();
  });
});
