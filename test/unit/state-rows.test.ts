// Issue 12, part 1: the replicated state lives in rows on disk, written with the applied index
// (etcd's consistent index), so a restart reads the rows instead of replaying the log, and a
// compaction no longer serialises the whole state.
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { ClusterState, StateRestoreError, encodeCommand, needsValues, type Command } from '../../protocol/cluster/state.js';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { RaftNode } from '../../node/raft/raft-node.js';
import { silentLogger } from '../../node/logger.js';
import { bootstrapState } from '../../protocol/raft/raft.js';
import { waitFor } from '../../node/local-cluster.js';
import { EntryType, type Entry } from '../../protocol/raft/types.js';

const dirs: string[] = [];
const nodes: RaftNode[] = [];
afterEach(async () => {
  for (const n of nodes.splice(0)) await n.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

const enc = (c: Command) => encodeCommand(c);

describe('ClusterState rows', () => {
  it('a state restored from its rows() is the same state', () => {
    const state = new ClusterState();
    for (let i = 1; i < 50; i++) state.apply(i, enc({ type: 'kv.put', key: `a/${i % 7}`, value: String(i) }));
    const again = ClusterState.fromRows(state.appliedIndex, state.rows());
    expect(again.kvList('a/', 100)).toEqual(state.kvList('a/', 100));
    expect(again.appliedIndex).toBe(49);
  });

  it('refuses rows that do not hold (BAD_SNAPSHOT), never loads half of them', () => {
    expect(() => ClusterState.fromRows(5, [['k/a', '{"key":"a"}']])).toThrow(StateRestoreError);
    expect(() => ClusterState.fromRows(5, [['zz', '{}']])).toThrow(/unknown/);
    expect(() => ClusterState.fromRows(5, [['k/a', 'not json']])).toThrow(StateRestoreError);
    // A record stamped after the applied index cannot be in a state at that index.
    expect(() => ClusterState.fromRows(5, [['k/a', '{"createIndex":9,"key":"a","modIndex":9,"value":"v","version":1}']])).toThrow(/applied index/);
  });
});

describe('RaftStorage state rows', () => {
  async function storage(): Promise<RaftStorage> {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-'));
    dirs.push(dir);
    return RaftStorage.open(dir);
  }

  it('saves changed rows with the applied index, deletes, replaces, and reads them back after reopening', async () => {
    const s = await storage();
    expect(await s.loadState()).toBeUndefined();
    await s.saveState(new Map([['k/a', '1'], ['k/b', '2']]), 3, false);
    await s.saveState(new Map([['k/a', null], ['k/c', '3']]), 5, true);
    await s.close();
    const again = await RaftStorage.open(s.dir);
    expect(await again.loadState()).toEqual({ appliedIndex: 5, rows: [['k/b', '2'], ['k/c', '3']] });
    await again.replaceState([['cfg', '{}']], 9);
    expect(await again.loadState()).toEqual({ appliedIndex: 9, rows: [['cfg', '{}']] });
    await again.close();
  });
});

describe('RaftNode over state rows', () => {
  async function openSolo(dir: string, fresh: boolean, applying: Entry[] = []): Promise<RaftNode> {
    const storage = await RaftStorage.open(dir);
    if (fresh) {
      const boot = bootstrapState(['solo']);
      await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    }
    const node = await RaftNode.open({
      id: 'solo',
      storage,
      send: () => undefined,
      log: silentLogger,
      timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 },
      snapshotEveryEntries: 25,
      observer: { applying: (e) => applying.push(e) },
    });
    nodes.push(node);
    return node;
  }

  it('starts from its rows (no replay into the state), compacts without serialising the state, and skips entries the rows hold', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-node-'));
    dirs.push(dir);
    const node = await openSolo(dir, true);
    node.start();
    await waitFor('a leader', () => node.isLeader, 5000, 10);
    for (let i = 0; i < 60; i++) expect((await node.propose(enc({ type: 'kv.put', key: `k${i % 10}`, value: `v${i}` }))).ok).toBe(true);
    const applied = node.state.appliedIndex;
    const want = node.state.snapshot();
    await node.stop();
    nodes.length = 0;
    // storage is closed by nobody else: reopen on the same dir after closing the old handle
    await (node as unknown as { opts: { storage: RaftStorage } }).opts.storage.close();

    const seen: Entry[] = [];
    const again = await openSolo(dir, false, seen);
    // Before start: the state already is what it was, read from the rows.
    expect(again.state.appliedIndex).toBe(applied);
    expect(again.state.snapshot()).toEqual(want);
    again.start();
    await waitFor('a leader again', () => again.isLeader, 5000, 10);
    expect((await again.propose(enc({ type: 'kv.put', key: 'after', value: 'restart' }))).ok).toBe(true);
    expect(again.state.kvGet('k9')?.value).toBe('v59');
    expect(again.state.kvGet('after')?.value).toBe('restart');
    // The log after the last compaction was handed out again and skipped, not applied twice.
    expect(again.state.kvGet('k0')?.version).toBe(6);
  });

  it('a data dir from before rows (state only in the snapshot) is read once and written to rows', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-legacy-'));
    dirs.push(dir);
    const old = new ClusterState();
    old.applyConfChange(1, { type: 'addVoter', node: 'solo' });
    for (let i = 2; i <= 10; i++) old.apply(i, enc({ type: 'kv.put', key: `legacy${i}`, value: 'x' }));
    const storage = await RaftStorage.open(dir);
    await storage.save({ hardState: { term: 1, vote: 'solo', commit: 10 }, entries: [], snapshot: { meta: { index: 10, term: 1, conf: { voters: ['solo'], learners: [] } }, data: old.snapshot() } }, true);
    expect(await storage.loadState()).toBeUndefined();
    await storage.close();

    const node = await openSolo(dir, false);
    expect(node.state.kvCount()).toBe(9);
    node.start();
    await waitFor('a leader', () => node.isLeader, 5000, 10);
    expect((await node.propose(enc({ type: 'kv.put', key: 'new', value: 'y' }))).ok).toBe(true);
    const stored = async () => (await (node as unknown as { opts: { storage: RaftStorage } }).opts.storage.loadState())!;
    await waitFor('rows written', async () => (await stored()).rows.some(([r, v]) => r.startsWith('i/') && typeof v === 'string' && v.includes('"new"')), 5000, 10);
    const rows = (await stored()).rows;
    expect(rows.filter(([, v]) => typeof v === 'string' && v.includes('legacy'))).toHaveLength(1);
    expect(ClusterState.fromRows(node.state.appliedIndex, rows).kvCount()).toBe(10);
  });
});

