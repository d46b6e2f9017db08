// Issue 12: the apps' records (apps/, tasks/, taskstatus/) in protobuf rows of their own —
// the codec (exact JSON text back, or the text kept as it is), the state's record rows (no record
// inside a kv page), a store written before them moved over at start, and binary rows through
// LevelDB and a streamed snapshot.
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeRecord, encodeRecordText, recordJson, renderRecord } from '../../protocol/apps/record-codec.js';
import type { AppRecord, TaskRecord, TaskStatusRecord } from '../../protocol/apps/model.js';
import { ClusterState, decodeCommand, encodeCommand, StateRestoreError, type Command } from '../../protocol/cluster/state.js';
import protobuf from 'protobufjs';
import { OMNI_PROTO } from '../../protocol/codec.js';
import { KvIndex } from '../../protocol/cluster/kv-index.js';
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { RaftStorage } from '../../node/raft/raft-storage.js';
import { APPLIED_ROW } from '../../node/raft/state-storage.js';

const app: AppRecord = {
  name: 'web',
  version: 3,
  previousVersion: 2,
  latestVersion: 3,
  state: 'running',
  deploy: { status: 'deploying', fromVersion: 2, startedAtMs: 1_765_000_000_000, message: 'rolling 1/3' },
  pending: '',
  events: [{ atMs: 1_765_000_000_001, message: 'deployed v3 — “quoted”, ünïcode, 🚀' }],
  failures: { count: 2, notBeforeMs: 1_765_000_005_000, recent: [{ nodeId: 'QmA', node: 'n1', cause: 'exit 1', atMs: 1_765_000_000_002 }] },
  failedReason: '',
  job: {
    version: 3, run: 2, status: 'running', succeeded: 1, failures: 1, attempts: 3, notBeforeMs: 0, startedAtMs: 5, finishedAtMs: 0, activeSinceMs: 7, reason: '',
    history: [{ run: 1, taskId: 'web-1', node: 'n1', outcome: 'failed', exitCode: -9, cause: 'killed', startedAtMs: 1, finishedAtMs: 2 }, { run: 2, taskId: 'web-2', node: 'n2', outcome: 'lost', exitCode: null, cause: 'node down', startedAtMs: 3, finishedAtMs: 4 }],
    runs: [{ run: 1, version: 2, status: 'replaced', succeeded: 0, failures: 1, attempts: 1, startedAtMs: 1, finishedAtMs: 2, reason: 'new version' }],
  },
  cron: {
    lastScheduledMs: 60_000, sinceMs: 0, lastRun: 4, off: false, offFromVersion: 0, resume: true, trigger: { requestedAtMs: 99 },
    active: [{ version: 3, run: 4, status: 'running', succeeded: 0, failures: 0, attempts: 1, notBeforeMs: 0, startedAtMs: 60_001, finishedAtMs: 0, reason: '', history: [], runs: [], scheduledMs: 60_000, firedAtMs: 60_001 }],
    runs: [{ run: 3, scheduledMs: 0, firedAtMs: 1, finishedAtMs: 2, status: 'failed', version: 3, attempts: 2, failures: 2, exitCodes: [1, null, -1], reason: 'exit 1' }],
    missed: 1, skipped: 0, pending: 'no node has 2 GPUs',
  },
};
const task: TaskRecord = { id: 'web-3-abc', app: 'web', version: 3, nodeId: 'QmNode', hostPorts: [8080, 9090], desired: 'run', createdAtMs: 1_765_000_000_000, stopReason: '', run: 4, scheduledMs: 60_000 };
const status: TaskStatusRecord = {
  id: 'web-3-abc', state: 'running', health: 'healthy', exitCode: null, reason: '', restarts: 1, startedAtMs: 10, updatedAtMs: 20,
  cause: '', stable: true, portsInUse: [], lastOutput: ['line 1', ''], healthLog: ['exit 1: boom'], released: false, workspace: { bytes: 1234, overLimit: 'over 1 KiB' }, kernels: { total: 2, busy: 0 },
};
const minimalStatus: TaskStatusRecord = { id: 't', state: 'exited', health: 'none', exitCode: 0, reason: 'done', restarts: 0, startedAtMs: 0, updatedAtMs: 0 };

const enc = (c: Command) => encodeCommand(c);

