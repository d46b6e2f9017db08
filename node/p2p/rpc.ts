// Request/response calls between omnid nodes over libp2p (/omni/rpc/1.0.0): one short-lived
// stream per call carrying one JSON request frame and one JSON response frame, then closed
// (so the per-protocol outbound stream limit is never exhausted). Used for joining, and for
// forwarding writes and membership changes from any node to the leader.
import type { Stream, Connection, PeerId } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from './host.js';
import { readOneFrame, sendFrame } from './framed-stream.js';
import type { Logger } from '../logger.js';
import { OmniError } from '../errors.js';

export const RPC_PROTOCOL = '/omni/rpc/1.0.0';
/** A forwarded write carries at most one command (2 MiB) plus JSON/base64 overhead. */
export const MAX_RPC_FRAME_BYTES = 4 * 1024 * 1024;
export const DEFAULT_RPC_TIMEOUT_MS = 10_000;
/** Concurrent calls per connection: forwarded writes under load are the bulk of them. */
const MAX_INBOUND_RPC_STREAMS = 1024;
const MAX_OUTBOUND_RPC_STREAMS = 1024;
/** A caller must send its whole request within this time. */
const REQUEST_READ_TIMEOUT_MS = 10_000;

export type RpcHandler = (params: unknown, from: string) => Promise<unknown>;

interface RpcRequest {
  method: string;
  params: unknown;
}
type RpcResponse = { ok: true; result: unknown } | { ok: false; error: { code: string; message: string; detail?: Record<string, unknown> } };

export class Rpc {
  private readonly handlers = new Map<string, RpcHandler>();

  constructor(
    private readonly host: OmniHost,
    private readonly log: Logger,
  ) {}

  on(method: string, handler: RpcHandler): void {
    this.handlers.set(method, handler);
  }

  async start(): Promise<void> {
    await this.host.handle(RPC_PROTOCOL, (stream, conn) => this.serve(stream, conn), {
      maxInboundStreams: MAX_INBOUND_RPC_STREAMS,
      maxOutboundStreams: MAX_OUTBOUND_RPC_STREAMS,
    });
  }

  async stop(): Promise<void> {
    await this.host.unhandle(RPC_PROTOCOL).catch(() => undefined);
  }

  /** Calls `method` on `peer` (a peer id string or a dialable multiaddr). Throws OmniError. */
  async call<T>(peer: string | PeerId | { toString(): string }, method: string, params: unknown, timeoutMs = DEFAULT_RPC_TIMEOUT_MS): Promise<T> {
    const signal = AbortSignal.timeout(timeoutMs);
    let stream: Stream;
    try {
      const target = typeof peer === 'string' && !peer.startsWith('/') ? peerIdFromString(peer) : (peer as PeerId);
      stream = await this.host.dialProtocol(target as PeerId, RPC_PROTOCOL, { signal });
    } catch (err) {
      throw new OmniError('UNAVAILABLE', `cannot reach ${String(peer).slice(0, 120)}: ${(err as Error).message}`);
    }
    try {
      await sendFrame(stream, encodeJson({ method, params } satisfies RpcRequest), signal);
      const reply = await raceAbort(readOneFrame(stream, MAX_RPC_FRAME_BYTES), signal);
      const res = decodeJson(reply) as RpcResponse;
      await stream.close().catch(() => undefined);
      if (res && res.ok === true) return res.result as T;
      if (res && res.ok === false && res.error) throw new OmniError(String(res.error.code), String(res.error.message), plainDetail(res.error.detail));
      throw new OmniError('BAD_RESPONSE', `malformed reply to ${method}`);
    } catch (err) {
      stream.abort(err as Error);
      if (err instanceof OmniError) throw err;
      if (signal.aborted) throw new OmniError('TIMEOUT', `${method} timed out after ${timeoutMs} ms`);
      throw new OmniError('UNAVAILABLE', `${method} failed: ${(err as Error).message}`);
    }
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    let res: RpcResponse;
    try {
      const req = decodeJson(await raceAbort(readOneFrame(stream, MAX_RPC_FRAME_BYTES), AbortSignal.timeout(REQUEST_READ_TIMEOUT_MS))) as RpcRequest;
      if (!req || typeof req.method !== 'string') throw new OmniError('BAD_REQUEST', 'malformed request');
      const handler = this.handlers.get(req.method);
      if (!handler) throw new OmniError('UNKNOWN_METHOD', `unknown method ${req.method.slice(0, 64)}`);
      res = { ok: true, result: await handler(req.params, from) };
    } catch (err) {
      const e = err instanceof OmniError ? err : new OmniError('INTERNAL', (err as Error).message);
      if (!(err instanceof OmniError)) this.log.warn(`rpc from ${from}: ${(err as Error).message}`);
      res = { ok: false, error: { code: e.code, message: e.message, ...(Object.keys(e.detail).length > 0 ? { detail: e.detail } : {}) } };
    }
    try {
      await sendFrame(stream, encodeJson(res));
      await stream.close();
    } catch {
      stream.abort(new Error('rpc reply failed'));
    }
  }
}

/** An error's detail from another node: untrusted, kept only when it is a plain object. */
function plainDetail(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function encodeJson(v: unknown): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v));
}

function decodeJson(bytes: Uint8Array): unknown {
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new OmniError('BAD_REQUEST', 'message is not valid JSON');
  }
}

function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