describe('spilled kv values (on disk only)', () => {
  it('a state that spills keeps large values out of memory, compares them when given them, and lists them as rows', () => {
    const s = new ClusterState({ spillValuesOverBytes: 8 });
    s.apply(1, enc({ type: 'kv.put', key: 'big', value: 'x'.repeat(100) }));
    s.apply(2, enc({ type: 'kv.put', key: 'small', value: 'tiny' }));
    s.apply(3, enc({ type: 'kv.put', key: 'apps/web', value: 'y'.repeat(100) }));
    expect(s.kvInMemory('big')).toBeUndefined();
    expect(() => s.kvGet('big')).toThrow(/on disk/);
    expect(s.kvGet('small')?.value).toBe('tiny');
    // A key of the cluster's own records stays in memory whatever its size.
    expect(s.kvGet('apps/web')?.value).toHaveLength(100);
    expect(s.kvMeta('big')).toMatchObject({ key: 'big', version: 1, modIndex: 1 });
    const rows = s.takeChangedRows();
    expect(rows.get('v/big')).toBe('x'.repeat(100));
    expect([...rows].filter(([, v]) => typeof v === 'string' && v.includes('xxxx')).map(([r]) => r)).toEqual(['v/big']);
    // Compare-and-set on a spilled value: the state asks for it (nothing applied), then compares it.
    const cas = (value: string, put: string) => enc({ type: 'kv.txn', compares: [{ key: 'big', value }, { key: 'small', value: 'tiny' }], ops: [{ op: 'put', key: 'big', value: put }] });
    const asked = s.apply(4, cas('x'.repeat(99), 'no'));
    expect(needsValues(asked) && asked.needsValues).toEqual(['big']);
    expect(s.appliedIndex).toBe(3);
    expect(s.apply(4, cas('x'.repeat(99), 'no'), new Map([['big', 'x'.repeat(100)]]))).toMatchObject({ ok: false, error: { code: 'CONFLICT' } });
    expect(s.appliedIndex).toBe(4);
    expect(s.apply(5, cas('x'.repeat(100), 'z'.repeat(50)), new Map([['big', 'x'.repeat(100)]])).ok).toBe(true);
    const later = s.takeChangedRows();
    expect(later.get('v/big')).toBe('z'.repeat(50));
    // Loaded from its rows without the value rows: the values stay on disk.
    const disk = new Map([...rows, ...later].filter((e): e is [string, string] => e[1] !== null));
    const loaded = ClusterState.fromRows(5, [...disk].filter(([r]) => !r.startsWith('v/')), { spillValuesOverBytes: 8 });
    expect(loaded.kvMeta('big')?.version).toBe(2);
    expect(needsValues(loaded.apply(6, enc({ type: 'kv.txn', compares: [{ key: 'big', value: 'z'.repeat(50) }], ops: [] })))).toBe(true);
    // A state that keeps everything gets the values back from the value rows: a whole snapshot.
    const whole = ClusterState.fromRows(5, disk);
    expect(whole.kvGet('big')?.value).toBe('z'.repeat(50));
  });

  it('RaftNode reads spilled values from its rows, also after a restart (they are never loaded)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-spill-'));
    dirs.push(dir);
    const open = async (fresh: boolean) => {
      const storage = await RaftStorage.open(dir);
      if (fresh) {
        const boot = bootstrapState(['solo']);
        await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
      }
      const node = await RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger, timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 }, snapshotEveryEntries: 10 });
      nodes.push(node);
      node.start();
      await waitFor('a leader', () => node.isLeader, 5000, 10);
      return { node, storage };
    };
    const a = await open(true);
    const big = (i: number) => `${i}:${'v'.repeat(1000)}`;
    for (let i = 0; i < 30; i++) expect((await a.node.propose(enc({ type: 'kv.put', key: `big/${i % 5}`, value: big(i) }))).ok).toBe(true);
    expect(a.node.state.kvInMemory('big/0')).toBeUndefined();
    expect((await a.node.kvGet('big/4'))?.value).toBe(big(29));
    expect((await a.node.kvList('big/', 10)).map((r) => r.value)).toEqual([25, 26, 27, 28, 29].map(big));
    await a.node.stop();
    nodes.length = 0;
    await a.storage.close();
    const loadedRows = await (async () => {
      const s = await RaftStorage.open(dir);
      const st = await s.loadState();
      await s.close();
      return st!.rows.map(([r]) => r);
    })();
    expect(loadedRows.some((r) => r.startsWith('v/'))).toBe(false);
    const b = await open(false);
    expect((await b.node.kvGet('big/0'))?.value).toBe(big(25));
    expect(await b.node.kvGet('missing')).toBeUndefined();
  });
});

