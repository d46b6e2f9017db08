// The vocabulary of the replicated cluster state: its records, the commands that change it,
// and their encoding. Pure and deterministic: no I/O, no clock, no randomness.
//
// Encoding: the byte 0x00 then one protobuf Command (proto/omni.proto), kv values as raw
// UTF-8 bytes. decodeCommand still reads the UTF-8 JSON written before (data whose first byte
// is not 0x00), exactly as then: an old log or data dir applies identically. Both forms go
// through the same field readers below, so the same bad field gives the same error.
//
// decodeCommand never throws: every byte string either decodes into a fully validated
// Command or yields an INVALID_COMMAND / UNKNOWN_COMMAND error whose message names the
// offending field. Messages are built from our own text only (never an engine's error
// text), so every replica — whatever its Node version — returns the very same result.
// encodeCommand runs the same field readers on its input before it encodes the normalized
// command, so what it accepts decodes to that command and applies.

import { Buffer, isAscii } from 'node:buffer';
import protobuf from 'protobufjs';
import { DecodeError, OMNI_ROOT } from '../codec.js';
import { isWellFormedUnicode } from '../unicode.js';
import { encodeRecordText, recordKindOf, recordTextFromCommand } from '../apps/record-codec.js';

// ---------------------------------------------------------------------------
// Records

export interface GpuInfo { model: string; memoryBytes: number }
export interface NodeResources {
  cpuCores: number;
  memoryBytes: number;
  diskBytes: number;
  arch: string;
  gpus: GpuInfo[];
  /**
   * The task drivers the node can run now (sorted), as its Director found them (Nomad's driver
   * fingerprints): the scheduler places a task only on a node with its driver. Absent (a node of
   * an older version, or one that found none): not known, and not filtered on.
   */
  drivers?: string[];
}
/** Mirrors the Raft configuration. */
export type NodeRole = 'voter' | 'learner' | 'none';
export type NodeStatus = 'up' | 'down' | 'left';
/**
 * Whether the scheduler may place tasks on a node: 'ineligible' keeps what runs there but places
 * nothing new; 'draining' also moves its tasks to other nodes (the leader turns it 'ineligible'
 * once none is left). A record without the field is eligible.
 */
export type NodeEligibility = 'eligible' | 'ineligible' | 'draining';

export interface NodeRecord {
  /** libp2p peer id string == Raft node id (1..128 chars, [A-Za-z0-9]). */
  id: string;
  /** Human name, 1..63 chars, [a-zA-Z0-9._-]; unique among nodes that have not left. */
  name: string;
  /** libp2p multiaddrs as strings. */
  addrs: string[];
  /** http:// or https:// URL of the node's API. */
  apiUrl: string;
  resources: NodeResources;
  labels: Record<string, string>;
  role: NodeRole;
  status: NodeStatus;
  /** '' when none. */
  statusReason: string;
  /** True for the bootstrap node while it has not retired. */
  root: boolean;
  /** Raft index of the first registration. */
  joinedIndex: number;
  /** Raft index of the last change. */
  updatedIndex: number;
  /** Absent when eligible (records and snapshots of eligible nodes are unchanged). */
  eligibility?: Exclude<NodeEligibility, 'eligible'>;
}

export interface ClusterConfig {
  /** '' until cluster.init. */
  clusterId: string;
  /** Odd, 1..9. */
  voterTarget: number;
  /** '' when none. */
  rootNodeId: string;
  rootRetired: boolean;
  ephemeralRoot: boolean;
  /**
   * The state quota (protocol/cluster/quota.ts): bytes of records an admin's writes may fill.
   * Absent: the default (DEFAULT_MAX_STATE_BYTES in state.ts); states and snapshots written
   * before the quota existed have no such field and keep the same bytes.
   */
  maxStateBytes?: number;
  /**
   * The lowest command schema a member may speak (protocol/cluster/schema.ts), raised by an
   * applied entry that uses a field of a later schema (config.set's maxStateBytes: 3) and never
   * lowered: a joining omnid below it is refused even while some member has not been heard from
   * (which makes the heartbeat-derived schema 1). Absent: 1.
   */
  minSchema?: number;
}

/** admin: the HTTP API and registry pushes; join: adds hosts; pull: reads the image registry only. */
export type TokenRole = 'admin' | 'join' | 'pull';

export interface TokenRecord {
  id: string;
  /** SHA-256 of the secret, 64 lowercase hex digits (hashed before it reaches the log). */
  hash: string;
  role: TokenRole;
  name: string;
  createdIndex: number;
}

export interface KvRecord {
  key: string;
  value: string;
  /** 1 on create, +1 per put. */
  version: number;
  createIndex: number;
  modIndex: number;
}

// ---------------------------------------------------------------------------
// Commands

/** What a node says about itself when it registers. */
export interface NodeRegistration {
  id: string;
  name: string;
  addrs: string[];
  apiUrl: string;
  resources: NodeResources;
  labels: Record<string, string>;
}

export interface TokenGrant { id: string; hash: string; role: TokenRole; name: string }

export interface ClusterInitCommand {
  type: 'cluster.init'; clusterId: string; voterTarget: number; rootNodeId: string; ephemeralRoot: boolean;
  /** omnid init --max-state-bytes; absent: the default quota. */
  maxStateBytes?: number;
}
export interface ConfigSetCommand {
  type: 'config.set'; voterTarget: number;
  /** A new state quota (`omni quota set`); absent: unchanged. A field of schema 3 (protocol/cluster/schema.ts). */
  maxStateBytes?: number;
}
export interface RootRetireCommand { type: 'root.retire' }
export interface NodeRegisterCommand { type: 'node.register'; node: NodeRegistration }
export interface NodeStatusCommand { type: 'node.status'; id: string; status: 'up' | 'down'; reason?: string }
export interface NodeRemoveCommand { type: 'node.remove'; id: string }
/** expected: when given, the node's current eligibility must equal it (CONFLICT otherwise). */
export interface NodeEligibilityCommand { type: 'node.eligibility'; id: string; eligibility: NodeEligibility; expected?: NodeEligibility }
export interface TokenAddCommand { type: 'token.add'; token: TokenGrant }
export interface TokenRevokeCommand { type: 'token.revoke'; id: string }
/** expectedVersion: when given, the current version must equal it (0 = the key must not exist). */
export interface KvPutCommand { type: 'kv.put'; key: string; value: string; expectedVersion?: number }
export interface KvDeleteCommand { type: 'kv.delete'; key: string; expectedVersion?: number }
/**
 * Compare: the key's current version must equal `version` (0 = absent), or, given `value`
 * instead, the key must exist with exactly that value (etcd's compare on value).
 */
