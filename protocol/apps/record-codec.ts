// The apps' records (AppRecord, TaskRecord, TaskStatusRecord of model.ts) in protobuf (AppRec,
// TaskRec, TaskStatusRec in proto/omni.proto): how the state keeps them on disk and in snapshots
// (protocol/cluster/record-store.ts), instead of their JSON text inside a kv page.
//
// The kv API still reads and writes a record as JSON text, and a transaction may compare that
// text: so a text is kept as protobuf only when the protobuf renders back to exactly the same
// text (encodeRecordText); anything else (an older field order, a field this build does not know,
// a value of another type) is kept as the text it is. The writers of this build produce the
// rendering itself (recordJson), so what Omni writes is kept as protobuf. Rendering writes the
// fields in the schema's order: scalars always (as the JSON records have them), proto3
// `optional` scalars and message fields only when present. Three wrapper messages carry what
// protobuf has no word for: RecNullableInt (a number or null), RecInts and RecStrings (an
// optional list: absent differs from empty).
//
// Pure: no I/O. A decoder failure is a DecodeError.
import protobuf from 'protobufjs';
import { Buffer } from 'node:buffer';
import { DecodeError, OMNI_ROOT, toNumber, type U64 } from '../codec.js';
import { isWellFormedUnicode } from '../unicode.js';
import { APP_PREFIX, STATUS_PREFIX, TASK_PREFIX, type AppRecord, type TaskRecord, type TaskStatusRecord } from './model.js';

export type RecordKind = 'app' | 'task' | 'status';

/** The kv prefixes whose records are kept in protobuf (with the kind of record under each). */
export const RECORD_PREFIXES: readonly (readonly [string, RecordKind])[] = [
  [APP_PREFIX, 'app'],
  [TASK_PREFIX, 'task'],
  [STATUS_PREFIX, 'status'],
];

/** The kind of record a kv key holds, or undefined for a key outside RECORD_PREFIXES. */
export function recordKindOf(key: string): RecordKind | undefined {
  for (const [prefix, kind] of RECORD_PREFIXES) if (key.startsWith(prefix)) return kind;
  return undefined;
}

const TYPES: Record<RecordKind, protobuf.Type> = {
  app: OMNI_ROOT.lookupType('omni.AppRec'),
  task: OMNI_ROOT.lookupType('omni.TaskRec'),
  status: OMNI_ROOT.lookupType('omni.TaskStatusRec'),
};
const NULLABLE_INT = 'RecNullableInt';
const LISTS: ReadonlyMap<string, string> = new Map([
  ['RecInts', 'int'],
  ['RecStrings', 'string'],
]);
/** 64-bit integers only: a 32-bit field would need a range check (protobuf truncates), so none is used. */
const INT_TYPES = new Set(['int64', 'sint64', 'uint64']);
/**
 * Most fields and list elements one rendering writes: a record of a few bytes can stand for many
 * empty messages, each rendered with every field, so bytes from a peer are rendered within this
 * budget (about 1 MiB of text, the largest kv value) or refused.
 */
const MAX_RENDERED_FIELDS = 250_000;
/** Texts whose protobuf form was computed lately (a command's record rendered, then kept): computed once. */
const MEMO_ENTRIES = 256;

/** A field that renders only when present: a proto3 `optional` scalar or a message. */
const isOptional = (f: protobuf.Field): boolean => f.resolvedType !== null || f.partOf !== null;