describe('spilled values read back', () => {
  it('a value read from the rows is kept for the next reads while its key is unchanged; a change is read anew', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-cache-'));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    const boot = bootstrapState(['solo']);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    const rowReads: string[][] = [];
    const read = storage.readStateRows.bind(storage);
    storage.readStateRows = (rows) => (rowReads.push([...rows]), read(rows));
    const node = await RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger, timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 }, snapshotEveryEntries: 1000 });
    nodes.push(node);
    node.start();
    await waitFor('a leader', () => node.isLeader, 5000, 10);
    const put = async (key: string, value: string) => expect((await node.propose(enc({ type: 'kv.put', key, value }))).ok).toBe(true);
    const big = (tag: string) => `${tag}:${'v'.repeat(1000)}`;
    await put('hot', big('a'));
    await put('other', big('o'));
    // wait until the rows are written (the values are no longer pending)
    await waitFor('rows written', async () => (await storage.readStateRows(['v/hot', 'v/other'])).join() === [big('a'), big('o')].join(), 5000, 10);
    rowReads.length = 0;
    expect((await node.kvGet('hot'))?.value).toBe(big('a'));
    expect(rowReads).toEqual([['v/hot']]);
    for (let i = 0; i < 5; i++) expect((await node.kvGet('hot'))?.value).toBe(big('a'));
    expect((await node.kvList('', 10)).map((r) => r.value)).toEqual([big('a'), big('o')]);
    expect(rowReads).toEqual([['v/hot'], ['v/other']]); // 'hot' from memory, 'other' read once
    await put('hot', big('b'));
    await waitFor('rows written', async () => (await storage.readStateRows(['v/hot']))[0] === big('b'), 5000, 10);
    expect((await node.kvGet('hot'))?.value).toBe(big('b'));
    expect((await node.kvGet('hot'))?.version).toBe(2);
  });
});