export type KvCompare = { key: string; version: number } | { key: string; value: string };
export type KvTxnOp = { op: 'put'; key: string; value: string } | { op: 'delete'; key: string };
/** All compares hold, then every op applies — or nothing does (optimistic concurrency for plans). */
export interface KvTxnCommand { type: 'kv.txn'; compares: KvCompare[]; ops: KvTxnOp[] }
export const MAX_TXN_COMPARES = 1000;
export const MAX_TXN_OPS = 1000;

export type Command =
  | ClusterInitCommand
  | ConfigSetCommand
  | RootRetireCommand
  | NodeRegisterCommand
  | NodeStatusCommand
  | NodeRemoveCommand
  | NodeEligibilityCommand
  | TokenAddCommand
  | TokenRevokeCommand
  | KvPutCommand
  | KvDeleteCommand
  | KvTxnCommand;

export type CommandType = Command['type'];

export interface CommandError { code: string; message: string }
export type ApplyResult = { ok: true; value?: unknown } | { ok: false; error: CommandError };
/**
 * usesRecords: a put carried a record in protobuf (command schema 4, SCHEMA_RECORDS): a member
 * of an older schema could not read the entry (the state raises its schema floor on applying it).
 */
export type DecodeResult = { ok: true; command: Command; usesRecords?: true } | { ok: false; error: CommandError };

// ---------------------------------------------------------------------------
// Limits

/** Largest encoded command (one Raft entry's data). */
export const MAX_COMMAND_BYTES = 2 * 1024 * 1024;
export const MAX_CLUSTER_ID_CHARS = 128;
export const MAX_NODE_ID_CHARS = 128;
export const MAX_NODE_NAME_CHARS = 63;
export const MAX_NODE_ADDRS = 16;
export const MAX_NODE_ADDR_CHARS = 256;
export const MAX_API_URL_CHARS = 256;
export const MAX_NODE_LABELS = 64;
export const MAX_LABEL_KEY_CHARS = 63;
export const MAX_LABEL_VALUE_CHARS = 256;
export const MAX_STATUS_REASON_CHARS = 256;
export const MAX_ARCH_CHARS = 32;
export const MAX_CPU_CORES = 1_000_000;
export const MAX_NODE_GPUS = 64;
export const MAX_GPU_MODEL_CHARS = 256;
export const MAX_TOKEN_ID_CHARS = 64;
export const MAX_TOKEN_NAME_CHARS = 128;
export const MAX_KV_KEY_BYTES = 512;
export const MAX_KV_VALUE_BYTES = 1024 * 1024;
export const MIN_VOTER_TARGET = 1;
export const MAX_VOTER_TARGET = 9;
export const DEFAULT_VOTER_TARGET = 3;
/** Longest command type quoted back in an UNKNOWN_COMMAND message. */
const MAX_QUOTED_CHARS = 64;

export const NODE_ELIGIBILITIES = ['eligible', 'ineligible', 'draining'] as const;

export const COMMAND_TYPES: readonly CommandType[] = [
  'cluster.init', 'config.set', 'root.retire', 'node.register', 'node.status', 'node.remove', 'node.eligibility',
  'token.add', 'token.revoke', 'kv.put', 'kv.delete', 'kv.txn',
];

// ---------------------------------------------------------------------------
// Encoding and decoding

/** encodeCommand refused its input: it would not decode (a bug or bad input in the caller). */
export class CommandEncodeError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'CommandEncodeError';
    this.code = code;
  }
}

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** First byte of a protobuf command; a JSON text never starts with it. */
export const PROTOBUF_COMMAND_FORMAT = 0x00;

/**
 * The command as protobuf (0x00 + Command). Validated first by the readers decodeCommand uses,
 * so what it accepts decodes to the same command on every replica; CommandEncodeError (with
 * the code and message decodeCommand would give) on anything else.
 */
/** How encodeCommand writes a command. */
export interface EncodeOptions {
  /**
   * Kv puts of the apps' records (keys under apps/, tasks/, taskstatus/) carry the record in
   * protobuf rather than its JSON text, when the text has an exact protobuf form. Only once every
   * member reads it (the cluster's command schema is at least SCHEMA_RECORDS).
   */
  records?: boolean;
}

