// Protobuf codec for the Raft types of protocol/raft/types.ts, on the schema in
// proto/omni.proto. Pure: the schema is embedded below as text (no file I/O at runtime);
// test/unit/codec.test.ts checks that the embedded text equals proto/omni.proto.
//
// Every decoder checks the input size before decoding, wraps any protobufjs failure in
// DecodeError, and validates the result (known enums, safe non-negative integers, bounded
// ids). Encoders run the same validation (EncodeError) and the same size limit.

import protobuf from 'protobufjs';
import {
  ConfChangeType,
  EMPTY_BYTES,
  EntryType,
  MessageType,
  type ConfChange,
  type ConfState,
  type Entry,
  type HardState,
  type Message,
  type Snapshot,
  type SnapshotMeta,
} from './raft/types.js';

/** Largest encoded RaftMessage (and Entry, Snapshot, HardState, ConfChange) accepted. */
export const MAX_RAFT_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Largest node id, in UTF-8 bytes. */
export const MAX_NODE_ID_BYTES = 256;
/** Most ids in one ConfState list (voters or learners). */
export const MAX_CONF_IDS = 10_000;

export class DecodeError extends Error {
  readonly code = 'DECODE_ERROR';
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'DecodeError';
  }
}

/** The value to encode breaks an invariant a decoder would check (a bug in the caller). */
export class EncodeError extends Error {
  readonly code = 'ENCODE_ERROR';
  constructor(message: string) {
    super(message);
    this.name = 'EncodeError';
  }
}

export class MessageTooLargeError extends Error {
  readonly code = 'MESSAGE_TOO_LARGE';
  readonly sizeBytes: number;
  readonly maxBytes: number;
  constructor(sizeBytes: number, maxBytes: number) {
    super(`message of ${sizeBytes} bytes exceeds the limit of ${maxBytes} bytes`);
    this.name = 'MessageTooLargeError';
    this.sizeBytes = sizeBytes;
    this.maxBytes = maxBytes;
  }
}

export function encodeRaftMessage(m: Message): Uint8Array {
  checkMessage(m, encodeFail);
  return encodeWith(schema.RaftMessage, m);
}

export function decodeRaftMessage(bytes: Uint8Array, maxBytes = MAX_RAFT_MESSAGE_BYTES): Message {
  const m = decodeWith(schema.RaftMessage, bytes, maxBytes, (raw: RawMessage) => toMessage(raw));
  checkMessage(m, decodeFail);
  return m;
}

export function encodeConfChange(cc: ConfChange): Uint8Array {
  checkConfChange(cc, encodeFail);
  return encodeWith(schema.ConfChange, cc);
}

export function decodeConfChange(bytes: Uint8Array, maxBytes = MAX_RAFT_MESSAGE_BYTES): ConfChange {
  const cc = decodeWith(schema.ConfChange, bytes, maxBytes, (raw: RawConfChange) => ({
    type: raw.type,
    node: raw.node,
  }));
  checkConfChange(cc, decodeFail);
  return cc;
}

export function encodeHardState(hs: HardState): Uint8Array {
  checkHardState(hs, encodeFail);
  return encodeWith(schema.HardState, hs);
}

export function decodeHardState(bytes: Uint8Array, maxBytes = MAX_RAFT_MESSAGE_BYTES): HardState {
  const hs = decodeWith(schema.HardState, bytes, maxBytes, (raw: RawHardState) => ({
    term: toNumber(raw.term),
    vote: raw.vote,
    commit: toNumber(raw.commit),
  }));
  checkHardState(hs, decodeFail);
  return hs;
}

export function encodeEntry(e: Entry): Uint8Array {
  checkEntry(e, 'entry', encodeFail);
  return encodeWith(schema.Entry, e);
}

export function decodeEntry(bytes: Uint8Array, maxBytes = MAX_RAFT_MESSAGE_BYTES): Entry {
  const e = decodeWith(schema.Entry, bytes, maxBytes, toEntry);
  checkEntry(e, 'entry', decodeFail);
  return e;
}

export function encodeSnapshot(s: Snapshot): Uint8Array {
  checkSnapshot(s, encodeFail);
  return encodeWith(schema.Snapshot, s);
}

