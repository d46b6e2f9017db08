// Commands in protobuf (issue 12): the JSON commands and state rows written by the version
// before still apply identically, and both forms validate alike.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import protobuf from 'protobufjs';
import { describe, expect, it } from 'vitest';
import { OMNI_PROTO } from '../../protocol/codec.js';
import { PROTOBUF_COMMAND_FORMAT, encodeCommandJson } from '../../protocol/cluster/commands.js';
import { ClusterState, CommandEncodeError, MAX_KV_VALUE_BYTES, decodeCommand, encodeCommand, type ApplyResult, type Command } from '../../protocol/cluster/state.js';

interface Fixture { entries: string[]; results: ApplyResult[]; rowsAt: number; rows: [string, string][]; snapshotSha256: string; taskKeysOnNode: Record<string, string[]> }
const fixture = JSON.parse(readFileSync(new URL('../fixtures/state/json-log.json', import.meta.url), 'utf8')) as Fixture;
const entries = fixture.entries.map((b) => new Uint8Array(Buffer.from(b, 'base64')));
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const Command = protobuf.parse(OMNI_PROTO).root.lookupType('omni.Command');
const withFormat = (body: Uint8Array) => new Uint8Array([PROTOBUF_COMMAND_FORMAT, ...body]);

function applyAll(state: ClusterState, data: Uint8Array[], from = 0): ApplyResult[] {
  return data.slice(from).map((d, i) => state.apply(from + i + 1, d));
}

describe('a log and a data dir written with JSON commands', () => {
  it('the old log applies with the same results and the same state', () => {
    expect(entries[0][0]).toBe(0x7b); // '{': really the JSON form
    const state = new ClusterState();
    expect(applyAll(state, entries)).toEqual(fixture.results);
    expect(sha(state.snapshot())).toBe(fixture.snapshotSha256);
    for (const [node, keys] of Object.entries(fixture.taskKeysOnNode)) expect(state.taskKeysOnNode(node)).toEqual(keys);
  });

  it('a data dir (rows) of the old version loads and goes on from its log identically', () => {
    const state = ClusterState.fromRows(fixture.rowsAt, fixture.rows);
    expect(applyAll(state, entries, fixture.rowsAt)).toEqual(fixture.results.slice(fixture.rowsAt));
    expect(sha(state.snapshot())).toBe(fixture.snapshotSha256);
  });

  it('the same commands in protobuf, or mixed with JSON, give the same results and state', () => {
    const proto = entries.map((d) => {
      const c = decodeCommand(d);
      return c.ok ? encodeCommand(c.command) : d;
    });
    expect(proto.filter((d) => d[0] === PROTOBUF_COMMAND_FORMAT).length).toBeGreaterThan(390);
    const a = new ClusterState();
    expect(applyAll(a, proto)).toEqual(fixture.results);
    expect(sha(a.snapshot())).toBe(fixture.snapshotSha256);
    const b = new ClusterState();
    expect(applyAll(b, entries.map((d, i) => (i % 2 ? d : proto[i])))).toEqual(fixture.results);
    expect(sha(b.snapshot())).toBe(fixture.snapshotSha256);
  });

  it('every decoded old command decodes back equal from protobuf', () => {
    for (const d of entries) {
      const c = decodeCommand(d);
      if (c.ok) expect(decodeCommand(encodeCommand(c.command))).toEqual(c);
    }
  });
});