export function encodeCommand(c: Command, options: EncodeOptions = {}): Uint8Array {
  if (!isPlainObject(c)) throw new CommandEncodeError('INVALID_COMMAND', 'command: must be a JSON object');
  if (typeof c.type !== 'string') throw new CommandEncodeError('INVALID_COMMAND', 'type: must be a string');
  const read = COMMAND_READERS.get(c.type);
  if (read === undefined) throw new CommandEncodeError('UNKNOWN_COMMAND', `unknown command type ${quote(c.type)}`);
  let normalized: Command;
  try {
    normalized = read(c as unknown as Raw);
  } catch (err) {
    if (err instanceof InvalidFieldError) throw new CommandEncodeError('INVALID_COMMAND', err.message);
    throw err;
  }
  const writer = protobuf.Writer.create();
  writer.uint32(PROTOBUF_COMMAND_FORMAT);
  WIRE.Command.encode({ [BODY_FIELD[normalized.type]]: toWire(normalized, options.records === true) }, writer);
  if (writer.len > MAX_COMMAND_BYTES) {
    throw new CommandEncodeError('INVALID_COMMAND', `command of ${writer.len} bytes exceeds the limit of ${MAX_COMMAND_BYTES} bytes`);
  }
  const buf = writer.finish();
  // A small Buffer is a view into a shared 8 KiB pool: copy it, so a log entry holds only its bytes.
  return buf.byteLength < 4096 ? new Uint8Array(buf) : new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** The JSON of the version before (tests of old logs and data dirs; never proposed any more). */
export function encodeCommandJson(c: Command): Uint8Array {
  const bytes = utf8Encoder.encode(JSON.stringify(c));
  const decoded = decodeCommand(bytes);
  if (!decoded.ok) throw new CommandEncodeError(decoded.error.code, decoded.error.message);
  return bytes;
}

/** Bytes → a validated Command, or the error every replica reports for them. Never throws. */
export function decodeCommand(data: Uint8Array): DecodeResult {
  if (!(data instanceof Uint8Array)) return invalid('command: must be bytes');
  if (data.byteLength > MAX_COMMAND_BYTES) {
    return invalid(`command of ${data.byteLength} bytes exceeds the limit of ${MAX_COMMAND_BYTES} bytes`);
  }
  if (data.byteLength > 0 && data[0] === PROTOBUF_COMMAND_FORMAT) return decodeProtobuf(data);
  const parsed = parseJson(data);
  if (!parsed.ok) return invalid('command: not valid UTF-8 JSON');
  const raw = parsed.value;
  if (!isPlainObject(raw)) return invalid('command: must be a JSON object');
  const type = Object.hasOwn(raw, 'type') ? raw.type : undefined;
  if (typeof type !== 'string') return invalid('type: must be a string');
  return readCommand(type, raw);
}

function readCommand(type: string, raw: Raw): DecodeResult {
  const read = COMMAND_READERS.get(type);
  if (read === undefined) {
    return { ok: false, error: { code: 'UNKNOWN_COMMAND', message: `unknown command type ${quote(type)}` } };
  }
  try {
    return { ok: true, command: read(raw) };
  } catch (err) {
    if (err instanceof InvalidFieldError) return invalid(err.message);
    throw err;
  }
}

/** JSON.parse of UTF-8 bytes; never throws. */
export function parseJson(bytes: Uint8Array): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(utf8Decoder.decode(bytes)) };
  } catch {
    return { ok: false };
  }
}

function invalid(message: string): { ok: false; error: CommandError } {
  return { ok: false, error: { code: 'INVALID_COMMAND', message } };
}

// ---------------------------------------------------------------------------
// The protobuf form: Command of proto/omni.proto

const WIRE_ROOT = OMNI_ROOT;
const WIRE = { Command: WIRE_ROOT.lookupType('omni.Command') };
let commandPlan: MessagePlan | undefined;

/** The Command oneof field of each type (protobufjs camelCase names) and back. */
const BODY_FIELD: Record<CommandType, string> = {
  'cluster.init': 'clusterInit', 'config.set': 'configSet', 'root.retire': 'rootRetire',
  'node.register': 'nodeRegister', 'node.status': 'nodeStatus', 'node.remove': 'nodeRemove',
  'node.eligibility': 'nodeEligibility', 'token.add': 'tokenAdd', 'token.revoke': 'tokenRevoke',
  'kv.put': 'kvPut', 'kv.delete': 'kvDelete', 'kv.txn': 'kvTxn',
};
const TYPE_OF_BODY = new Map<string, CommandType>(Object.entries(BODY_FIELD).map(([t, f]) => [f, t as CommandType]));

/** A put's key and content: the value's text, or (records) the record in protobuf. */
function putContent(key: string, value: string, records: boolean): { key: string; value: Uint8Array } | { key: string; record: Uint8Array } {
  const kind = records ? recordKindOf(key) : undefined;
  const record = kind && encodeRecordText(kind, value);
  return record ? { key, record } : { key, value: utf8Encoder.encode(value) };
}

/** A validated command as the object protobufjs encodes: kv values as bytes, txn ops as their oneof. */
function toWire(c: Command, records: boolean): object {
  switch (c.type) {
    case 'kv.put': {
      const o: Record<string, unknown> = putContent(c.key, c.value, records);
      if (c.expectedVersion !== undefined) o.expectedVersion = c.expectedVersion;
      return o;
    }
    case 'kv.txn':
      return {
        compares: c.compares.map((cmp) => ('value' in cmp ? { key: cmp.key, value: utf8Encoder.encode(cmp.value) } : { key: cmp.key, version: cmp.version })),
        ops: c.ops.map((op) => (op.op === 'put' ? { put: putContent(op.key, op.value, records) } : { delete: { key: op.key } })),
      };
    default: {
      const { type: _, ...body } = c;
      return body;
    }
  }
}

function dropUndefined(o: Raw): Raw {
  for (const k of Object.keys(o)) if (o[k] === undefined) return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
  return o;
}

/** Malformed protobuf (not a field that fails its reader). */
class WireError extends Error {}

function decodeProtobuf(data: Uint8Array): DecodeResult {
  let body: Raw;
  try {
    const reader = protobuf.Reader.create(data);
    reader.pos = 1;
    body = readMessage(reader, (commandPlan ??= planOf(WIRE.Command)), data.byteLength);
  } catch (err) {
    if (err instanceof WireError) return invalid(`command: ${err.message}`);
    return invalid('command: not a valid protobuf Command');
  }
  const present = Object.keys(body).filter((k) => body[k] !== undefined);
  if (present.length !== 1) return invalid('command: must hold exactly one command');
  const type = TYPE_OF_BODY.get(present[0])!;
  const raw = body[present[0]] as Raw;
  let o: Raw = raw;
  const records = { used: false };
  try {
    if (type === 'kv.put') o = putOf(raw, 'record', records);
    if (type === 'kv.txn') {
      o = {
        ...raw,
        compares: (raw.compares as Raw[]).map(dropUndefined),
        // The JSON form's {op, key, value} from the oneof.
        ops: (raw.ops as Raw[]).map((op, i) => (op.put !== undefined ? { op: 'put', ...putOf(op.put as Raw, `ops[${i}].record`, records) } : op.delete !== undefined ? { op: 'delete', ...(op.delete as Raw) } : {})),
      };
    }
  } catch (err) {
    if (err instanceof InvalidFieldError) return invalid(err.message);
    throw err;
  }
  const read = readCommand(type, { type, ...o });
  return read.ok && records.used ? { ...read, usesRecords: true } : read;
}