describe('record codec', () => {
  it('keeps every field of each kind of record and renders back exactly the text the writers write', () => {
    for (const [kind, rec] of [['app', app], ['task', task], ['status', status], ['status', minimalStatus], ['app', { ...app, job: undefined, cron: undefined, failures: undefined, failedReason: undefined }]] as const) {
      const text = recordJson(kind, rec as never);
      expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(rec)));
      const bytes = encodeRecordText(kind, text);
      expect(bytes, `${kind} ${text}`).toBeDefined();
      expect(bytes!.length).toBeLessThan(text.length);
      expect(renderRecord(kind, bytes!)).toBe(text);
      expect(decodeRecord(kind, bytes!)).toEqual(JSON.parse(text));
    }
  });

  it('keeps as text what has no exact protobuf form', () => {
    const text = recordJson('task', task);
    const other: string[] = [
      JSON.stringify({ ...task, zz: 1 }), // a field the schema does not have
      JSON.stringify(Object.assign({ app: task.app }, task)), // another field order
      text.replace('"version":3', '"version":3.5'), // not an integer
      text.replace('"version":3', '"version":"3"'), // another type
      text.replace('"version":3', '"version":9007199254740993'), // past 2^53
      text.replace('"app":"web"', '"app":"\\ud800"'), // a lone surrogate
      text.replace('"hostPorts":[8080,9090]', '"hostPorts":[8080,null]'),
      text.replace(',"stopReason":""', ''), // a field every record has, missing
      text.replace('{', '{ '), // whitespace
      '[1,2]', 'null', 'not json', '',
    ];
    for (const t of other) expect(encodeRecordText('task', t), t).toBeUndefined();
    // Times may be fractional (a JavaScript clock): kept exactly, in protobuf.
    const fractional = recordJson('task', { ...task, createdAtMs: 1_767_225_600_535.1614 });
    expect(renderRecord('task', encodeRecordText('task', fractional)!)).toBe(fractional);
    // A status whose exitCode is absent, rather than null, is kept exactly too (as text).
    const noExit = JSON.stringify({ ...minimalStatus, exitCode: undefined });
    expect(encodeRecordText('status', noExit) === undefined || renderRecord('status', encodeRecordText('status', noExit)!) === noExit).toBe(true);
    // A record with an unknown field is written as it is by recordJson.
    const extra = { ...task, future: 1 } as unknown as TaskRecord;
    expect(recordJson('task', extra)).toBe(JSON.stringify(extra));
  });

  it('refuses bytes that are not a record', () => {
    expect(() => decodeRecord('task', new Uint8Array([0x0a, 0xff]))).toThrow(/task record/);
  });
});