/** The fields in schema order (by field number, the order they are declared in). */
const fieldsOf = (t: protobuf.Type): protobuf.Field[] => {
  t.resolveAll();
  return [...t.fieldsArray].sort((a, b) => a.id - b.id);
};
const FIELDS = new Map<protobuf.Type, protobuf.Field[]>();
function fields(t: protobuf.Type): protobuf.Field[] {
  let f = FIELDS.get(t);
  if (!f) FIELDS.set(t, (f = fieldsOf(t)));
  return f;
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && !Object.is(v, -0);

/** NOT_A_RECORD: the value has no exact protobuf form (kept as text). */
const NOT_A_RECORD = Symbol('not a record');

/** A scalar of field f from JSON, as protobufjs encodes it; NOT_A_RECORD when it does not fit. */
function scalarIn(f: protobuf.Field, v: unknown): unknown {
  if (f.type === 'string') return typeof v === 'string' && isWellFormedUnicode(v) ? v : NOT_A_RECORD;
  if (f.type === 'bool') return typeof v === 'boolean' ? v : NOT_A_RECORD;
  if (INT_TYPES.has(f.type)) return isInt(v) && (v >= 0 || f.type.startsWith('s') || f.type === 'int64') ? v : NOT_A_RECORD;
  if (f.type === 'double') return typeof v === 'number' && Number.isFinite(v) && !Object.is(v, -0) ? v : NOT_A_RECORD;
  return NOT_A_RECORD;
}

/** A message of type t from a JSON value (a plain object), or NOT_A_RECORD. */
function messageIn(t: protobuf.Type, v: unknown): Record<string, unknown> | typeof NOT_A_RECORD {
  if (!isObject(v)) return NOT_A_RECORD;
  const out: Record<string, unknown> = {};
  let used = 0;
  for (const f of fields(t)) {
    const x = v[f.name];
    if (x === undefined) {
      if (Object.hasOwn(v, f.name) || !isOptional(f)) return NOT_A_RECORD;
      continue;
    }
    used++;
    const m = fieldIn(f, x);
    if (m === NOT_A_RECORD) return NOT_A_RECORD;
    out[f.name] = m;
  }
  // A key the schema does not have (or one set to undefined, which JSON drops) has no exact form.
  return Object.keys(v).length === used ? out : NOT_A_RECORD;
}

function fieldIn(f: protobuf.Field, x: unknown): unknown {
  const t = f.resolvedType instanceof protobuf.Type ? f.resolvedType : undefined;
  if (f.repeated) {
    if (!Array.isArray(x)) return NOT_A_RECORD;
    const out: unknown[] = [];
    for (const e of x) {
      const m = t ? (t.name === NULLABLE_INT ? nullableIn(e) : messageIn(t, e)) : scalarIn(f, e);
      if (m === NOT_A_RECORD) return NOT_A_RECORD;
      out.push(m);
    }
    return out;
  }
  if (!t) return scalarIn(f, x);
  if (t.name === NULLABLE_INT) return nullableIn(x);
  const list = LISTS.get(t.name);
  if (list) {
    if (!Array.isArray(x)) return NOT_A_RECORD;
    const ok = list === 'int' ? x.every((e) => isInt(e)) : x.every((e) => typeof e === 'string' && isWellFormedUnicode(e));
    return ok ? { values: x } : NOT_A_RECORD;
  }
  return messageIn(t, x);
}

function nullableIn(v: unknown): unknown {
  if (v === null) return {};
  return isInt(v) ? { value: v } : NOT_A_RECORD;
}

/** An integer as protobufjs decodes it (a Long, or a number) → number; DecodeError past 2^53. */
function toInt(v: unknown, path: string): number {
  const n = toNumber(v as U64);
  if (!Number.isSafeInteger(n)) throw new DecodeError(`${path}: not a safe integer`);
  return n;
}

function scalarOut(f: protobuf.Field, v: unknown, path: string): unknown {
  return INT_TYPES.has(f.type) ? toInt(v, path) : v;
}

interface Budget {
  fields: number;
}

function spend(budget: Budget, n: number, path: string): void {
  budget.fields -= n;
  if (budget.fields < 0) throw new DecodeError(`${path}: renders to more than ${MAX_RENDERED_FIELDS} fields`);
}

/** The JSON rendering (a plain object, fields in schema order) of a message of type t. */
function messageOut(t: protobuf.Type, m: Record<string, unknown>, path: string, budget: Budget): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  spend(budget, fields(t).length, path);
  for (const f of fields(t)) {
    const at = `${path}.${f.name}`;
    const ft = f.resolvedType instanceof protobuf.Type ? f.resolvedType : undefined;
    if (f.repeated) {
      const list = (m[f.name] ?? []) as unknown[];
      spend(budget, list.length, at);
      out[f.name] = list.map((e, i) => (ft ? (ft.name === NULLABLE_INT ? nullableOut(e as Record<string, unknown>, `${at}[${i}]`) : messageOut(ft, e as Record<string, unknown>, `${at}[${i}]`, budget)) : scalarOut(f, e, `${at}[${i}]`)));
      continue;
    }
    const present = Object.hasOwn(m, f.name) && m[f.name] !== null && m[f.name] !== undefined;
    if (isOptional(f) && !present) continue;
    const x = present ? m[f.name] : f.typeDefault;
    if (!ft) out[f.name] = scalarOut(f, x, at);
    else if (ft.name === NULLABLE_INT) out[f.name] = nullableOut(x as Record<string, unknown>, at);
    else if (LISTS.has(ft.name)) {
      const values = ((x as Record<string, unknown>).values ?? []) as unknown[];
      spend(budget, values.length, at);
      out[f.name] = LISTS.get(ft.name) === 'int' ? values.map((e, i) => toInt(e, `${at}[${i}]`)) : values;
    } else out[f.name] = messageOut(ft, x as Record<string, unknown>, at, budget);
  }
  return out;
}