/**
 * A put as the JSON form has it ({key, value}, the value as text or bytes): a record's protobuf
 * is read as its JSON text; neither content is an empty value (proto3's default).
 */
function putOf(raw: Raw, path: string, records: { used: boolean }): Raw {
  // path: where the record field is, for errors ('record', 'ops[2].record').
  const { record, ...rest } = raw;
  if (record === undefined) return rest.value === undefined ? { ...rest, value: '' } : dropUndefined(rest);
  const kind = typeof raw.key === 'string' ? recordKindOf(raw.key) : undefined;
  if (!kind) throw new InvalidFieldError(path, 'a record is only for keys under apps/, tasks/ or taskstatus/');
  records.used = true;
  try {
    return { ...dropUndefined(rest), value: recordTextFromCommand(kind, record as Uint8Array) };
  } catch (err) {
    if (err instanceof DecodeError) throw new InvalidFieldError(path, `not a ${kind} record in the form this omnid writes`);
    throw err;
  }
}

/**
 * A message of proto/omni.proto (by name, e.g. 'NodeRow') as protobuf, from a plain object with
 * its fields in camelCase (the state's own record rows, protocol/cluster/state.ts).
 */
export function encodeMessage(typeName: string, obj: object): Uint8Array {
  const buf = WIRE_ROOT.lookupType(`omni.${typeName}`).encode(obj).finish();
  return new Uint8Array(buf);
}

/**
 * A message of proto/omni.proto read strictly, as commands are (an unknown field, a wrong wire
 * type, malformed UTF-8 or a truncation throws InvalidFieldError naming `path`): absent scalars
 * as their defaults, repeated fields as [], maps as {}, absent optional fields and messages left
 * out. The caller validates the fields (the same readers as for JSON).
 */
export function decodeMessage(typeName: string, bytes: Uint8Array, path: string): Record<string, unknown> {
  try {
    const reader = protobuf.Reader.create(bytes);
    return readMessage(reader, planOf(WIRE_ROOT.lookupType(`omni.${typeName}`)), bytes.byteLength);
  } catch (err) {
    if (err instanceof WireError) throw new InvalidFieldError(path, err.message);
    throw new InvalidFieldError(path, `not a valid ${typeName}`);
  }
}

/** How readMessage reads one field (compiled once per message type from the schema). */
interface FieldPlan {
  name: string;
  wireType: number;
  kind: 'map' | 'message' | 'string' | 'bytes' | 'double' | 'bool' | 'uint64';
  repeated: boolean;
  /** The other members of its oneof (a later one replaces an earlier one). */
  siblings: string[];
  message?: MessagePlan;
}
interface MessagePlan {
  name: string;
  byId: (FieldPlan | undefined)[];
  /** Filled in when absent: proto3 scalars (their default), repeated fields ([]) and maps ({}). */
  defaults: [string, () => unknown][];
}

const PLANS = new Map<protobuf.Type, MessagePlan>();

function planOf(type: protobuf.Type): MessagePlan {
  let plan = PLANS.get(type);
  if (plan) return plan;
  plan = { name: type.name, byId: [], defaults: [] };
  PLANS.set(type, plan);
  for (const f of type.fieldsArray) {
    const kind: FieldPlan['kind'] = f.map ? 'map' : f.resolvedType ? 'message' : (f.type as FieldPlan['kind']);
    if (!['map', 'message', 'string', 'bytes', 'double', 'bool', 'uint64'].includes(kind)) throw new Error(`command schema: unsupported type ${f.type}`);
    const fp: FieldPlan = {
      name: f.name,
      wireType: kind === 'double' ? 1 : kind === 'bool' || kind === 'uint64' ? 0 : 2,
      kind,
      repeated: f.repeated && !f.map,
      siblings: f.partOf ? f.partOf.oneof.filter((n) => n !== f.name) : [],
    };
    if (kind === 'message') fp.message = planOf(f.resolvedType as protobuf.Type);
    plan.byId[f.id] = fp;
    if (f.map) plan.defaults.push([f.name, () => ({})]);
    else if (fp.repeated) plan.defaults.push([f.name, () => []]);
    else if (!f.partOf && kind !== 'message') {
      const d = kind === 'string' ? '' : kind === 'bool' ? false : kind === 'bytes' ? new Uint8Array(0) : 0;
      plan.defaults.push([f.name, () => d]);
    }
  }
  return plan;
}

/**
 * One message, strictly: a field the schema does not define, or on the wrong wire type, is a
 * WireError; absent proto3 scalars read as defaults, absent optional fields, oneof members and
 * messages stay absent. Strings are strict UTF-8; bytes are views into the input.
 */
function readMessage(reader: protobuf.Reader, plan: MessagePlan, end: number): Raw {
  const o: Raw = {};
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = plan.byId[tag >>> 3];
    if (field === undefined) throw new WireError(`${plan.name}: unknown field ${tag >>> 3}`);
    if ((tag & 7) !== field.wireType) throw new WireError(`${plan.name}.${field.name}: wrong wire type ${tag & 7}`);
    const value = readValue(reader, field);
    if (field.kind === 'map') {
      const [k, v] = value as [string, string];
      let m = o[field.name] as Raw | undefined;
      if (m === undefined) o[field.name] = m = {};
      // defineProperty: a '__proto__' key stays a plain key.
      Object.defineProperty(m, k, { value: v, enumerable: true, writable: true, configurable: true });
    } else if (field.repeated) {
      let list = o[field.name] as unknown[] | undefined;
      if (list === undefined) o[field.name] = list = [];
      list.push(value);
    } else {
      // A later member of a oneof replaces an earlier one (protobuf's rule).
      for (const name of field.siblings) if (o[name] !== undefined) o[name] = undefined;
      o[field.name] = value;
    }
  }
  if (reader.pos !== end) throw new WireError(`${plan.name}: truncated`);
  for (const [name, make] of plan.defaults) if (o[name] === undefined) o[name] = make();
  return o;
}

