// The apps' typed tables and secondary indexes (protocol/apps/tables.ts), kept by ClusterState.
import type { RowValue } from '../../protocol/cluster/kv-space.js';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parseRecord, type AppRecord, type TaskRecord, type TaskStatusRecord } from '../../protocol/apps/model.js';
import { encodeCommandJson } from '../../protocol/cluster/commands.js';
import { ClusterState, encodeCommand, type Command, type KvTxnOp } from '../../protocol/cluster/state.js';
import { seededRng } from '../../protocol/rng.js';

const task = (id: string, app: string, nodeId: string, desired: 'run' | 'stop' = 'run'): TaskRecord => ({ id, app, version: 1, nodeId, hostPorts: [], desired, createdAtMs: 1, stopReason: '' });
const status = (id: string, state: TaskStatusRecord['state']): TaskStatusRecord => ({ id, state, health: 'none', exitCode: null, reason: '', restarts: 0, startedAtMs: 1, updatedAtMs: 2 });
const put = (key: string, v: unknown): KvTxnOp => ({ op: 'put', key, value: typeof v === 'string' ? v : JSON.stringify(v) });
const del = (key: string): KvTxnOp => ({ op: 'delete', key });

function run(s: ClusterState, c: Command, json = false): void {
  const r = s.apply(s.appliedIndex + 1, json ? encodeCommandJson(c) : encodeCommand(c));
  if (!r.ok) throw new Error(`${r.error.code}: ${r.error.message}`);
}
const txn = (s: ClusterState, ops: KvTxnOp[]) => run(s, { type: 'kv.txn', compares: [], ops });

/** Everything the tables say, to compare two states. */
function dump(s: ClusterState, nodes: string[], apps: string[]) {
  const t = s.tables;
  return {
    apps: t.apps(),
    tasks: t.tasks(),
    statuses: t.statuses(),
    byNode: nodes.map((n) => t.tasksOnNode(n).map((x) => x.id)),
    byApp: apps.map((a) => t.tasksOfApp(a).map((x) => x.id)),
    pins: apps.map((a) => [...t.volumePins(a)]),
  };
}

/** The tables as a scan of the kv would give them (what readers did before). */
function scanned(s: ClusterState, nodes: string[], apps: string[]) {
  const list = <T>(prefix: string) => s.kvList(prefix, 1e6).flatMap((r) => parseRecord<T>(r.value) ?? []);
  const tasks = list<TaskRecord>('tasks/');
  return {
    apps: list<AppRecord>('apps/'),
    tasks,
    statuses: list<TaskStatusRecord>('taskstatus/'),
    byNode: nodes.map((n) => tasks.filter((x) => x.nodeId === n).map((x) => x.id)),
    byApp: apps.map((a) => tasks.filter((x) => x.app === a).map((x) => x.id)),
    pins: apps.map((a) => s.kvList(`volumes/${a}/`, 100).map((r) => [r.key.slice(`volumes/${a}/`.length), r.value])),
  };
}