describe('records in commands (command schema 4)', () => {
  const put = (key: string, value: string): Command => ({ type: 'kv.put', key, value });
  it('a put of a record carries its protobuf, which every replica reads back as the same text', () => {
    const text = recordJson('status', status);
    const asText = encodeCommand(put(`taskstatus/${task.id}`, text));
    const asRecord = encodeCommand(put(`taskstatus/${task.id}`, text), { records: true });
    expect(asRecord.length).toBeLessThan(asText.length / 2);
    expect(decodeCommand(asText)).toEqual({ ok: true, command: put(`taskstatus/${task.id}`, text) });
    expect(decodeCommand(asRecord)).toEqual({ ok: true, command: put(`taskstatus/${task.id}`, text), usesRecords: true });
    const txn: Command = { type: 'kv.txn', compares: [{ key: 'apps/web', version: 1 }], ops: [{ op: 'put', key: 'apps/web', value: recordJson('app', app) }, { op: 'put', key: 'user', value: '{}' }, { op: 'delete', key: 'x' }] };
    expect(decodeCommand(encodeCommand(txn, { records: true }))).toEqual({ ok: true, command: txn, usesRecords: true });
    // Text with no exact protobuf form, and keys outside the record prefixes, travel as text.
    expect(encodeCommand(put('tasks/x', '{"odd": 1}'), { records: true })).toEqual(encodeCommand(put('tasks/x', '{"odd": 1}')));
    expect(encodeCommand(put('user/x', text), { records: true })).toEqual(encodeCommand(put('user/x', text)));
    // Applied from either form, the state is the same.
    const a = new ClusterState();
    const b = new ClusterState();
    a.apply(1, asText);
    b.apply(1, asRecord);
    expect(b.kvList('', 10)).toEqual(a.kvList('', 10));
    expect(b.sizeBytes).toBe(a.sizeBytes);
    expect(b.kvGet(`taskstatus/${task.id}`)?.value).toBe(text);
  });

  it('an entry with a record in protobuf raises the schema floor: no older omnid may join from then on', () => {
    const s = new ClusterState();
    s.apply(1, enc({ type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: '', ephemeralRoot: false }));
    s.apply(2, encodeCommand(put(`taskstatus/${task.id}`, recordJson('status', status))));
    expect(s.config().minSchema).toBeUndefined();
    s.apply(3, encodeCommand(put(`taskstatus/${task.id}`, recordJson('status', { ...status, restarts: 9 })), { records: true }));
    expect(s.config().minSchema).toBe(4);
    expect([...s.takeChangedRows().keys()]).toContain('cfg');
    // Restored from its rows, the floor stays.
    expect(ClusterState.fromRows(s.appliedIndex, s.rows()).config().minSchema).toBe(4);
  });

  it('reads a record only in the form this build writes it, and within a rendering budget', () => {
    const Command = protobuf.parse(OMNI_PROTO).root.lookupType('omni.Command');
    const raw = (record: Uint8Array) => new Uint8Array([0, ...Command.encode({ kvPut: { key: 'tasks/x', record } }).finish()]);
    const good = encodeRecordText('task', recordJson('task', task))!;
    // Its own buffer: not a view into protobufjs' shared pool (which a kept record would pin).
    expect(good.buffer.byteLength).toBe(good.byteLength);
    expect(decodeCommand(raw(good)).ok).toBe(true);
    // The same record with an unknown field (a newer build's), or its fields in another order.
    expect(decodeCommand(raw(new Uint8Array([...good, 0xf8, 0x06, 0x01])))).toMatchObject({ ok: false, error: { message: expect.stringMatching(/form this omnid writes/) } });
    const TaskRec = protobuf.parse(OMNI_PROTO).root.lookupType('omni.TaskRec');
    const idFirst = TaskRec.encode({ id: task.id }).finish();
    const rest = TaskRec.encode({ ...task, id: '' }).finish();
    expect(decodeCommand(raw(new Uint8Array([...rest, ...idFirst]))).ok).toBe(false);
    // A few bytes standing for a huge rendering (empty runs in progress): refused, not rendered.
    const AppRec = protobuf.parse(OMNI_PROTO).root.lookupType('omni.AppRec');
    const many = AppRec.encode({ name: 'x', cron: { active: Array.from({ length: 20_000 }, () => ({})) } }).finish();
    expect(many.byteLength).toBeLessThan(100_000);
    expect(decodeCommand(new Uint8Array([0, ...Command.encode({ kvPut: { key: 'apps/x', record: many } }).finish()]))).toMatchObject({ ok: false, error: { message: expect.stringMatching(/^record: not a app record/) } });
  });

  it('refuses a record under another key, and bytes that are no record, the same on every replica', () => {
    const Command = protobuf.parse(OMNI_PROTO).root.lookupType('omni.Command');
    const raw = (key: string, record: Uint8Array) => new Uint8Array([...encodeCommand(put('k', '')).subarray(0, 1), ...Command.encode({ kvPut: { key, record } }).finish()]);
    const good = encodeRecordText('task', recordJson('task', task))!;
    expect(decodeCommand(raw('tasks/x', good))).toMatchObject({ ok: true, command: { key: 'tasks/x', value: recordJson('task', task) } });
    expect(decodeCommand(raw('user/x', good))).toMatchObject({ ok: false, error: { code: 'INVALID_COMMAND', message: expect.stringMatching(/^record: a record is only for keys under apps\//) } });
    expect(decodeCommand(raw('tasks/x', new Uint8Array([0x0a, 0xff])))).toMatchObject({ ok: false, error: { message: expect.stringMatching(/not a task record/) } });
    const s = new ClusterState();
    expect(s.apply(1, raw('user/x', good)).ok).toBe(false);
    expect(s.kvCount()).toBe(0);
  });
});

function withRecords(): ClusterState {
  const s = new ClusterState();
  let i = 1;
  s.apply(i++, enc({ type: 'kv.put', key: 'apps/web', value: recordJson('app', app) }));
  s.apply(i++, enc({ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: `tasks/${task.id}`, value: recordJson('task', task) }, { op: 'put', key: 'appspecs/web/00000003', value: '{"name":"web"}' }] }));
  s.apply(i++, enc({ type: 'kv.put', key: `taskstatus/${task.id}`, value: recordJson('status', status) }));
  s.apply(i++, enc({ type: 'kv.put', key: 'taskstatus/odd', value: '{"state": "written by hand"}' }));
  s.apply(i++, enc({ type: 'kv.put', key: 'tasks0', value: 'after every task key' }));
  s.apply(i++, enc({ type: 'kv.put', key: 'app', value: 'before apps/' }));
  return s;
}

const pagesText = (rows: Map<string, RowValue | null> | [string, RowValue][]): string => [...rows].filter(([r]) => r.startsWith('i/')).map(([, v]) => String(v)).join('\n');

describe('record rows in the state', () => {
  it('keeps each record in a protobuf row of its own, none in a kv page, and reads back the exact text', () => {
    const s = withRecords();
    const rows = s.takeChangedRows();
    const recordRows = [...rows].filter(([r]) => r.startsWith('r/'));
    expect(recordRows.map(([r]) => r).sort()).toEqual(['r/apps/web', `r/tasks/${task.id}`, 'r/taskstatus/odd', `r/taskstatus/${task.id}`]);
    for (const [, v] of recordRows) expect(v).toBeInstanceOf(Uint8Array);
    // No record inside a page: the pages hold the other keys only.
    const pages = pagesText(rows);
    expect(pages).toContain('appspecs/web/00000003');
    expect(pages).not.toContain('apps/web"');
    expect(pages).not.toContain(task.id);
    // The kv API reads the text that was written, byte for byte, in key order across both stores.
    expect(s.kvGet('apps/web')?.value).toBe(recordJson('app', app));
    expect(s.kvGet('taskstatus/odd')?.value).toBe('{"state": "written by hand"}');
    expect(s.recordsKeptAsText()).toEqual(['taskstatus/odd']);
    expect(s.kvList('', 100).map((r) => r.key)).toEqual(['app', 'apps/web', 'appspecs/web/00000003', `tasks/${task.id}`, 'tasks0', 'taskstatus/odd', `taskstatus/${task.id}`]);
    expect(s.kvList('tasks', 100).map((r) => r.key)).toEqual([`tasks/${task.id}`, 'tasks0', 'taskstatus/odd', `taskstatus/${task.id}`]);
    expect(s.kvList('tasks/', 100).map((r) => r.key)).toEqual([`tasks/${task.id}`]);
    expect(s.kvList('apps', 100).map((r) => r.key)).toEqual(['apps/web', 'appspecs/web/00000003']);
    expect(s.kvList('appspecs/', 100).map((r) => r.key)).toEqual(['appspecs/web/00000003']);
    expect(s.kvList('taskstatus/o', 100).map((r) => r.key)).toEqual(['taskstatus/odd']);
    expect(s.kvList('', 2).map((r) => r.key)).toEqual(['app', 'apps/web']);
    // The typed tables read the protobuf records.
    expect(s.tables.task(task.id)).toEqual(task);
    expect(s.tables.status(task.id)).toEqual(JSON.parse(JSON.stringify(status)));
    expect(s.tables.app('web')?.cron?.runs[0].exitCodes).toEqual([1, null, -1]);
    expect(s.taskKeysOnNode('QmNode')).toEqual([`tasks/${task.id}`]);
    // A start from the rows (and from the whole listing) is the same state.
    const again = ClusterState.fromRows(s.appliedIndex, [...rows].filter((r): r is [string, RowValue] => r[1] !== null));
    expect(again.hasChangedRows).toBe(false);
    expect(again.snapshot()).toEqual(s.snapshot());
    expect(again.sizeBytes).toBe(s.sizeBytes);
    expect(again.tables.task(task.id)).toEqual(task);
    expect(ClusterState.fromRows(s.appliedIndex, s.rows()).snapshot()).toEqual(s.snapshot());
    expect(ClusterState.restore(s.snapshot()).snapshot()).toEqual(s.snapshot());
  });

  it('a status update writes its one record row, and versions, compares and deletes work on records as on any key', () => {
    const s = withRecords();
    s.takeChangedRows();
    const next = recordJson('status', { ...status, restarts: 2 });
    expect(s.apply(7, enc({ type: 'kv.txn', compares: [{ key: `taskstatus/${task.id}`, version: 1 }, { key: `taskstatus/${task.id}`, value: recordJson('status', status) }], ops: [{ op: 'put', key: `taskstatus/${task.id}`, value: next }] })).ok).toBe(true);
    expect([...s.takeChangedRows().keys()]).toEqual([`r/taskstatus/${task.id}`]);
    expect(s.kvGet(`taskstatus/${task.id}`)).toMatchObject({ value: next, version: 2, createIndex: 3, modIndex: 7 });
    expect(s.apply(8, enc({ type: 'kv.txn', compares: [{ key: `taskstatus/${task.id}`, version: 1 }], ops: [] })).ok).toBe(false);
    expect(s.apply(9, enc({ type: 'kv.delete', key: `tasks/${task.id}` })).ok).toBe(true);
    expect([...s.takeChangedRows()].filter(([r]) => !r.startsWith('v/'))).toEqual([[`r/tasks/${task.id}`, null]]);
    expect(s.tables.task(task.id)).toBeUndefined();
    expect(s.taskKeysOnNode('QmNode')).toEqual([]);
  });

  it('moves records kept in kv pages (a store written before record rows) to rows of their own at start', () => {
    const s = withRecords();
    // The rows as this state's kv pages alone would hold them (every key in pages, no r/ row).
    const entries = s.kvList('', 100).map((r) => ({ ...r, sizeBytes: s.kvSizeBytes(r.key) }));
    const old: [string, RowValue][] = [...[...s.rows()].filter(([r]) => !r.startsWith('r/') && !r.startsWith('i/')), ...KvIndex.pageRows(entries)];
    expect(pagesText(old)).toContain(task.id);
    const moved = ClusterState.fromRows(s.appliedIndex, old);
    expect(moved.snapshot()).toEqual(s.snapshot());
    expect(moved.hasChangedRows).toBe(true);
    const disk = new Map(old);
    for (const [row, v] of moved.takeChangedRows()) (v === null ? disk.delete(row) : disk.set(row, v));
    expect([...disk.keys()].filter((r) => r.startsWith('r/'))).toHaveLength(4);
    expect(pagesText([...disk])).not.toContain(task.id);
    const started = ClusterState.fromRows(s.appliedIndex, disk);
    expect(started.hasChangedRows).toBe(false);
    expect(started.snapshot()).toEqual(s.snapshot());
    expect(started.tables.task(task.id)).toEqual(task);
    // A record both in a page and in a row of its own: the rows do not hold together.
    expect(() => ClusterState.fromRows(s.appliedIndex, [...old, ...[...s.rows()].filter(([r]) => r.startsWith('r/'))])).toThrow(/both in a kv page and in a record row/);
  });

  it('keeps the config, nodes and tokens in protobuf rows too, and reads (then rewrites) their JSON rows of before', () => {
    const s = withRecords();
    s.apply(7, enc({ type: 'cluster.init', clusterId: 'c1', voterTarget: 3, rootNodeId: 'QmRoot', ephemeralRoot: false }));
    s.apply(8, enc({ type: 'node.register', node: { id: 'QmRoot', name: 'n1', addrs: ['/ip4/127.0.0.1/tcp/1'], apiUrl: 'http://127.0.0.1:1', resources: { cpuCores: 2, memoryBytes: 1e9, diskBytes: 2e9, arch: 'x64', gpus: [{ model: 'A', memoryBytes: 5 }], drivers: ['docker', 'process'] }, labels: { zone: 'b', rack: 'a' } } }));
    s.apply(9, enc({ type: 'token.add', token: { id: 'tok1', hash: 'a'.repeat(64), role: 'join', name: 'ci' } }));
    s.applyConfChange(10, { type: 'addLearner', node: 'QmLater' });
    s.apply(11, enc({ type: 'node.eligibility', id: 'QmRoot', eligibility: 'draining' }));
    s.apply(12, enc({ type: 'config.set', voterTarget: 3, maxStateBytes: 1_000_000 }));
    expect(s.node('QmRoot')?.eligibility).toBe('draining');
    expect(s.config()).toMatchObject({ maxStateBytes: 1_000_000, minSchema: 3 });
    const rows = [...s.rows()];
    for (const row of ['cfg', 'n/QmRoot', 't/tok1', 'p/QmLater']) {
      const v = rows.find(([r]) => r === row)?.[1];
      expect(v, row).toBeInstanceOf(Uint8Array);
      expect((v as Uint8Array)[0]).toBe(0);
    }
    expect(ClusterState.fromRows(s.appliedIndex, rows).snapshot()).toEqual(s.snapshot());
    // The same rows as JSON text (what the previous version wrote): read, and marked to be written again.
    const doc = JSON.parse(new TextDecoder().decode(s.snapshot())) as { config: object; nodes: object[]; tokens: object[] };
    const json = rows.map(([r, v]): [string, RowValue] => [r, r === 'cfg' ? JSON.stringify(doc.config) : r.startsWith('n/') ? JSON.stringify(doc.nodes[0]) : r.startsWith('t/') ? JSON.stringify(doc.tokens[0]) : r.startsWith('p/') ? '{"id":"QmLater","role":"learner"}' : v]);
    const old = ClusterState.fromRows(s.appliedIndex, json);
    expect(old.snapshot()).toEqual(s.snapshot());
    const rewritten = old.takeChangedRows();
    expect([...rewritten.keys()].sort()).toEqual(['cfg', 'n/QmLater', 'n/QmRoot', 'p/QmLater', 't/tok1'].filter((r) => rows.some(([x]) => x === r)));
    for (const [row, v] of rewritten) expect(v, row).toEqual(rows.find(([r]) => r === row)![1]);
    // A protobuf row that does not hold is refused as a JSON one would be.
    expect(() => ClusterState.fromRows(s.appliedIndex, rows.map(([r, v]): [string, RowValue] => [r, r === 't/tok1' ? new Uint8Array([0, 0x0a, 0x02, 0xff, 0xfe]) : v]))).toThrow(StateRestoreError);
  });

  it('refuses a record row that does not hold', () => {
    const s = withRecords();
    const rows = [...s.rows()];
    const bad = (row: string, v: RowValue) => () => ClusterState.fromRows(s.appliedIndex, rows.map(([r, x]): [string, RowValue] => [r, r === row ? v : x]));
    expect(bad(`r/tasks/${task.id}`, new Uint8Array([0x00, 0x08, 0x01, 0x10, 0x01, 0x18, 0x01, 0x20, 0x01, 0x2a, 0x02, 0x0a, 0xff]))).toThrow(/record: task record/);
    expect(bad(`r/tasks/${task.id}`, 'text, not bytes')).toThrow(/binary/);
    expect(bad(`r/tasks/${task.id}`, new Uint8Array([0x08, 0x01]))).toThrow(StateRestoreError);
    expect(bad(`r/tasks/${task.id}`, new Uint8Array([0x00, 0x08, 0x01]))).toThrow(/createIndex/);
    // A row of a key outside the record prefixes.
    expect(() => ClusterState.fromRows(s.appliedIndex, [...rows, ['r/user/key', rows.find(([r]) => r === 'r/apps/web')![1]]])).toThrow(/record prefix/);
  });
});

describe('binary rows on disk and in a streamed snapshot', () => {
  const dirs: string[] = [];
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });

  it('LevelDB keeps record rows as bytes; a snapshot sink takes them, and still refuses a text row that is not UTF-8', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'omni-record-rows-'));
    dirs.push(dir);
    const s = withRecords();
    const storage = await RaftStorage.open(dir);
    try {
      await storage.saveState(s.takeChangedRows(), s.appliedIndex, true);
      const loaded = (await storage.loadState())!;
      expect(ClusterState.fromRows(loaded.appliedIndex, loaded.rows).snapshot()).toEqual(s.snapshot());
      // Streamed into another generation, row by row as a follower receives them.
      const view = await storage.openStateView('v1');
      const streamed: [Uint8Array, Uint8Array][] = [];
      for await (const row of view.rows(undefined, new AbortController().signal)) streamed.push(row);
      await view.close();
      const sink = storage.snapshotSink();
      await sink.resumeAfter('leader', 'snap');
      await sink.write('leader', 'snap', streamed);
      await expect(sink.write('leader', 'snap', [[new TextEncoder().encode('zz'), new Uint8Array([0xff])]])).rejects.toThrow(/UTF-8/);
      await sink.complete('leader', 'snap', streamed.length);
      expect(await storage.installStagedState('leader', 'snap')).toBe(s.appliedIndex);
      const installed = (await storage.loadState())!;
      expect(installed.rows.some(([r]) => r === APPLIED_ROW)).toBe(false);
      expect(ClusterState.fromRows(installed.appliedIndex, installed.rows).snapshot()).toEqual(s.snapshot());
    } finally {
      await storage.close();
    }
  });
});