function readValue(reader: protobuf.Reader, field: FieldPlan): unknown {
  switch (field.kind) {
    case 'map': {
      const end = reader.uint32() + reader.pos;
      let k = '';
      let v = '';
      while (reader.pos < end) {
        const tag = reader.uint32();
        if (tag !== 0x0a && tag !== 0x12) throw new WireError(`${field.name}: bad map entry`);
        const text = readWireText(reader, field);
        if (tag === 0x0a) k = text;
        else v = text;
      }
      if (reader.pos !== end) throw new WireError(`${field.name}: truncated map entry`);
      return [k, v];
    }
    case 'message': {
      const len = reader.uint32();
      const end = reader.pos + len;
      if (end > reader.len) throw new WireError(`${field.name}: truncated`);
      return readMessage(reader, field.message!, end);
    }
    case 'string': return readWireText(reader, field);
    case 'bytes': return readBytes(reader, field);
    case 'double': return reader.double();
    case 'bool': return reader.bool();
    case 'uint64': {
      const v = reader.uint64() as unknown as number | { toNumber(): number };
      return typeof v === 'number' ? v : v.toNumber();
    }
  }
}

function readWireText(reader: protobuf.Reader, field: FieldPlan): string {
  const bytes = readBytes(reader, field);
  try {
    return decodeText(bytes);
  } catch {
    throw new WireError(`${field.name}: not valid UTF-8`);
  }
}

/** A length-delimited field's bytes: a view, whether the input is a Buffer or not. */
function readBytes(reader: protobuf.Reader, field: FieldPlan): Uint8Array {
  const len = reader.uint32();
  const start = reader.pos;
  if (start + len > reader.len) throw new WireError(`${field.name}: truncated`);
  reader.pos += len;
  return reader.buf.subarray(start, start + len);
}

/**
 * Strict UTF-8 (throws on malformed input), the same whatever the input's class (protobufjs
 * reads strings differently from a Buffer and from a Uint8Array). Short ASCII without TextDecoder.
 */
function decodeText(b: Uint8Array): string {
  if (b.byteLength <= 64) {
    let ascii = true;
    for (let i = 0; i < b.byteLength; i++) if (b[i] >= 0x80) { ascii = false; break; }
    if (ascii) return String.fromCharCode.apply(null, b as unknown as number[]);
  } else if (isAscii(b)) {
    // ASCII (checked natively) is its own Latin-1: copied into a string ~30x faster than the strict decoder (1 MiB: 0.1 vs 3.5 ms).
    return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('latin1');
  }
  return utf8Decoder.decode(b);
}

// ---------------------------------------------------------------------------
// Command readers: raw JSON → Command, throwing InvalidFieldError on the first bad field

type Raw = Record<string, unknown>;

