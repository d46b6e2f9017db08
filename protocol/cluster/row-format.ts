// How a state row's value is stored: text (JSON, a kv page, a kv value), or a protobuf message
// after the byte 0x00 — the records of the state (cfg, n/, p/, t/ in state.ts; r/ in
// record-store.ts). A JSON row never starts with 0x00, so a row written before a kind moved to
// protobuf is still read (as text). A kv value (v/ rows) may start with any character, so only the
// kinds of rows that hold records are looked at. Pure.

/** The first byte of a row in protobuf. */
export const PROTOBUF_ROW = 0x00;

export const CONFIG_ROW = 'cfg';

/** The kind of a state row: 'cfg', or its two-character prefix ('n/', 'r/', 'i/', 'v/', …). */
export function rowKindOf(row: string): string {
  return row === CONFIG_ROW ? CONFIG_ROW : row.slice(0, 2);
}

/** The kinds of rows that hold a record, with its protobuf message (proto/omni.proto). */
export const RECORD_ROW_MESSAGES: ReadonlyMap<string, string> = new Map([
  [CONFIG_ROW, 'ConfigRow'],
  ['n/', 'NodeRow'],
  ['p/', 'PendingRoleRow'],
  ['t/', 'TokenRow'],
  ['r/', 'RecordRow'],
]);

/** Whether a row of this key holds a record (protobuf, or JSON text when written before). */
export function isRecordRowKey(row: string): boolean {
  return RECORD_ROW_MESSAGES.has(rowKindOf(row));
}

/** Whether a stored row value is protobuf (bytes, not text). */
export function isBinaryRow(row: string, value: Uint8Array): boolean {
  return value.byteLength > 0 && value[0] === PROTOBUF_ROW && isRecordRowKey(row);
}

/** A message's bytes as a row value (0x00 then the message). */
export function protobufRow(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(message.byteLength + 1);
  out[0] = PROTOBUF_ROW;
  out.set(message, 1);
  return out;
}

/** The message of a protobuf row value (a view: no copy). */
export function messageOfRow(value: Uint8Array): Uint8Array {
  return value.subarray(1);
}