describe('rows of the format before pages (one k/ row per kv key)', () => {
  // As a node of the previous release wrote them: canonical JSON, spilled values with a hex hash.
  const legacyRows = (): [string, string][] => [
    ['cfg', '{"clusterId":"c1","ephemeralRoot":false,"rootNodeId":"","rootRetired":false,"voterTarget":3}'],
    ['k/big', `{"createIndex":2,"key":"big","modIndex":3,"sizeBytes":160,"valueHash":"${createHash('sha256').update('x'.repeat(100)).digest('hex')}","version":2}`],
    ['k/small', '{"createIndex":4,"key":"small","modIndex":4,"value":"tiny","version":1}'],
    ['k/tasks/web-1', `{"createIndex":5,"key":"tasks/web-1","modIndex":5,"value":${JSON.stringify(JSON.stringify({ id: 'web-1', app: 'web', version: 1, nodeId: 'n1', hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' }))},"version":1}`],
    ['v/big', 'x'.repeat(100)],
  ];

  it('are read (their hashes dropped) and replaced by pages at the next takeChangedRows()', () => {
    const opts = { spillValuesOverBytes: 8 };
    const s = ClusterState.fromRows(6, legacyRows().filter(([r]) => !r.startsWith('v/')), opts);
    expect(s.kvCount()).toBe(3);
    expect(s.kvMeta('big')).toEqual({ key: 'big', version: 2, createIndex: 2, modIndex: 3, sizeBytes: 160 });
    expect(s.kvInMemory('small')?.value).toBe('tiny');
    expect(s.taskKeysOnNode('n1')).toEqual(['tasks/web-1']);
    expect(s.sizeBytes).toBeGreaterThan(160);
    expect(s.hasChangedRows).toBe(true);
    const rows = s.takeChangedRows();
    expect(rows.get('k/big')).toBeNull();
    expect(rows.get('k/small')).toBeNull();
    expect(rows.get('k/tasks/web-1')).toBeNull();
    expect([...rows.keys()].filter((r) => r.startsWith('i/'))).toHaveLength(1);
    const disk = new Map<string, RowValue>(legacyRows());
    for (const [row, v] of rows) (v === null ? disk.delete(row) : disk.set(row, v));
    expect([...disk.keys()].some((r) => r.startsWith('k/'))).toBe(false);
    const again = ClusterState.fromRows(6, [...disk].filter(([r]) => !r.startsWith('v/')), opts);
    expect(again.hasChangedRows).toBe(false);
    expect(again.sizeBytes).toBe(s.sizeBytes);
    expect(again.taskKeysOnNode('n1')).toEqual(['tasks/web-1']);
    // Compare-on-value reads the value row.
    const txn = (value: string) => enc({ type: 'kv.txn', compares: [{ key: 'big', value }], ops: [] });
    expect(again.apply(7, txn('x'.repeat(100)), new Map([['big', disk.get('v/big') as string]])).ok).toBe(true);
    expect(again.apply(8, txn('x'.repeat(99)), new Map([['big', disk.get('v/big') as string]])).ok).toBe(false);
    // Whole (no spilling): the value row comes back into the record.
    expect(ClusterState.fromRows(6, legacyRows()).kvGet('big')?.value).toBe('x'.repeat(100));
    expect(ClusterState.fromRows(6, disk).snapshot()).toEqual(ClusterState.fromRows(6, legacyRows()).snapshot());
  });

  it('a bad legacy row, or a key both in a page and in a k/ row, is refused', () => {
    const bad = legacyRows().map(([r, v]): [string, string] => [r, r === 'k/big' ? v.replace(/"valueHash":"[0-9a-f]+"/, '"valueHash":7') : v]);
    expect(() => ClusterState.fromRows(6, bad, { spillValuesOverBytes: 8 })).toThrow(/valueHash/);
    const s = ClusterState.fromRows(6, legacyRows(), { spillValuesOverBytes: 8 });
    const pages = [...s.takeChangedRows()].filter((e): e is [string, string] => e[0].startsWith('i/') && e[1] !== null);
    expect(() => ClusterState.fromRows(6, [...legacyRows(), ...pages], { spillValuesOverBytes: 8 })).toThrow(/duplicate key/);
  });

  it('RaftNode converts a data dir of k/ rows to pages at start, in one batch, and serves the same records', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-krows-'));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    const boot = bootstrapState(['solo']);
    await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
    const legacy = new Map<string, string | null>(legacyRows());
    await storage.saveState(legacy, 6, true);
    // The log must reach the rows' applied index: entries 2..6 (no-ops) after the bootstrap entry.
    await storage.save({ hardState: { term: 1, vote: 'solo', commit: 6 }, entries: [2, 3, 4, 5, 6].map((index) => ({ index, term: 1, type: 0, data: new Uint8Array() })) }, true);
    const node = await RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger, timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 } });
    nodes.push(node);
    const stored = (await storage.loadState())!;
    expect(stored.rows.filter(([r]) => r.startsWith('k/'))).toEqual([]);
    expect(stored.rows.filter(([r]) => r.startsWith('i/'))).toHaveLength(1);
    expect(stored.appliedIndex).toBe(6);
    node.start();
    await waitFor('a leader', () => node.isLeader, 5000, 10);
    expect((await node.kvGet('big'))?.value).toBe('x'.repeat(100));
    expect((await node.kvGet('small'))?.value).toBe('tiny');
    expect((await node.propose(enc({ type: 'kv.txn', compares: [{ key: 'big', value: 'x'.repeat(100) }], ops: [{ op: 'put', key: 'big', value: 'y'.repeat(70) }] }))).ok).toBe(true);
    expect((await node.kvGet('big'))?.value).toBe('y'.repeat(70));
  });
});