const COMMAND_READERS = new Map<string, (o: Raw) => Command>([
  ['cluster.init', (o) => {
    fields(o, '', ['type', 'clusterId', 'voterTarget', 'rootNodeId', 'ephemeralRoot'], ['maxStateBytes']);
    const c: ClusterInitCommand = {
      type: 'cluster.init',
      clusterId: readClusterId(o.clusterId, 'clusterId', false),
      voterTarget: readNumber(o.voterTarget, 'voterTarget'),
      rootNodeId: readNodeId(o.rootNodeId, 'rootNodeId', true),
      ephemeralRoot: readBoolean(o.ephemeralRoot, 'ephemeralRoot'),
    };
    if (o.maxStateBytes !== undefined) c.maxStateBytes = readSafeInt(o.maxStateBytes, 'maxStateBytes', 0);
    return c;
  }],
  ['config.set', (o) => {
    fields(o, '', ['type', 'voterTarget'], ['maxStateBytes']);
    const c: ConfigSetCommand = { type: 'config.set', voterTarget: readNumber(o.voterTarget, 'voterTarget') };
    if (o.maxStateBytes !== undefined) c.maxStateBytes = readSafeInt(o.maxStateBytes, 'maxStateBytes', 0);
    return c;
  }],
  ['root.retire', (o) => {
    fields(o, '', ['type']);
    return { type: 'root.retire' };
  }],
  ['node.register', (o) => {
    fields(o, '', ['type', 'node']);
    return { type: 'node.register', node: readNodeRegistration(o.node, 'node') };
  }],
  ['node.status', (o) => {
    fields(o, '', ['type', 'id', 'status'], ['reason']);
    const c: NodeStatusCommand = {
      type: 'node.status',
      id: readNodeId(o.id, 'id', false),
      status: readOneOf(o.status, 'status', ['up', 'down'] as const),
    };
    if (o.reason !== undefined) c.reason = readStatusReason(o.reason, 'reason');
    return c;
  }],
  ['node.remove', (o) => {
    fields(o, '', ['type', 'id']);
    return { type: 'node.remove', id: readNodeId(o.id, 'id', false) };
  }],
  ['node.eligibility', (o) => {
    fields(o, '', ['type', 'id', 'eligibility'], ['expected']);
    const c: NodeEligibilityCommand = { type: 'node.eligibility', id: readNodeId(o.id, 'id', false), eligibility: readOneOf(o.eligibility, 'eligibility', NODE_ELIGIBILITIES) };
    if (o.expected !== undefined) c.expected = readOneOf(o.expected, 'expected', NODE_ELIGIBILITIES);
    return c;
  }],
  ['token.add', (o) => {
    fields(o, '', ['type', 'token']);
    const t = readObject(o.token, 'token', ['id', 'hash', 'role', 'name']);
    return { type: 'token.add', token: readTokenGrant(t, 'token') };
  }],
  ['token.revoke', (o) => {
    fields(o, '', ['type', 'id']);
    return { type: 'token.revoke', id: readTokenId(o.id, 'id') };
  }],
  ['kv.put', (o) => {
    fields(o, '', ['type', 'key', 'value'], ['expectedVersion']);
    const c: KvPutCommand = { type: 'kv.put', key: readKvKey(o.key, 'key'), value: readKvValue(o.value, 'value') };
    if (o.expectedVersion !== undefined) c.expectedVersion = readSafeInt(o.expectedVersion, 'expectedVersion', 0);
    return c;
  }],
  ['kv.delete', (o) => {
    fields(o, '', ['type', 'key'], ['expectedVersion']);
    const c: KvDeleteCommand = { type: 'kv.delete', key: readKvKey(o.key, 'key') };
    if (o.expectedVersion !== undefined) c.expectedVersion = readSafeInt(o.expectedVersion, 'expectedVersion', 0);
    return c;
  }],
  ['kv.txn', (o) => {
    fields(o, '', ['type', 'compares', 'ops']);
    if (!Array.isArray(o.compares) || o.compares.length > MAX_TXN_COMPARES) throw new InvalidFieldError('compares', `must be an array of at most ${MAX_TXN_COMPARES} compares`);
    if (!Array.isArray(o.ops) || o.ops.length > MAX_TXN_OPS) throw new InvalidFieldError('ops', `must be an array of at most ${MAX_TXN_OPS} operations`);
    const compares = o.compares.map((raw: unknown, i: number) => {
      const c = readObject(raw, `compares[${i}]`, ['key'], ['version', 'value']);
      const key = readKvKey(c.key, `compares[${i}].key`);
      if ((c.version === undefined) === (c.value === undefined)) throw new InvalidFieldError(`compares[${i}]`, 'must have exactly one of version and value');
      if (c.value !== undefined) return { key, value: readKvValue(c.value, `compares[${i}].value`) };
      return { key, version: readSafeInt(c.version, `compares[${i}].version`, 0) };
    });
    const seen = new Set<string>();
    const ops = o.ops.map((raw: unknown, i: number): KvTxnOp => {
      const r = raw as Record<string, unknown>;
      const op = r !== null && typeof r === 'object' ? r.op : undefined;
      let out: KvTxnOp;
      if (op === 'put') {
        const c = readObject(raw, `ops[${i}]`, ['op', 'key', 'value']);
        out = { op: 'put', key: readKvKey(c.key, `ops[${i}].key`), value: readKvValue(c.value, `ops[${i}].value`) };
      } else if (op === 'delete') {
        const c = readObject(raw, `ops[${i}]`, ['op', 'key']);
        out = { op: 'delete', key: readKvKey(c.key, `ops[${i}].key`) };
      } else throw new InvalidFieldError(`ops[${i}].op`, 'must be "put" or "delete"');
      if (seen.has(out.key)) throw new InvalidFieldError(`ops[${i}].key`, `key ${JSON.stringify(out.key)} appears twice in one transaction`);
      seen.add(out.key);
      return out;
    });
    return { type: 'kv.txn', compares, ops } satisfies KvTxnCommand;
  }],
]);

/** The command types decodeCommand knows (the readers above): tests check every one has an authz row. */
export function decodableCommandTypes(): string[] {
  return [...COMMAND_READERS.keys()];
}

// ---------------------------------------------------------------------------
// Field readers, shared with the snapshot restore of state.ts. Each returns a fresh,
// normalized value (no -0, labels in key order) or throws InvalidFieldError naming `path`.

export class InvalidFieldError extends Error {
  constructor(path: string, why: string) {
    super(`${path}: ${why}`);
    this.name = 'InvalidFieldError';
  }
}

const NODE_ID = /^[A-Za-z0-9]+$/;
const NODE_NAME = /^[a-zA-Z0-9._-]+$/;
const CLUSTER_ID = /^[a-zA-Z0-9._-]+$/;
const ARCH = /^[a-zA-Z0-9._-]+$/;
const LABEL_KEY = /^[a-zA-Z0-9._/-]+$/;
const TOKEN_ID = /^[a-zA-Z0-9_-]+$/;
const TOKEN_HASH = /^[0-9a-f]{64}$/;
const API_URL = /^https?:\/\/[^\s]+$/;
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;

export function isPlainObject(v: unknown): v is Raw {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object with exactly the required fields (plus any of the optional ones). */
export function readObject(v: unknown, path: string, required: readonly string[], optional: readonly string[] = []): Raw {
  if (!isPlainObject(v)) throw new InvalidFieldError(path, 'must be an object');
  fields(v, path, required, optional);
  return v;
}

/** A field whose value is undefined counts as absent (as JSON.stringify drops it; parsed JSON never has one). */
function fields(o: Raw, path: string, required: readonly string[], optional: readonly string[] = []): void {
  for (const k of Object.keys(o)) {
    if (!required.includes(k) && !optional.includes(k) && o[k] !== undefined) throw new InvalidFieldError(fieldPath(path, k), 'unknown field');
  }
  for (const k of required) {
    if (!Object.hasOwn(o, k) || o[k] === undefined) throw new InvalidFieldError(join(path, k), 'missing');
  }
}

export function readBoolean(v: unknown, path: string): boolean {
  if (typeof v !== 'boolean') throw new InvalidFieldError(path, 'must be true or false');
  return v;
}

export function readNumber(v: unknown, path: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new InvalidFieldError(path, 'must be a number');
  return v === 0 ? 0 : v;
}

export function readSafeInt(v: unknown, path: string, min: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    throw new InvalidFieldError(path, `must be an integer from ${min} to ${Number.MAX_SAFE_INTEGER}`);
  }
  return v === 0 ? 0 : v;
}

