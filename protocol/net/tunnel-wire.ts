// The header of a /omni/tunnel stream: the asking node names a task and one of its host ports;
// the answering node connects only if that task is placed on it and desired running (never an
// arbitrary address), replies with one header, and then both sides carry raw bytes — or, for a
// UDP port (`udp: true`), datagrams, each framed as a 2-byte big-endian length and its bytes.
// Header: 2-byte big-endian length, then that much UTF-8 JSON. Pure: no I/O.

export const MAX_TUNNEL_HEADER_BYTES = 1024;

export interface TunnelRequest {
  taskId: string;
  hostPort: number;
  /** Relay datagrams to the task's UDP port (absent: a TCP connection). */
  udp?: true;
}
export type TunnelReply = { ok: true } | { ok: false; code: string; message: string };

export function encodeHeader(v: TunnelRequest | TunnelReply): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(v));
  if (body.length > MAX_TUNNEL_HEADER_BYTES) throw new Error('tunnel header too long');
  return lengthPrefixed(body);
}

/** 2-byte big-endian length, then the bytes (headers and datagrams alike). */
function lengthPrefixed(body: Uint8Array): Uint8Array {
  const out = new Uint8Array(2 + body.length);
  out[0] = body.length >> 8;
  out[1] = body.length & 255;
  out.set(body, 2);
  return out;
}

/** Accumulates the first bytes of a stream until the header is whole; returns it and what followed. */
export class HeaderReader {
  private buf = new Uint8Array(0);

  /** undefined: need more bytes. Throws on a malformed or oversized header. */
  push(chunk: Uint8Array): { header: unknown; rest: Uint8Array } | undefined {
    const b = new Uint8Array(this.buf.length + chunk.length);
    b.set(this.buf, 0);
    b.set(chunk, this.buf.length);
    this.buf = b;
    if (b.length < 2) return undefined;
    const len = (b[0] << 8) | b[1];
    if (len === 0 || len > MAX_TUNNEL_HEADER_BYTES) throw new Error(`tunnel header of ${len} bytes (at most ${MAX_TUNNEL_HEADER_BYTES})`);
    if (b.length < 2 + len) return undefined;
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(2, 2 + len)));
    } catch {
      throw new Error('tunnel header is not valid JSON');
    }
    return { header, rest: b.subarray(2 + len) };
  }
}

const TASK_ID = /^[a-z0-9-]{1,63}$/;

export function readRequest(v: unknown): TunnelRequest {
  const o = v as Partial<TunnelRequest> | null;
  if (!o || typeof o !== 'object' || typeof o.taskId !== 'string' || !TASK_ID.test(o.taskId) || !Number.isInteger(o.hostPort) || o.hostPort! < 1 || o.hostPort! > 65535) {
    throw new Error('malformed tunnel request');
  }
  if (o.udp !== undefined && o.udp !== true) throw new Error('malformed tunnel request');
  return { taskId: o.taskId, hostPort: o.hostPort!, ...(o.udp ? { udp: true as const } : {}) };
}

/** The largest UDP payload (IPv4: 65,535 − 8 − 20). */
export const MAX_DATAGRAM_BYTES = 65_507;

/** One datagram as it travels in a UDP tunnel: 2-byte big-endian length, then its bytes. */
export function frameDatagram(payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_DATAGRAM_BYTES) throw new Error(`a datagram of ${payload.length} bytes (at most ${MAX_DATAGRAM_BYTES})`);
  return lengthPrefixed(payload);
}

/** Cuts a UDP tunnel's byte stream back into datagrams (any split of the bytes into chunks). */
export class DatagramReader {
  private buf = new Uint8Array(0);

  push(chunk: Uint8Array): Uint8Array[] {
    let b: Uint8Array;
    if (this.buf.length === 0) b = chunk;
    else {
      b = new Uint8Array(this.buf.length + chunk.length);
      b.set(this.buf, 0);
      b.set(chunk, this.buf.length);
    }
    const out: Uint8Array[] = [];
    let at = 0;
    while (b.length - at >= 2) {
      const len = (b[at] << 8) | b[at + 1];
      if (len > MAX_DATAGRAM_BYTES) throw new Error(`a framed datagram of ${len} bytes (at most ${MAX_DATAGRAM_BYTES})`);
      if (b.length - at < 2 + len) break;
      out.push(b.slice(at + 2, at + 2 + len));
      at += 2 + len;
    }
    this.buf = b.slice(at);
    return out;
  }
}

export function readReply(v: unknown): TunnelReply {
  const o = v as Record<string, unknown> | null;
  if (o && o.ok === true) return { ok: true };
  if (o && o.ok === false && typeof o.code === 'string' && typeof o.message === 'string') return { ok: false, code: o.code.slice(0, 64), message: o.message.slice(0, 500) };
  throw new Error('malformed tunnel reply');
}