describe('a start refuses a store it cannot trust', () => {
  it('a stored log tail whose term disagrees with the snapshot: STORAGE_CORRUPT, not a crash', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-tail-term-'));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    await storage.saveState(new Map([['cfg', '{"clusterId":"","ephemeralRoot":false,"rootNodeId":"","rootRetired":false,"voterTarget":3}']]), 4, true);
    const log: Entry[] = [1, 2, 3, 4, 5].map((index) => ({ term: 1, index, type: EntryType.Normal, data: new Uint8Array(0) }));
    await storage.save({ hardState: { term: 2, vote: '', commit: 4 }, entries: log }, true);
    // The snapshot says index 4 has term 2; the tail kept with it has term 1 there.
    await storage.saveSnapshot({ meta: { index: 4, term: 2, conf: { voters: ['solo'], learners: [] } }, data: new TextEncoder().encode('{"format":"omni.state-in-rows","version":1}') }, 2);
    const err = await RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger }).then(() => undefined, (e: Error & { code?: string }) => e);
    await storage.close();
    expect(err?.code).toBe('STORAGE_CORRUPT');
    expect(err?.message).toMatch(/the stored log does not hold together: restored entry 4 has term 1, the snapshot at that index term 2/);
  });

  it('state rows behind the start of the log (entries in between lost), and rows that do not hold', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-behind-'));
    dirs.push(dir);
    const storage = await RaftStorage.open(dir);
    await storage.saveState(new Map([['cfg', '{"clusterId":"","ephemeralRoot":false,"rootNodeId":"","rootRetired":false,"voterTarget":3}']]), 3, true);
    await storage.saveSnapshot({ meta: { index: 10, term: 1, conf: { voters: ['solo'], learners: [] } }, data: new TextEncoder().encode('{"format":"omni.state-in-rows","version":1}') }, 10);
    const open = () => RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger });
    await expect(open()).rejects.toThrow(/applied up to index 3, but the log starts after 10/);
    const page = (key: string, value: string) => `[1,1,5,"${key}","${key}"]\n[["${key}"],[1,1,1,5,0],[${value}]]`;
    await storage.saveState(new Map([['i/1', page('a', '"x"')], ['i/2', page('u', '"x"')], ['i/3', page('w', '"x"')], ['i/4', page('z', '1')]]), 12, true);
    // The last page's header holds, its columns do not: found when it is used (a start reads the
    // pages from apps/ to just past volumes/, for the typed tables: protocol/apps/tables.ts).
    const node = await open();
    expect(node.state.kvCount()).toBe(4);
    expect(node.state.kvMeta('u')?.sizeBytes).toBe(5);
    expect(() => node.state.kvMeta('z')).toThrow(/kv page i\/4 is corrupt: .*value/);
    // Found at start when the start uses it (the pages around tasks/ are read for the tables).
    await storage.saveState(new Map([['i/2', page('u', '1')]]), 12, true);
    await expect(open()).rejects.toThrow(/cannot be read: .*kv page i\/2 is corrupt/);
    await storage.saveState(new Map([['i/2', 'not a page']]), 12, true);
    await expect(open()).rejects.toThrow(/cannot be read: .*must start with a line/);
    await storage.close();
  });
});