describe('typed tables of apps, tasks and statuses', () => {
  it('follow every apply: tasks by node, by app, statuses by task, volume pins', () => {
    const s = new ClusterState();
    txn(s, [put('apps/web', { name: 'web', version: 1 }), put('tasks/web-1', task('web-1', 'web', 'n1')), put('tasks/web-2', task('web-2', 'web', 'n2')), put('volumes/web/data', 'n1')]);
    txn(s, [put('tasks/db-1', task('db-1', 'db', 'n1')), put('taskstatus/web-1', status('web-1', 'running'))]);
    expect(s.tables.tasksOnNode('n1').map((t) => t.id)).toEqual(['db-1', 'web-1']);
    expect(s.tables.tasksOfApp('web').map((t) => t.id)).toEqual(['web-1', 'web-2']);
    expect(s.tables.status('web-1')?.state).toBe('running');
    expect(s.tables.app('web')?.version).toBe(1);
    expect([...s.tables.volumePins('web')]).toEqual([['data', 'n1']]);
    expect(s.taskKeysOnNode('n1')).toEqual(['tasks/db-1', 'tasks/web-1']);
    // A task moved to another node, a status deleted, a task deleted.
    txn(s, [put('tasks/web-1', task('web-1', 'web', 'n3', 'stop')), del('taskstatus/web-1'), del('tasks/db-1'), del('volumes/web/data')]);
    expect(s.tables.tasksOnNode('n1')).toEqual([]);
    expect(s.tables.tasksOnNode('n3').map((t) => t.desired)).toEqual(['stop']);
    expect(s.tables.tasksOfApp('db')).toEqual([]);
    expect(s.tables.status('web-1')).toBeUndefined();
    expect(s.tables.volumePins('web').size).toBe(0);
    // kv.put and kv.delete feed them too; a value that is no JSON object is in no table.
    run(s, { type: 'kv.put', key: 'tasks/x', value: 'not json' });
    expect(s.tables.task('x')).toBeUndefined();
    run(s, { type: 'kv.put', key: 'tasks/x', value: JSON.stringify(task('x', 'web', 'n2')) });
    expect(s.tables.tasksOnNode('n2').map((t) => t.id)).toEqual(['web-2', 'x']);
    run(s, { type: 'kv.delete', key: 'tasks/x' });
    expect(s.tables.tasksOfApp('web').map((t) => t.id)).toEqual(['web-1', 'web-2']);
  });

  it('hand out frozen records: a reader cannot change the state', () => {
    const s = new ClusterState();
    txn(s, [put('tasks/a', task('a', 'web', 'n1'))]);
    const t = s.tables.task('a')!;
    expect(Object.isFrozen(t)).toBe(true);
    expect(() => { (t as { nodeId: string }).nodeId = 'n9'; }).toThrow(TypeError);
    expect(() => { (t.hostPorts as number[]).push(1); }).toThrow(TypeError);
    expect(s.tables.tasksOnNode('n1')).toHaveLength(1);
  });

  it('match a scan of the kv after random plans, and are rebuilt the same from rows and snapshots (no log replay)', () => {
    const rng = seededRng(12);
    const nodes = ['n1', 'n2', 'n3'];
    const apps = ['web', 'db', 'api'];
    const s = new ClusterState();
    for (let i = 0; i < 400; i++) {
      const app = apps[rng.int(3)];
      const id = `${app}-${rng.int(8)}`;
      const ops: KvTxnOp[] = [];
      switch (rng.int(6)) {
        case 0: case 1: ops.push(put(`tasks/${id}`, task(id, app, nodes[rng.int(3)], rng.int(2) ? 'run' : 'stop'))); break;
        case 2: ops.push(put(`taskstatus/${id}`, status(id, rng.int(2) ? 'running' : 'exited'))); break;
        case 3: ops.push(del(`tasks/${id}`), del(`taskstatus/${id}`)); break;
        case 4: ops.push(put(`apps/${app}`, { name: app, version: i }), put(`volumes/${app}/v${rng.int(2)}`, nodes[rng.int(3)])); break;
        default: ops.push(del(`apps/${app}`), del(`volumes/${app}/v${rng.int(2)}`));
      }
      // Deleting a key that is absent is fine in a txn; a random mix of JSON and protobuf commands.
      run(s, { type: 'kv.txn', compares: [], ops }, i % 3 === 0);
      if (i % 50 === 0) expect(dump(s, nodes, apps)).toEqual(scanned(s, nodes, apps));
    }
    const want = dump(s, nodes, apps);
    expect(want).toEqual(scanned(s, nodes, apps));
    expect(want.tasks.length).toBeGreaterThan(5);
    expect(dump(ClusterState.fromRows(s.appliedIndex, s.rows()), nodes, apps)).toEqual(want);
    expect(dump(ClusterState.restore(s.snapshot()), nodes, apps)).toEqual(want);
    // Rows as a node persists them, batch by batch (takeChangedRows), then a start from them.
    const disk = new Map<string, RowValue>();
    const t = new ClusterState();
    const persist = () => { for (const [k, v] of t.takeChangedRows()) { if (v === null) disk.delete(k); else disk.set(k, v); } };
    const rng2 = seededRng(12);
    for (let i = 0; i < 60; i++) {
      const id = `web-${rng2.int(5)}`;
      txn(t, rng2.int(3) ? [put(`tasks/${id}`, task(id, 'web', nodes[rng2.int(3)]))] : [del(`tasks/${id}`)]);
      if (i % 7 === 0) persist();
    }
    persist();
    expect(dump(ClusterState.fromRows(t.appliedIndex, disk), nodes, apps)).toEqual(dump(t, nodes, apps));
  });

  it('build the task indexes at the first query after a start, with the changes applied before it', () => {
    const nodes = ['n1', 'n2', 'n3'];
    const apps = ['web', 'db'];
    const s = new ClusterState();
    const ops: KvTxnOp[] = [];
    for (let i = 0; i < 30; i++) ops.push(put(`tasks/t${i}`, task(`t${i}`, apps[i % 2], nodes[i % 3])));
    ops.push(put('tasks/junk', 'not json'));
    txn(s, ops);
    const started = ClusterState.fromRows(s.appliedIndex, s.rows());
    // The start did not build them: no task record parsed for the indexes yet.
    expect(started.tables.indexesDeferred).toBe(true);
    // Changes applied before the first query: a task moved, one deleted, one added, one made junk.
    txn(started, [put('tasks/t0', task('t0', 'db', 'n3')), del('tasks/t1'), put('tasks/t99', task('t99', 'web', 'n2')), put('tasks/t2', 'junk')]);
    expect(started.tables.indexesDeferred).toBe(true);
    expect(started.tables.taskIdsOnNode('n1')).toEqual(scanned(started, nodes, apps).byNode[0]);
    expect(started.tables.indexesDeferred).toBe(false);
    expect(dump(started, nodes, apps)).toEqual(scanned(started, nodes, apps));
    expect(started.tables.taskIdsOnNode('n3')).toContain('t0');
    expect(started.tables.taskIdsOnNode('n1')).not.toContain('t1');
    expect(started.tables.tasksOfApp('web').map((t) => t.id)).not.toContain('t2');
    // Built: later changes are indexed as they are applied.
    txn(started, [put('tasks/t3', task('t3', 'web', 'n1')), del('tasks/t4')]);
    expect(started.tables.indexesDeferred).toBe(false);
    expect(dump(started, nodes, apps)).toEqual(scanned(started, nodes, apps));
    // And the same from a snapshot.
    const restored = ClusterState.restore(started.snapshot());
    expect(restored.tables.indexesDeferred).toBe(true);
    expect(dump(restored, nodes, apps)).toEqual(dump(started, nodes, apps));
  });

  it('load from the rows of a data dir written by the version before (JSON commands)', () => {
    const fixture = JSON.parse(readFileSync(new URL('../fixtures/state/json-log.json', import.meta.url), 'utf8')) as { entries: string[]; rowsAt: number; rows: [string, string][]; taskKeysOnNode: Record<string, string[]> };
    const s = ClusterState.fromRows(fixture.rowsAt, fixture.rows);
    fixture.entries.slice(fixture.rowsAt).forEach((b, i) => s.apply(fixture.rowsAt + i + 1, new Uint8Array(Buffer.from(b, 'base64'))));
    for (const [node, keys] of Object.entries(fixture.taskKeysOnNode)) {
      expect(s.tables.tasksOnNode(node).map((t) => `tasks/${t.id}`)).toEqual(keys);
    }
    expect(dump(s, Object.keys(fixture.taskKeysOnNode), ['web', 'api', 'db'])).toEqual(scanned(s, Object.keys(fixture.taskKeysOnNode), ['web', 'api', 'db']));
  });
});
