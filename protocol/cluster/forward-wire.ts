// Proposals forwarded from a member to the leader (node/p2p/forwarder.ts), the request frame of
// /omni/forward/3.0.0: the commands travel as their bytes after a small JSON head, instead of as
// base64 inside JSON (version 2: a 1 MiB value was encoded to base64, wrapped in JSON and turned
// into UTF-8 on the member, then decoded three times on the leader — ~20 ms of CPU per write).
//
//   frame = length prefix of the head (protocol/framing.ts) · head · data₁ · data₂ · …
//   head  = JSON [[id, caller, data bytes], …]   (UTF-8)
//
// The replies stay JSON (small). Pure: no I/O. decodeForwardBatch throws ForwardWireError on
// anything malformed (the leader then closes the stream, as for a malformed version-2 batch).

import { lengthPrefix, readLengthPrefix } from '../framing.js';

export class ForwardWireError extends Error {}

export interface ForwardRequest {
  id: number;
  /** Who the member says it proposes for; checked by the leader (node/cluster/caller.ts). */
  caller: unknown;
  data: Uint8Array;
}

/** Smaller commands are copied out of their frame (a small Buffer is a view into a shared pool). */
const MIN_VIEW_BYTES = 4096;
const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

export function encodeForwardBatch(reqs: readonly ForwardRequest[]): Uint8Array {
  const head = utf8Encoder.encode(JSON.stringify(reqs.map((r) => [r.id, r.caller, r.data.byteLength])));
  const prefix = lengthPrefix(head.byteLength);
  let size = prefix.length + head.byteLength;
  for (const r of reqs) size += r.data.byteLength;
  const out = new Uint8Array(size);
  out.set(prefix, 0);
  let at = prefix.length;
  out.set(head, at);
  at += head.byteLength;
  for (const r of reqs) {
    out.set(r.data, at);
    at += r.data.byteLength;
  }
  return out;
}

/**
 * The requests of a frame, at most `maxBatch` of at most `maxDataBytes` each. A large request
 * alone in its frame gets a view of the frame; the others get copies (so a log entry never keeps
 * the bytes of other commands alive, nor a small frame's shared 8 KiB Buffer pool).
 */
export function decodeForwardBatch(frame: Uint8Array, maxBatch: number, maxDataBytes: number): ForwardRequest[] {
  let headBytes: number;
  let at: number;
  try {
    [headBytes, at] = readLengthPrefix(frame, 0);
  } catch {
    throw new ForwardWireError('bad head length');
  }
  if (headBytes > frame.byteLength - at) throw new ForwardWireError('head past the end of the frame');
  let head: unknown;
  try {
    head = JSON.parse(utf8Decoder.decode(frame.subarray(at, at + headBytes)));
  } catch {
    throw new ForwardWireError('head is not JSON');
  }
  at += headBytes;
  if (!Array.isArray(head) || head.length === 0 || head.length > maxBatch) throw new ForwardWireError(`a batch holds 1 to ${maxBatch} requests`);
  const reqs: ForwardRequest[] = [];
  for (const item of head) {
    if (!Array.isArray(item) || item.length !== 3) throw new ForwardWireError('a request is [id, caller, bytes]');
    const [id, caller, bytes] = item as [unknown, unknown, unknown];
    if (typeof id !== 'number' || !Number.isSafeInteger(id)) throw new ForwardWireError('bad request id');
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0 || bytes > maxDataBytes) throw new ForwardWireError(`a command holds 0 to ${maxDataBytes} bytes`);
    if (bytes > frame.byteLength - at) throw new ForwardWireError('command past the end of the frame');
    // A plain Uint8Array either way (the frame may be a Buffer, whose slice() would not copy).
    const data = head.length === 1 && bytes >= MIN_VIEW_BYTES ? new Uint8Array(frame.buffer, frame.byteOffset + at, bytes) : new Uint8Array(frame.subarray(at, at + bytes));
    reqs.push({ id, caller, data });
    at += bytes;
  }
  if (at !== frame.byteLength) throw new ForwardWireError('bytes after the last command');
  return reqs;
}