describe('values that start with U+FEFF', () => {
  it('keep it through the rows on disk (spilled) and in pages (in memory)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-bom-'));
    dirs.push(dir);
    const s = new ClusterState({ spillValuesOverBytes: 8 });
    s.apply(1, enc({ type: 'kv.put', key: 'spilled', value: '\uFEFF' + 'z'.repeat(50) }));
    s.apply(2, enc({ type: 'kv.put', key: 'kept', value: '\uFEFFab' }));
    const storage = await RaftStorage.open(dir);
    await storage.saveState(s.takeChangedRows(), 2, true);
    expect(await storage.readStateRows(['v/spilled'])).toEqual(['\uFEFF' + 'z'.repeat(50)]);
    const stored = await storage.streamState();
    const reader = ClusterState.rowsReader(stored!.appliedIndex, { spillValuesOverBytes: 8 });
    for await (const batch of stored!.batches) reader.add(batch);
    expect(reader.finish().kvGet('kept')?.value).toBe('\uFEFFab');
    expect(ClusterState.fromRows(2, (await storage.loadState(true))!.rows).kvGet('spilled')?.value).toBe('\uFEFF' + 'z'.repeat(50));
    await storage.close();
  });
});

describe('compare-on-value of values kept on disk only (RaftNode reads them for the state)', () => {
  it('compares the newest value: applied in the same Ready, not written yet, written, and after a restart', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-rows-cas-'));
    dirs.push(dir);
    const open = async (fresh: boolean) => {
      const storage = await RaftStorage.open(dir);
      if (fresh) {
        const boot = bootstrapState(['solo']);
        await storage.save({ hardState: boot.hardState, entries: boot.entries }, true);
      }
      const node = await RaftNode.open({ id: 'solo', storage, send: () => undefined, log: silentLogger, timing: { tickMs: 10, electionTick: 10, heartbeatTick: 1 } });
      nodes.push(node);
      node.start();
      await waitFor('a leader', () => node.isLeader, 5000, 10);
      return { node, storage };
    };
    const v = (n: number) => `${n}`.repeat(100);
    const cas = (from: string, to: string) => enc({ type: 'kv.txn', compares: [{ key: 'big', value: from }], ops: [{ op: 'put', key: 'big', value: to }] });
    const a = await open(true);
    // Proposed together: the compares meet values applied moments before, in the same Ready or the next.
    const results = await Promise.all([
      a.node.propose(enc({ type: 'kv.put', key: 'big', value: v(1) })),
      a.node.propose(cas(v(1), v(2))),
      a.node.propose(cas(v(1), v(3))),
      a.node.propose(cas(v(2), v(4))),
    ]);
    expect(results.map((r) => r.ok)).toEqual([true, true, false, true]);
    expect(a.node.state.kvInMemory('big')).toBeUndefined();
    expect((await a.node.kvGet('big'))?.value).toBe(v(4));
    expect((await a.node.propose(cas(v(4), v(5)))).ok).toBe(true);
    await a.node.stop();
    nodes.length = 0;
    await a.storage.close();
    const b = await open(false);
    expect((await b.node.propose(cas(v(4), v(6)))).ok).toBe(false);
    expect((await b.node.propose(cas(v(5), v(6)))).ok).toBe(true);
    expect((await b.node.kvGet('big'))?.version).toBe(5);
  });
});