export function readOneOf<T extends string>(v: unknown, path: string, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
    throw new InvalidFieldError(path, `must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  }
  return v as T;
}

/** Any well-formed string of at most maxChars UTF-16 code units. */
export function readText(v: unknown, path: string, maxChars: number, minChars = 0): string {
  if (typeof v !== 'string' || v.length > maxChars) {
    throw new InvalidFieldError(path, `must be a string of at most ${maxChars} characters`);
  }
  if (v.length < minChars) throw new InvalidFieldError(path, 'must not be empty');
  if (!isWellFormedUnicode(v)) throw new InvalidFieldError(path, 'must be well-formed Unicode');
  return v;
}

function readPrintable(v: unknown, path: string, maxChars: number, minChars = 0): string {
  const s = readText(v, path, maxChars, minChars);
  if (CONTROL_CHARS.test(s)) throw new InvalidFieldError(path, 'must not contain control characters');
  return s;
}

function readPattern(v: unknown, path: string, maxChars: number, pattern: RegExp, charset: string): string {
  const s = readText(v, path, maxChars, 1);
  if (!pattern.test(s)) throw new InvalidFieldError(path, `must contain only ${charset}`);
  return s;
}

export function readStatusReason(v: unknown, path: string): string {
  return readPrintable(v, path, MAX_STATUS_REASON_CHARS);
}

export function isNodeId(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_NODE_ID_CHARS && NODE_ID.test(v);
}

/** A node id; '' too when allowEmpty. */
export function readNodeId(v: unknown, path: string, allowEmpty: boolean): string {
  if (allowEmpty && v === '') return '';
  return readPattern(v, path, MAX_NODE_ID_CHARS, NODE_ID, '[A-Za-z0-9]');
}

export function readClusterId(v: unknown, path: string, allowEmpty: boolean): string {
  if (allowEmpty && v === '') return '';
  return readPattern(v, path, MAX_CLUSTER_ID_CHARS, CLUSTER_ID, '[a-zA-Z0-9._-]');
}

export function readNodeName(v: unknown, path: string): string {
  return readPattern(v, path, MAX_NODE_NAME_CHARS, NODE_NAME, '[a-zA-Z0-9._-]');
}

export function readNodeRegistration(v: unknown, path: string): NodeRegistration {
  const o = readObject(v, path, ['id', 'name', 'addrs', 'apiUrl', 'resources', 'labels']);
  return readNodeRegistrationFields(o, path);
}

/** The registration fields of o (a node.register payload or a snapshot's NodeRecord). */
export function readNodeRegistrationFields(o: Raw, path: string): NodeRegistration {
  return {
    id: readNodeId(o.id, join(path, 'id'), false),
    name: readNodeName(o.name, join(path, 'name')),
    addrs: readAddrs(o.addrs, join(path, 'addrs')),
    apiUrl: readApiUrl(o.apiUrl, join(path, 'apiUrl')),
    resources: readResources(o.resources, join(path, 'resources')),
    labels: readLabels(o.labels, join(path, 'labels')),
  };
}

function readAddrs(v: unknown, path: string): string[] {
  if (!Array.isArray(v) || v.length > MAX_NODE_ADDRS) {
    throw new InvalidFieldError(path, `must be an array of at most ${MAX_NODE_ADDRS} strings`);
  }
  return v.map((a, i) => readPrintable(a, `${path}[${i}]`, MAX_NODE_ADDR_CHARS, 1));
}

function readApiUrl(v: unknown, path: string): string {
  const s = readPrintable(v, path, MAX_API_URL_CHARS, 1);
  if (!API_URL.test(s)) throw new InvalidFieldError(path, 'must start with http:// or https:// and contain no spaces');
  return s;
}

function readResources(v: unknown, path: string): NodeResources {
  const o = readObject(v, path, ['cpuCores', 'memoryBytes', 'diskBytes', 'arch', 'gpus'], ['drivers']);
  const cpuCores = readNumber(o.cpuCores, join(path, 'cpuCores'));
  if (cpuCores < 0 || cpuCores > MAX_CPU_CORES) {
    throw new InvalidFieldError(join(path, 'cpuCores'), `must be a number from 0 to ${MAX_CPU_CORES}`);
  }
  return {
    cpuCores,
    memoryBytes: readSafeInt(o.memoryBytes, join(path, 'memoryBytes'), 0),
    diskBytes: readSafeInt(o.diskBytes, join(path, 'diskBytes'), 0),
    arch: readPattern(o.arch, join(path, 'arch'), MAX_ARCH_CHARS, ARCH, '[a-zA-Z0-9._-]'),
    gpus: readGpus(o.gpus, join(path, 'gpus')),
    ...readDrivers(o.drivers, join(path, 'drivers')),
  };
}

const MAX_NODE_DRIVERS = 16;
const DRIVER_NAME = /^[a-z][a-z0-9-]{0,31}$/;

/** Absent or empty: not reported (the field is left out, so both encodings give the same record). */
function readDrivers(v: unknown, path: string): { drivers?: string[] } {
  if (v === undefined) return {};
  if (!Array.isArray(v) || v.length > MAX_NODE_DRIVERS || !v.every((d) => typeof d === 'string' && DRIVER_NAME.test(d))) {
    throw new InvalidFieldError(path, `must be a list of at most ${MAX_NODE_DRIVERS} driver names`);
  }
  return v.length === 0 ? {} : { drivers: [...new Set(v as string[])].sort() };
}

function readGpus(v: unknown, path: string): GpuInfo[] {
  if (!Array.isArray(v) || v.length > MAX_NODE_GPUS) {
    throw new InvalidFieldError(path, `must be an array of at most ${MAX_NODE_GPUS} GPUs`);
  }
  return v.map((g, i) => {
    const p = `${path}[${i}]`;
    const o = readObject(g, p, ['model', 'memoryBytes']);
    return {
      model: readPrintable(o.model, join(p, 'model'), MAX_GPU_MODEL_CHARS, 1),
      memoryBytes: readSafeInt(o.memoryBytes, join(p, 'memoryBytes'), 0),
    };
  });
}

function readLabels(v: unknown, path: string): Record<string, string> {
  if (!isPlainObject(v)) throw new InvalidFieldError(path, 'must be an object of strings');
  const keys = Object.keys(v);
  if (keys.length > MAX_NODE_LABELS) throw new InvalidFieldError(path, `must hold at most ${MAX_NODE_LABELS} labels`);
  const entries = keys.sort().map((k): [string, string] => {
    const p = `${path}[${quote(k)}]`;
    readPattern(k, `${p} key`, MAX_LABEL_KEY_CHARS, LABEL_KEY, '[a-zA-Z0-9._/-]');
    return [k, readText(v[k], p, MAX_LABEL_VALUE_CHARS)];
  });
  // fromEntries defines own properties, so even a '__proto__' label stays a plain label.
  return Object.fromEntries(entries);
}

export function readTokenId(v: unknown, path: string): string {
  return readPattern(v, path, MAX_TOKEN_ID_CHARS, TOKEN_ID, '[a-zA-Z0-9_-]');
}

/** The grant fields of o (a token.add payload or a snapshot's TokenRecord). */
export function readTokenGrant(o: Raw, path: string): TokenGrant {
  return {
    id: readTokenId(o.id, join(path, 'id')),
    hash: readTokenHash(o.hash, join(path, 'hash')),
    role: readOneOf(o.role, join(path, 'role'), ['admin', 'join', 'pull'] as const),
    name: readPrintable(o.name, join(path, 'name'), MAX_TOKEN_NAME_CHARS),
  };
}

export function readTokenHash(v: unknown, path: string): string {
  if (typeof v !== 'string' || !TOKEN_HASH.test(v)) {
    throw new InvalidFieldError(path, 'must be 64 lowercase hex digits (SHA-256)');
  }
  return v;
}

export function readKvKey(v: unknown, path: string): string {
  if (typeof v !== 'string') throw new InvalidFieldError(path, 'must be a string');
  if (v.length === 0) throw new InvalidFieldError(path, 'must not be empty');
  // Checked on the UTF-16 length first so a huge string is never scanned.
  if (v.length > MAX_KV_KEY_BYTES || utf8SizeBytes(v) > MAX_KV_KEY_BYTES) {
    throw new InvalidFieldError(path, `must be at most ${MAX_KV_KEY_BYTES} bytes of UTF-8`);
  }
  if (!isWellFormedUnicode(v)) throw new InvalidFieldError(path, 'must be well-formed Unicode');
  if (CONTROL_CHARS.test(v)) throw new InvalidFieldError(path, 'must not contain control characters');
  return v;
}

/** A kv value: a string, or (the protobuf form) its UTF-8 bytes, checked before they are decoded. */
export function readKvValue(v: unknown, path: string): string {
  if (v instanceof Uint8Array) {
    if (v.byteLength > MAX_KV_VALUE_BYTES) throw new InvalidFieldError(path, `must be at most ${MAX_KV_VALUE_BYTES} bytes of UTF-8`);
    try {
      return v.byteLength === 0 ? '' : decodeText(v);
    } catch {
      throw new InvalidFieldError(path, 'must be well-formed Unicode');
    }
  }
  if (typeof v !== 'string') throw new InvalidFieldError(path, 'must be a string');
  if (v.length > MAX_KV_VALUE_BYTES || utf8SizeBytes(v) > MAX_KV_VALUE_BYTES) {
    throw new InvalidFieldError(path, `must be at most ${MAX_KV_VALUE_BYTES} bytes of UTF-8`);
  }
  if (!isWellFormedUnicode(v)) throw new InvalidFieldError(path, 'must be well-formed Unicode');
  return v;
}

/**
 * UTF-8 size of a string (a lone surrogate counts as the 3 bytes of U+FFFD), counted natively:
 * a JavaScript loop over a 1 MiB value was ~1 ms, and a cons string had to be flattened first.
 */
export function utf8SizeBytes(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

/** A character JSON.stringify writes as an escape (quote, backslash, control) or a code unit of a surrogate. */
const JSON_ESCAPED_OR_SURROGATE = /["\\\u0000-\u001f\ud800-\udfff]/;

/**
 * Bytes of `JSON.stringify(s)` in UTF-8, without building it (stringifying a 1 MiB value cost
 * ~7 ms, and every write of a record is sized on each node). JSON.stringify escapes `"` and `\\`
 * (2 bytes), \b \t \n \f \r (2), other control characters and lone surrogates (\uXXXX: 6).
 */
export function jsonStringBytes(s: string): number {
  const bytes = utf8SizeBytes(s) + 2;
  if (!JSON_ESCAPED_OR_SURROGATE.test(s)) return bytes;
  let extra = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x22 || c === 0x5c) extra += 1;
    else if (c < 0x20) extra += c === 8 || c === 9 || c === 10 || c === 12 || c === 13 ? 1 : 5;
    else if (c >= 0xd800 && c <= 0xdbff && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) i++;
    else if (c >= 0xd800 && c <= 0xdfff) extra += 3; // \uXXXX instead of U+FFFD's 3 bytes
  }
  return bytes + extra;
}

export function isOddVoterTarget(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_VOTER_TARGET && n <= MAX_VOTER_TARGET && n % 2 === 1;
}

function join(path: string, field: string): string {
  return path === '' ? field : `${path}.${field}`;
}

/** A JSON-quoted string, cut to MAX_QUOTED_CHARS so messages stay short. */
export function quote(s: string): string {
  return JSON.stringify(s.length > MAX_QUOTED_CHARS ? `${s.slice(0, MAX_QUOTED_CHARS)}…` : s);
}

/** path.k for a plain field name, path["k"] for anything else. */
function fieldPath(path: string, k: string): string {
  return /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) && k.length <= MAX_QUOTED_CHARS ? join(path, k) : `${path}[${quote(k)}]`;
}