export function decodeSnapshot(bytes: Uint8Array, maxBytes = MAX_RAFT_MESSAGE_BYTES): Snapshot {
  const s = decodeWith(schema.Snapshot, bytes, maxBytes, toSnapshot);
  checkSnapshot(s, decodeFail);
  return s;
}

// ---------------------------------------------------------------------------
// Encoding and decoding with protobufjs

function encodeWith(type: protobuf.Type, value: object): Uint8Array {
  // The field names of types.ts match the schema's camelCase names, so values encode as is.
  const writer = type.encode(value);
  // Checked before finish(), so an oversized message is never copied into one buffer.
  if (writer.len > MAX_RAFT_MESSAGE_BYTES) {
    throw new MessageTooLargeError(writer.len, MAX_RAFT_MESSAGE_BYTES);
  }
  const buf = writer.finish();
  // protobufjs returns a Node Buffer; hand out a plain Uint8Array view of the same bytes.
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

function decodeWith<Raw, T>(
  type: protobuf.Type,
  bytes: Uint8Array,
  maxBytes: number,
  convert: (raw: Raw) => T,
): T {
  if (bytes.byteLength > maxBytes) throw new MessageTooLargeError(bytes.byteLength, maxBytes);
  try {
    return convert(type.decode(bytes) as unknown as Raw);
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new DecodeError(`${type.name}: ${why}`, { cause: err });
  }
}

/** uint64 as protobufjs decodes it: a Long (when the long package is present) or a number. */
export type U64 = number | { toNumber(): number };
/** bytes as protobufjs decodes it: a Buffer, or a frozen [] when the field is absent. */
type RawBytes = Uint8Array | number[];

interface RawEntry { term: U64; index: U64; type: number; data: RawBytes }
interface RawConfState { voters: string[]; learners: string[] }
interface RawSnapshotMeta { index: U64; term: U64; conf: RawConfState | null }
interface RawSnapshot { meta: RawSnapshotMeta | null; data: RawBytes }
interface RawHardState { term: U64; vote: string; commit: U64 }
interface RawConfChange { type: number; node: string }
interface RawMessage {
  type: number; from: string; to: string; term: U64; logTerm: U64; index: U64;
  entries: RawEntry[]; commit: U64; reject: boolean; rejectHint: U64;
  snapshot: RawSnapshot | null; context: RawBytes;
}

/** A Long above 2^53 - 1 becomes an unsafe number, which the checks then reject. */
export function toNumber(v: U64): number {
  return typeof v === 'number' ? v : v.toNumber();
}

/** A plain Uint8Array copy: never a Buffer, never a view into the input. */
function toBytes(v: RawBytes): Uint8Array {
  // Empty byte fields (most contexts, no-op entries) share one array: typed arrays are heavy.
  return v.length === 0 ? EMPTY_BYTES : new Uint8Array(v);
}

/**
 * An entry's data at least this large is a view into the decoded message rather than a copy (a
 * 1 MiB copy was ~3 ms on a follower, fresh pages faulted in). The view keeps the message's
 * buffer alive, but the other entries of the message are appended to the log with it and leave
 * it together; small data is copied, so a small entry never holds a large message.
 */
export const ENTRY_VIEW_MIN_BYTES = 64 * 1024;

function entryData(v: RawBytes): Uint8Array {
  if (v.length < ENTRY_VIEW_MIN_BYTES || !(v instanceof Uint8Array)) return toBytes(v);
  return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function toEntry(raw: RawEntry): Entry {
  return { term: toNumber(raw.term), index: toNumber(raw.index), type: raw.type, data: entryData(raw.data) };
}

function toSnapshot(raw: RawSnapshot): Snapshot {
  const meta = raw.meta;
  const conf = meta?.conf;
  return {
    meta: {
      index: meta ? toNumber(meta.index) : 0,
      term: meta ? toNumber(meta.term) : 0,
      conf: { voters: [...(conf?.voters ?? [])], learners: [...(conf?.learners ?? [])] },
    },
    data: toBytes(raw.data),
  };
}

function toMessage(raw: RawMessage): Message {
  const m: Message = {
    type: raw.type,
    from: raw.from,
    to: raw.to,
    term: toNumber(raw.term),
    logTerm: toNumber(raw.logTerm),
    index: toNumber(raw.index),
    entries: raw.entries.map(toEntry),
    commit: toNumber(raw.commit),
    reject: raw.reject,
    rejectHint: toNumber(raw.rejectHint),
    context: toBytes(raw.context),
  };
  if (raw.snapshot != null) m.snapshot = toSnapshot(raw.snapshot);
  return m;
}

// ---------------------------------------------------------------------------
// Validation, shared by encoders (EncodeError) and decoders (DecodeError)

type Fail = (why: string) => never;
const decodeFail: Fail = (why) => {
  throw new DecodeError(why);
};
const encodeFail: Fail = (why) => {
  throw new EncodeError(why);
};

const enumValues = (e: object): ReadonlySet<unknown> =>
  new Set(Object.values(e).filter((v) => typeof v === 'number'));
const MESSAGE_TYPES = enumValues(MessageType);
const ENTRY_TYPES = enumValues(EntryType);
const CONF_CHANGE_TYPES = enumValues(ConfChangeType);

function checkEnum(v: number, known: ReadonlySet<unknown>, what: string, fail: Fail): void {
  if (!known.has(v)) fail(`${what}: unknown value ${v}`);
}

function checkU64(v: number, what: string, fail: Fail): void {
  if (!Number.isSafeInteger(v) || v < 0) fail(`${what}: ${v} is not a safe non-negative integer`);
}

function checkNodeId(id: string, what: string, fail: Fail, allowEmpty: boolean): void {
  if (typeof id !== 'string') fail(`${what}: not a string`);
  const sizeBytes = protobuf.util.utf8.length(id);
  if (sizeBytes > MAX_NODE_ID_BYTES) fail(`${what}: ${sizeBytes} bytes > ${MAX_NODE_ID_BYTES}`);
  if (!allowEmpty && sizeBytes === 0) fail(`${what}: empty node id`);
}

function checkEntry(e: Entry, what: string, fail: Fail): void {
  checkU64(e.term, `${what}.term`, fail);
  checkU64(e.index, `${what}.index`, fail);
  checkEnum(e.type, ENTRY_TYPES, `${what}.type`, fail);
}

function checkConfIds(ids: string[], what: string, fail: Fail): void {
  if (ids.length > MAX_CONF_IDS) fail(`${what}: ${ids.length} ids > ${MAX_CONF_IDS}`);
  for (const id of ids) checkNodeId(id, what, fail, false);
}

function checkConfState(c: ConfState, fail: Fail): void {
  checkConfIds(c.voters, 'conf.voters', fail);
  checkConfIds(c.learners, 'conf.learners', fail);
}

function checkSnapshotMeta(meta: SnapshotMeta, fail: Fail): void {
  checkU64(meta.index, 'snapshot.meta.index', fail);
  checkU64(meta.term, 'snapshot.meta.term', fail);
  checkConfState(meta.conf, fail);
}

function checkSnapshot(s: Snapshot, fail: Fail): void {
  checkSnapshotMeta(s.meta, fail);
}

function checkHardState(hs: HardState, fail: Fail): void {
  checkU64(hs.term, 'hardState.term', fail);
  checkNodeId(hs.vote, 'hardState.vote', fail, true);
  checkU64(hs.commit, 'hardState.commit', fail);
}

function checkConfChange(cc: ConfChange, fail: Fail): void {
  checkEnum(cc.type, CONF_CHANGE_TYPES, 'confChange.type', fail);
  checkNodeId(cc.node, 'confChange.node', fail, false);
}

function checkMessage(m: Message, fail: Fail): void {
  checkEnum(m.type, MESSAGE_TYPES, 'message.type', fail);
  checkNodeId(m.from, 'message.from', fail, true);
  checkNodeId(m.to, 'message.to', fail, true);
  checkU64(m.term, 'message.term', fail);
  checkU64(m.logTerm, 'message.logTerm', fail);
  checkU64(m.index, 'message.index', fail);
  checkU64(m.commit, 'message.commit', fail);
  checkU64(m.rejectHint, 'message.rejectHint', fail);
  m.entries.forEach((e, i) => checkEntry(e, `message.entries[${i}]`, fail));
  if (m.snapshot !== undefined) checkSnapshot(m.snapshot, fail);
}

// ---------------------------------------------------------------------------
// Schema: proto/omni.proto, verbatim.

export const OMNI_PROTO = `// Omni wire schema.
//
// Every message that crosses a process boundary (network or disk) lives in this file.
// Decoders live in protocol/ (protocol/codec.ts embeds this text verbatim: keep them
// identical; test/unit/codec.test.ts checks it). Every decoder has a size limit.
//
// Numbers: term, index and commit are uint64 on the wire and JS numbers in TypeScript;
// a decoder rejects any value above Number.MAX_SAFE_INTEGER (2^53 - 1).
// Enum numbers mirror protocol/raft/types.ts exactly; never renumber a value.

syntax = "proto3";

package omni;

// ---------------------------------------------------------------------------
// Raft (protocol/raft/types.ts)
// ---------------------------------------------------------------------------

// Mirrors MessageType in protocol/raft/types.ts.
enum MessageType {
  MSG_HUP = 0;              // local only, never sent
  MSG_TRANSFER_LEADER = 1;
  MSG_APP = 2;
  MSG_APP_RESP = 3;
  MSG_VOTE = 4;
  MSG_VOTE_RESP = 5;
  MSG_PRE_VOTE = 6;
  MSG_PRE_VOTE_RESP = 7;
  MSG_HEARTBEAT = 8;
  MSG_HEARTBEAT_RESP = 9;
  MSG_SNAP = 10;
  MSG_TIMEOUT_NOW = 11;
  MSG_READ_INDEX = 12;
  MSG_READ_INDEX_RESP = 13;
}

// Mirrors EntryType in protocol/raft/types.ts.
enum EntryType {
  ENTRY_NORMAL = 0;
  ENTRY_CONF_CHANGE = 1;
}

// Mirrors ConfChangeType in protocol/raft/types.ts.
enum ConfChangeType {
  CONF_CHANGE_ADD_VOTER = 0;
  CONF_CHANGE_ADD_LEARNER = 1;
  CONF_CHANGE_REMOVE_NODE = 2;
}

message Entry {
  uint64 term = 1;
  uint64 index = 2;
  EntryType type = 3;
  bytes data = 4;
}

message ConfState {
  repeated string voters = 1;
  repeated string learners = 2;
}

message SnapshotMeta {
  uint64 index = 1;
  uint64 term = 2;
  ConfState conf = 3;
}

message Snapshot {
  SnapshotMeta meta = 1;
  bytes data = 2;
}

message HardState {
  uint64 term = 1;
  string vote = 2;
  uint64 commit = 3;
}

message ConfChange {
  ConfChangeType type = 1;
  string node = 2;
}

message RaftMessage {
  MessageType type = 1;
  string from = 2;
  string to = 3;
  uint64 term = 4;
  uint64 log_term = 5;
  uint64 index = 6;
  repeated Entry entries = 7;
  uint64 commit = 8;
  bool reject = 9;
  uint64 reject_hint = 10;
  optional Snapshot snapshot = 11;
  bytes context = 12;
}

// ---------------------------------------------------------------------------
// Raft snapshot streaming (/omni/raft/snapshot/1.0.0; node/raft/snapshot-stream.ts,
// codec in protocol/raft/snapshot-wire.ts). One SnapshotFrame per length-prefixed frame.
//   sender → receiver: offer, begin, chunk*, end
//   receiver → sender: accept, ack* (one per chunk, after the rows are durable), done | error
// ---------------------------------------------------------------------------

message SnapshotRow {
  bytes key = 1;
  bytes value = 2;
}

// Opens a transfer: id names one consistent view (same id: the transfer may resume);
// header is the encoded Raft Snap message (meta only), handed back to Raft on completion.
message SnapshotOffer {
  string id = 1;
  bytes header = 2;
}

// The receiver's durable position for (sender, id): resume after after_key, with
// row_count rows already received; resume = false: start from the first row.
message SnapshotAccept {
  bool resume = 1;
  bytes after_key = 2;
  uint64 row_count = 3;
}

// The sender's choice: resume = true continues after the accepted key, false starts over.
message SnapshotBegin {
  bool resume = 1;
}

// Rows in ascending key order, strictly after every row sent before; seq counts 0, 1, …
// within one stream.
message SnapshotChunk {
  uint64 seq = 1;
  repeated SnapshotRow rows = 2;
}

// All rows sent: their total count and the sha256 over every row of the transfer
// (uint32 BE key length, key, uint32 BE value length, value).
message SnapshotEnd {
  uint64 row_count = 1;
  bytes checksum = 2;
}

message SnapshotAck {
  uint64 seq = 1;
}

message SnapshotDone {
}

message SnapshotError {
  string code = 1;
  string message = 2;
}

message SnapshotFrame {
  oneof body {
    SnapshotOffer offer = 1;
    SnapshotAccept accept = 2;
    SnapshotBegin begin = 3;
    SnapshotChunk chunk = 4;
    SnapshotEnd end = 5;
    SnapshotAck ack = 6;
    SnapshotDone done = 7;
    SnapshotError error = 8;
  }
}

// ---------------------------------------------------------------------------
// Cluster state commands (protocol/cluster/commands.ts): the data of a normal Raft entry is
// the byte 0x00 followed by one Command. Data starting with any other byte is the UTF-8 JSON
// written before (still decoded, exactly as then). Strings are UTF-8; kv values are bytes
// (the UTF-8 of the value, never escaped); enumerations travel as their names ("up",
// "draining", "admin", ...), checked by the same readers as the JSON form. Proto3 scalars
// that are absent read as their defaults; 'optional' ones and messages stay absent. A field
// this schema does not define, or one on the wrong wire type, refuses the whole command.
// ---------------------------------------------------------------------------

message GpuInfo {
  string model = 1;
  uint64 memory_bytes = 2;
}

message NodeResources {
  double cpu_cores = 1;
  uint64 memory_bytes = 2;
  uint64 disk_bytes = 3;
  string arch = 4;
  repeated GpuInfo gpus = 5;
  // The task drivers the node can run now ("docker", "process", "forge"); none: not reported.
  repeated string drivers = 6;
}

message NodeRegistration {
  string id = 1;
  string name = 2;
  repeated string addrs = 3;
  string api_url = 4;
  NodeResources resources = 5;
  map<string, string> labels = 6;
}

message TokenGrant {
  string id = 1;
  string hash = 2;
  string role = 3;
  string name = 4;
}

message ClusterInitCommand {
  string cluster_id = 1;
  double voter_target = 2;
  string root_node_id = 3;
  bool ephemeral_root = 4;
  optional uint64 max_state_bytes = 5;
}

message ConfigSetCommand {
  double voter_target = 1;
  // The state quota, changed (omni quota set); absent: unchanged. Schema 3.
  optional uint64 max_state_bytes = 2;
}

message RootRetireCommand {
}

message NodeRegisterCommand {
  NodeRegistration node = 1;
}

message NodeStatusCommand {
  string id = 1;
  string status = 2;
  optional string reason = 3;
}

message NodeRemoveCommand {
  string id = 1;
}

message NodeEligibilityCommand {
  string id = 1;
  string eligibility = 2;
  optional string expected = 3;
}

message TokenAddCommand {
  TokenGrant token = 1;
}

message TokenRevokeCommand {
  string id = 1;
}

// content: the value's UTF-8 text, or (keys under apps/, tasks/, taskstatus/, from command
// schema 4) the record it is, in protobuf (AppRec, TaskRec or TaskStatusRec, as the key's prefix
// says): replicas read it as the record's JSON text (protocol/apps/record-codec.ts).
message KvPutCommand {
  string key = 1;
  oneof content {
    bytes value = 2;
    bytes record = 4;
  }
  optional uint64 expected_version = 3;
}

message KvDeleteCommand {
  string key = 1;
  optional uint64 expected_version = 2;
}

// The key's version must equal version (0: absent), or the key must hold exactly value.
message KvCompare {
  string key = 1;
  oneof expect {
    uint64 version = 2;
    bytes value = 3;
  }
}

// content as in KvPutCommand.
message KvTxnPut {
  string key = 1;
  oneof content {
    bytes value = 2;
    bytes record = 3;
  }
}

message KvTxnDelete {
  string key = 1;
}

message KvTxnOp {
  oneof op {
    KvTxnPut put = 1;
    KvTxnDelete delete = 2;
  }
}

message KvTxnCommand {
  repeated KvCompare compares = 1;
  repeated KvTxnOp ops = 2;
}

// Exactly one body. Field numbers are the wire identity of each command type: never reuse one.
message Command {
  oneof body {
    ClusterInitCommand cluster_init = 1;
    ConfigSetCommand config_set = 2;
    RootRetireCommand root_retire = 3;
    NodeRegisterCommand node_register = 4;
    NodeStatusCommand node_status = 5;
    NodeRemoveCommand node_remove = 6;
    NodeEligibilityCommand node_eligibility = 7;
    TokenAddCommand token_add = 8;
    TokenRevokeCommand token_revoke = 9;
    KvPutCommand kv_put = 10;
    KvDeleteCommand kv_delete = 11;
    KvTxnCommand kv_txn = 12;
  }
}

// The state's own records in rows of their own (protocol/cluster/state.ts), each stored as the
// byte 0x00 then the message (a row written before them is JSON text, which never starts with
// 0x00): cfg, n/<node id>, p/<node id> (the role of a node not registered yet), t/<token id>.
message ConfigRow {
  string cluster_id = 1;
  uint64 voter_target = 2;
  string root_node_id = 3;
  bool root_retired = 4;
  bool ephemeral_root = 5;
  optional uint64 max_state_bytes = 6;
  optional uint64 min_schema = 7;
}

message NodeRow {
  string id = 1;
  string name = 2;
  repeated string addrs = 3;
  string api_url = 4;
  NodeResources resources = 5;
  map<string, string> labels = 6;
  string role = 7;
  string status = 8;
  string status_reason = 9;
  bool root = 10;
  uint64 joined_index = 11;
  uint64 updated_index = 12;
  optional string eligibility = 13;
}

message PendingRoleRow {
  string id = 1;
  string role = 2;
}

message TokenRow {
  string id = 1;
  string hash = 2;
  string role = 3;
  string name = 4;
  uint64 created_index = 5;
}

// ---------------------------------------------------------------------------
// Records of the apps' tables (protocol/apps/model.ts, codec in protocol/apps/record-codec.ts),
// kept in state rows r/<kv key> of their own (protocol/cluster/state.ts). Field order is the
// order of the record's JSON rendering; optional and message fields render only when present.
// Enumerations are kept as their names (strings), as the JSON records have them; times in
// milliseconds (*_ms) as double, as a JavaScript clock may give them.
// ---------------------------------------------------------------------------

message RecInts {
  repeated sint64 values = 1;
}

message RecStrings {
  repeated string values = 1;
}

// A number or null (JSON's exitCode: null).
message RecNullableInt {
  optional sint64 value = 1;
}

message AppDeployRec {
  string status = 1;
  int64 from_version = 2;
  double started_at_ms = 3;
  string message = 4;
}

message AppEventRec {
  double at_ms = 1;
  string message = 2;
}

message TaskFailureRec {
  string node_id = 1;
  string node = 2;
  string cause = 3;
  double at_ms = 4;
}

message AppFailuresRec {
  int64 count = 1;
  double not_before_ms = 2;
  repeated TaskFailureRec recent = 3;
}

message JobAttemptRec {
  int64 run = 1;
  string task_id = 2;
  string node = 3;
  string outcome = 4;
  RecNullableInt exit_code = 5;
  string cause = 6;
  double started_at_ms = 7;
  double finished_at_ms = 8;
}

message JobRunSummaryRec {
  int64 run = 1;
  int64 version = 2;
  string status = 3;
  int64 succeeded = 4;
  int64 failures = 5;
  int64 attempts = 6;
  double started_at_ms = 7;
  double finished_at_ms = 8;
  string reason = 9;
}

message JobRec {
  int64 version = 1;
  int64 run = 2;
  string status = 3;
  int64 succeeded = 4;
  int64 failures = 5;
  int64 attempts = 6;
  double not_before_ms = 7;
  double started_at_ms = 8;
  double finished_at_ms = 9;
  optional double active_since_ms = 10;
  optional double stopped_at_ms = 11;
  string reason = 12;
  repeated JobAttemptRec history = 13;
  repeated JobRunSummaryRec runs = 14;
  // Of a cron run in progress (CronRec.active) only.
  optional double scheduled_ms = 15;
  optional double fired_at_ms = 16;
}

message CronRunSummaryRec {
  int64 run = 1;
  double scheduled_ms = 2;
  double fired_at_ms = 3;
  double finished_at_ms = 4;
  string status = 5;
  int64 version = 6;
  int64 attempts = 7;
  int64 failures = 8;
  repeated RecNullableInt exit_codes = 9;
  string reason = 10;
}

message CronTriggerRec {
  double requested_at_ms = 1;
}

message CronRec {
  double last_scheduled_ms = 1;
  double since_ms = 2;
  int64 last_run = 3;
  bool off = 4;
  int64 off_from_version = 5;
  optional bool resume = 6;
  CronTriggerRec trigger = 7;
  repeated JobRec active = 8;
  repeated CronRunSummaryRec runs = 9;
  int64 missed = 10;
  int64 skipped = 11;
  optional string pending = 12;
}

message AppRec {
  string name = 1;
  int64 version = 2;
  int64 previous_version = 3;
  int64 latest_version = 4;
  string state = 5;
  AppDeployRec deploy = 6;
  string pending = 7;
  repeated AppEventRec events = 8;
  AppFailuresRec failures = 9;
  optional string failed_reason = 10;
  JobRec job = 11;
  CronRec cron = 12;
}

message TaskRec {
  string id = 1;
  string app = 2;
  int64 version = 3;
  string node_id = 4;
  repeated int64 host_ports = 5;
  string desired = 6;
  double created_at_ms = 7;
  string stop_reason = 8;
  optional int64 run = 9;
  optional double scheduled_ms = 10;
}

message TaskWorkspaceRec {
  int64 bytes = 1;
  optional string over_limit = 2;
}

message TaskKernelsRec {
  int64 total = 1;
  int64 busy = 2;
}

message TaskStatusRec {
  string id = 1;
  string state = 2;
  string health = 3;
  RecNullableInt exit_code = 4;
  string reason = 5;
  int64 restarts = 6;
  double started_at_ms = 7;
  double updated_at_ms = 8;
  optional string cause = 9;
  optional bool stable = 10;
  RecInts ports_in_use = 11;
  RecStrings last_output = 12;
  RecStrings health_log = 13;
  optional bool released = 14;
  TaskWorkspaceRec workspace = 15;
  TaskKernelsRec kernels = 16;
}

// A kv record under apps/, tasks/ or taskstatus/, in state row r/<kv key>
// (protocol/cluster/record-store.ts): the kv numbers, and the value as a record (AppRec,
// TaskRec or TaskStatusRec, as the key's prefix says) or, when it has no exact protobuf form,
// as the text it is.
message RecordRow {
  uint64 version = 1;
  uint64 create_index = 2;
  uint64 mod_index = 3;
  uint64 size_bytes = 4;
  oneof value {
    bytes record = 5;
    string text = 6;
  }
}

// ---------------------------------------------------------------------------
// Cluster messages (membership, join, gossip, API, agent, forge, registry)
// will be added below as those layers are written. Add them here, not elsewhere.
// ---------------------------------------------------------------------------
`;

/** The schema above, parsed once (every module reads its message types from it; never changed). */
export const OMNI_ROOT = protobuf.parse(OMNI_PROTO).root;
OMNI_ROOT.resolveAll();
const root = OMNI_ROOT;
const schema = {
  RaftMessage: root.lookupType('omni.RaftMessage'),
  Entry: root.lookupType('omni.Entry'),
  Snapshot: root.lookupType('omni.Snapshot'),
  HardState: root.lookupType('omni.HardState'),
  ConfChange: root.lookupType('omni.ConfChange'),
};