describe('tasks-by-node index', () => {
  it('follows task records as they are placed, moved and deleted, and is rebuilt from rows', () => {
    const s = new ClusterState();
    const task = (id: string, nodeId: string) => JSON.stringify({ id, app: 'web', version: 1, nodeId, hostPorts: [], desired: 'run', createdAtMs: 0, stopReason: '' });
    s.apply(1, enc({ type: 'kv.put', key: 'tasks/web-1', value: task('web-1', 'n1') }));
    s.apply(2, enc({ type: 'kv.put', key: 'tasks/web-2', value: task('web-2', 'n2') }));
    s.apply(3, enc({ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: 'tasks/web-3', value: task('web-3', 'n1') }, { op: 'put', key: 'tasks/web-2', value: task('web-2', 'n1') }] }));
    s.apply(4, enc({ type: 'kv.put', key: 'other/x', value: task('x', 'n1') }));
    expect(s.taskKeysOnNode('n1')).toEqual(['tasks/web-1', 'tasks/web-2', 'tasks/web-3']);
    expect(s.taskKeysOnNode('n2')).toEqual([]);
    s.apply(5, enc({ type: 'kv.delete', key: 'tasks/web-1' }));
    expect(s.taskKeysOnNode('n1')).toEqual(['tasks/web-2', 'tasks/web-3']);
    expect(ClusterState.fromRows(s.appliedIndex, s.rows()).taskKeysOnNode('n1')).toEqual(['tasks/web-2', 'tasks/web-3']);
    expect(ClusterState.restore(s.snapshot()).taskKeysOnNode('n1')).toEqual(['tasks/web-2', 'tasks/web-3']);
  });
});