describe('protobuf commands', () => {
  const bad: [unknown, string, string][] = [
    [{ type: 'kv.put', key: '', value: 'x' }, 'INVALID_COMMAND', 'key: must not be empty'],
    [{ type: 'kv.put', key: 'k' }, 'INVALID_COMMAND', 'value: missing'],
    [{ type: 'kv.put', key: 'k', value: 'x', extra: 1 }, 'INVALID_COMMAND', 'extra: unknown field'],
    [{ type: 'kv.put', key: 'k', value: 'x\ud800' }, 'INVALID_COMMAND', 'value: must be well-formed Unicode'],
    [{ type: 'kv.put', key: 'k', value: 'x', expectedVersion: -1 }, 'INVALID_COMMAND', 'expectedVersion: must be an integer from 0 to 9007199254740991'],
    [{ type: 'node.remove', id: 'not valid' }, 'INVALID_COMMAND', 'id: must contain only [A-Za-z0-9]'],
    [{ type: 'node.status', id: 'QmA', status: 'left' }, 'INVALID_COMMAND', "status: must be one of 'up', 'down'"],
    [{ type: 'config.set', voterTarget: Number.NaN }, 'INVALID_COMMAND', 'voterTarget: must be a number'],
    [{ type: 'kv.txn', compares: [{ key: 'a' }], ops: [] }, 'INVALID_COMMAND', 'compares[0]: must have exactly one of version and value'],
    [{ type: 'kv.txn', compares: [], ops: [{ op: 'put', key: 'a', value: '' }, { op: 'delete', key: 'a' }] }, 'INVALID_COMMAND', 'ops[1].key: key "a" appears twice in one transaction'],
    [{ type: 'kv.txn', compares: [], ops: [{ op: 'move', key: 'a' }] }, 'INVALID_COMMAND', 'ops[0].op: must be "put" or "delete"'],
    [{ type: 'token.add', token: { id: 't', hash: 'x', role: 'admin', name: '' } }, 'INVALID_COMMAND', 'token.hash: must be 64 lowercase hex digits (SHA-256)'],
    [{ type: 'job.run' }, 'UNKNOWN_COMMAND', 'unknown command type "job.run"'],
  ];

  it('encodeCommand refuses what the JSON decoder refuses, with the same code and message', () => {
    for (const [c, code, message] of bad) {
      const json = decodeCommand(new TextEncoder().encode(JSON.stringify(c)));
      expect(json).toEqual({ ok: false, error: { code, message } });
      let thrown: unknown;
      try {
        encodeCommand(c as Command);
      } catch (err) {
        thrown = err;
      }
      expect(thrown).toBeInstanceOf(CommandEncodeError);
      expect({ code: (thrown as CommandEncodeError).code, message: (thrown as Error).message }).toEqual({ code, message });
    }
  });

  it('fields that fail their reader on the wire give the JSON message too', () => {
    const cases: [object, string][] = [
      [{ kvPut: { key: '', value: new Uint8Array([0x78]) } }, 'key: must not be empty'],
      [{ kvPut: { key: 'k', value: new Uint8Array([0xc3, 0x28]) } }, 'value: must be well-formed Unicode'],
      [{ nodeRegister: {} }, 'node: missing'],
      [{ kvTxn: { compares: [{ key: 'a' }], ops: [] } }, 'compares[0]: must have exactly one of version and value'],
      [{ kvTxn: { compares: [], ops: [{}] } }, 'ops[0].op: must be "put" or "delete"'],
      [{ configSet: { voterTarget: Number.POSITIVE_INFINITY } }, 'voterTarget: must be a number'],
      [{ kvPut: { key: 'k', value: new Uint8Array(0), expectedVersion: 2 ** 60 } }, 'expectedVersion: must be an integer from 0 to 9007199254740991'],
    ];
    for (const [body, message] of cases) {
      expect(decodeCommand(withFormat(Command.encode(body).finish()))).toEqual({ ok: false, error: { code: 'INVALID_COMMAND', message } });
    }
  });

  it('refuses malformed protobuf, never throwing', () => {
    const put = encodeCommand({ type: 'kv.put', key: 'k', value: 'v' });
    const cases: Uint8Array[] = [
      new Uint8Array([0]), // no command
      withFormat(Command.encode({ kvPut: { key: 'k', value: new Uint8Array(0) }, kvDelete: { key: 'k' } }).finish()).slice(0, 1), // empty
      new Uint8Array([...put, 0x78, 0x01]), // field 15 (unknown)
      new Uint8Array([0, 0x50, 0x01]), // kv_put as a varint (wrong wire type)
      put.slice(0, put.length - 1), // truncated
      new Uint8Array([0, 0x2a, 0x04, 0x0a, 0x02, 0xc3, 0x28]), // node.remove id: not UTF-8
      new Uint8Array([0, 0x52, 0x80]), // truncated varint
    ];
    for (const data of cases) {
      const r = decodeCommand(data);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.code).toBe('INVALID_COMMAND');
    }
    // Two bodies: protobuf's rule keeps the last; a command is one body.
    const two = new Uint8Array([...put, ...encodeCommand({ type: 'kv.delete', key: 'k' }).slice(1)]);
    expect(decodeCommand(two)).toEqual({ ok: true, command: { type: 'kv.delete', key: 'k' } });
  });

  it('values of every length and kind decode to what was encoded; malformed UTF-8 past the ASCII fast path is refused', () => {
    const values = ['', 'a'.repeat(64), 'a'.repeat(65), 'x+/='.repeat(262_144), `${'a'.repeat(100)}é`, `\ufeff${'b'.repeat(100)}`, `${'c'.repeat(70)}\u007f`];
    for (const value of values) {
      const r = decodeCommand(encodeCommand({ type: 'kv.put', key: 'k', value }));
      expect(r.ok && r.command.type === 'kv.put' && r.command.value === value, `${value.length} chars`).toBe(true);
    }
    for (const tail of [[0xc3, 0x28], [0x80], [0xed, 0xa0, 0x80]]) {
      const bytes = new Uint8Array([...new TextEncoder().encode('d'.repeat(100)), ...tail]);
      expect(decodeCommand(withFormat(Command.encode({ kvPut: { key: 'k', value: bytes } }).finish()))).toEqual({ ok: false, error: { code: 'INVALID_COMMAND', message: 'value: must be well-formed Unicode' } });
    }
  });

  it('kv values travel as their UTF-8 bytes, not escaped text', () => {
    const value = `${'"\\'.repeat(256)}${'é'.repeat(256)}`;
    const pb = encodeCommand({ type: 'kv.put', key: 'k', value });
    const json = encodeCommandJson({ type: 'kv.put', key: 'k', value });
    expect(pb.byteLength).toBeLessThan(new TextEncoder().encode(value).byteLength + 16);
    expect(json.byteLength).toBeGreaterThan(pb.byteLength + 500);
    expect(decodeCommand(pb)).toEqual({ ok: true, command: { type: 'kv.put', key: 'k', value } });
    // The value limit counts bytes, checked before they are decoded.
    expect(() => encodeCommand({ type: 'kv.put', key: 'k', value: 'é'.repeat(MAX_KV_VALUE_BYTES / 2 + 1) })).toThrow(CommandEncodeError);
  });

  it("a node's drivers travel in both forms, sorted; none reported is left out (as an older node's record); bad names are refused", () => {
    const reg = (drivers?: unknown) => ({ type: 'node.register', node: { id: 'QmA', name: 'a', addrs: [], apiUrl: 'http://x', labels: {}, resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [], ...(drivers !== undefined ? { drivers } : {}) } } });
    const drivers = (c: ReturnType<typeof decodeCommand>) => (c.ok && c.command.type === 'node.register' ? c.command.node.resources.drivers : 'refused');
    const withDrivers = reg(['process', 'docker', 'forge']) as Command;
    expect(drivers(decodeCommand(encodeCommand(withDrivers)))).toEqual(['docker', 'forge', 'process']);
    expect(drivers(decodeCommand(encodeCommandJson(withDrivers)))).toEqual(['docker', 'forge', 'process']);
    for (const none of [reg(), reg([])]) {
      const pb = decodeCommand(encodeCommand(none as Command));
      expect(pb.ok && pb.command.type === 'node.register' && 'drivers' in pb.command.node.resources).toBe(false);
      expect(decodeCommand(encodeCommandJson(none as Command))).toEqual(pb);
    }
    expect(decodeCommand(new TextEncoder().encode(JSON.stringify(reg(['Docker']))))).toEqual({ ok: false, error: { code: 'INVALID_COMMAND', message: 'node.resources.drivers: must be a list of at most 16 driver names' } });
  });

  it('a "__proto__" label read from the wire stays a plain label', () => {
    const reg = { id: 'QmA', name: 'a', addrs: [], apiUrl: 'http://x', resources: { cpuCores: 1, memoryBytes: 1, diskBytes: 1, arch: 'amd64', gpus: [] } };
    const labels = Object.defineProperty({}, '__proto__', { value: 'x', enumerable: true });
    const data = withFormat(Command.encode({ nodeRegister: { node: { ...reg, labels } } }).finish());
    const r = decodeCommand(data);
    expect(r.ok).toBe(true);
    if (r.ok && r.command.type === 'node.register') {
      expect(Object.keys(r.command.node.labels)).toEqual(['__proto__']);
      expect(Object.getPrototypeOf(r.command.node.labels)).toBe(Object.prototype);
    }
  });

  it('decodes the same from a Buffer and from a Uint8Array', () => {
    const c: Command = { type: 'kv.txn', compares: [{ key: 'ключ', value: 'é😀' }], ops: [{ op: 'put', key: 'a', value: '\ufeffx' }] };
    const data = encodeCommand(c);
    expect(decodeCommand(Buffer.from(data))).toEqual({ ok: true, command: c });
    expect(decodeCommand(data)).toEqual({ ok: true, command: c });
  });
});