function nullableOut(m: Record<string, unknown>, path: string): number | null {
  return Object.hasOwn(m, 'value') && m.value !== null && m.value !== undefined ? toInt(m.value, path) : null;
}

/** Records of these kinds, by kind. */
export interface RecordOf {
  app: AppRecord;
  task: TaskRecord;
  status: TaskStatusRecord;
}

/**
 * The protobuf form of a record's JSON text, when that form renders back to exactly this text;
 * undefined otherwise (the text is kept as it is). Never throws.
 */
export function encodeRecordText(kind: RecordKind, text: string): Uint8Array | undefined {
  const memo = MEMO.get(text);
  if (memo && memo.kind === kind) return memo.bytes;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const t = TYPES[kind];
  const m = messageIn(t, parsed);
  if (m === NOT_A_RECORD) return undefined;
  let rendered: string;
  try {
    rendered = JSON.stringify(messageOut(t, m, kind, { fields: MAX_RENDERED_FIELDS }));
  } catch (err) {
    if (err instanceof DecodeError) return undefined;
    throw err;
  }
  // A copy: protobufjs hands out views into a shared 8 KiB pool, which a kept record would pin.
  return rendered === text ? new Uint8Array(t.encode(m).finish()) : undefined;
}

const MEMO = new Map<string, { kind: RecordKind; bytes: Uint8Array }>();

function remember(kind: RecordKind, text: string, bytes: Uint8Array): void {
  if (MEMO.size >= MEMO_ENTRIES) MEMO.delete(MEMO.keys().next().value!);
  MEMO.set(text, { kind, bytes });
}

/**
 * The JSON text of a record that came in a command (from a peer): the bytes must be exactly
 * what this build writes for that text (encodeRecordText) — so a field this build does not know,
 * malformed UTF-8 or any other encoding of the same record is refused (DecodeError), never read
 * leniently, and every replica reads the same text whatever class of array holds the bytes.
 */
export function recordTextFromCommand(kind: RecordKind, bytes: Uint8Array): string {
  const text = renderRecord(kind, bytes);
  const canonical = encodeRecordText(kind, text);
  if (!canonical || !Buffer.from(canonical.buffer, canonical.byteOffset, canonical.byteLength).equals(bytes)) throw new DecodeError(`${kind} record: not in the form this build writes`);
  // The state keeps the record next (RecordStore.set): its protobuf form is then at hand.
  remember(kind, text, canonical);
  return text;
}

/** The record (a plain object in JSON form) that bytes encode; DecodeError when they do not. */
export function decodeRecord<K extends RecordKind>(kind: K, bytes: Uint8Array): RecordOf[K] {
  const t = TYPES[kind];
  let m: protobuf.Message;
  try {
    m = t.decode(bytes);
  } catch (err) {
    throw new DecodeError(`${kind} record: ${(err as Error).message}`, { cause: err });
  }
  return messageOut(t, m as unknown as Record<string, unknown>, kind, { fields: MAX_RENDERED_FIELDS }) as unknown as RecordOf[K];
}

/** The JSON text of the record that bytes encode (what encodeRecordText was given). */
export function renderRecord(kind: RecordKind, bytes: Uint8Array): string {
  return JSON.stringify(decodeRecord(kind, bytes));
}

/**
 * The JSON text of a record as this build writes it: its fields in schema order, so the state
 * keeps it as protobuf. A record with a field the schema does not have is written as it is.
 */
export function recordJson<K extends RecordKind>(kind: K, rec: RecordOf[K]): string {
  const t = TYPES[kind];
  const m = messageIn(t, JSON.parse(JSON.stringify(rec)));
  return m === NOT_A_RECORD ? JSON.stringify(rec) : JSON.stringify(messageOut(t, m, kind, { fields: MAX_RENDERED_FIELDS }));
}

/** A record held as its protobuf bytes: decoded (once per call) when read. */
export class EncodedRecord<K extends RecordKind = RecordKind> {
  constructor(
    readonly kind: K,
    readonly bytes: Uint8Array,
  ) {}
  record(): RecordOf[K] {
    return decodeRecord(this.kind, this.bytes);
  }
  text(): string {
    return renderRecord(this.kind, this.bytes);
  }
}
