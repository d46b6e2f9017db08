// Limits on the HTTP API's connections and requests, so idle sockets, slowloris clients and
// request floods cannot exhaust a node's file descriptors or memory.
//
// - connections: at most maxConnections open sockets; further ones are closed on accept.
// - headers: a client has headersTimeoutMs from connecting (or from the end of the previous
//   request) to send a complete request head, else 408 and close. This also drops sockets
//   that connect and send nothing.
// - request: the whole request (head and body) must arrive within requestTimeoutMs. The
//   response is not limited: a `follow=true` log stream may run for hours.
// - keep-alive: an idle kept-alive connection is closed after keepAliveTimeoutMs.
// - in flight: at most maxInFlight requests are being handled at once, plus at most
//   maxStreams long-lived streams (logs); beyond that the answer is 503 BUSY with Retry-After.
import type { IncomingMessage, Server, ServerOptions } from 'node:http';
import type { Socket } from 'node:net';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';

export interface ApiLimits {
  maxConnections: number;
  maxInFlight: number;
  maxStreams: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  keepAliveTimeoutMs: number;
}

export const MAX_API_CONNECTIONS = 1024;
export const MAX_API_IN_FLIGHT = 256;
export const MAX_API_STREAMS = 64;
export const API_HEADERS_TIMEOUT_MS = 10_000;
export const API_REQUEST_TIMEOUT_MS = 30_000;
export const API_KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** Seconds a client told BUSY should wait (Retry-After). */
export const BUSY_RETRY_AFTER_S = 1;
/** At most one "connection limit reached" warning per this period. */
const DROP_WARN_EVERY_MS = 10_000;

export const DEFAULT_API_LIMITS: Readonly<ApiLimits> = {
  maxConnections: MAX_API_CONNECTIONS,
  maxInFlight: MAX_API_IN_FLIGHT,
  maxStreams: MAX_API_STREAMS,
  headersTimeoutMs: API_HEADERS_TIMEOUT_MS,
  requestTimeoutMs: API_REQUEST_TIMEOUT_MS,
  keepAliveTimeoutMs: API_KEEP_ALIVE_TIMEOUT_MS,
};

/** The defaults overridden by `over` (tests use short timeouts); every value a positive integer. */
export function apiLimits(over: Partial<ApiLimits> = {}): ApiLimits {
  const l = { ...DEFAULT_API_LIMITS, ...over };
  for (const [k, v] of Object.entries(l)) {
    if (!Number.isSafeInteger(v) || v <= 0) throw new OmniError('INVALID_ARGUMENT', `API limit ${k} must be a positive integer, got ${v}`);
  }
  // Node requires headersTimeout <= requestTimeout.
  if (l.headersTimeoutMs > l.requestTimeoutMs) throw new OmniError('INVALID_ARGUMENT', 'API limit headersTimeoutMs must not exceed requestTimeoutMs');
  return l;
}

/** node:http server options enforcing the timeouts (pass to createServer). */
export function serverOptions(l: ApiLimits): ServerOptions {
  return {
    headersTimeout: l.headersTimeoutMs,
    requestTimeout: l.requestTimeoutMs,
    keepAliveTimeout: l.keepAliveTimeoutMs,
    // Node checks the two timeouts above on this period (default 30 s, which is what let
    // slowloris sockets live 40-50 s): a tenth of the shortest, between 50 ms and 1 s.
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(Math.min(l.headersTimeoutMs, l.requestTimeoutMs) / 10))),
  };
}

/** Caps the server's open connections; excess sockets are closed on accept (logged, rate-limited). */
export function capConnections(server: Server, l: ApiLimits, log: Logger, what: string): void {
  server.maxConnections = l.maxConnections;
  let lastWarnMs = 0;
  server.on('drop', () => {
    const now = Date.now();
    if (now - lastWarnMs < DROP_WARN_EVERY_MS) return;
    lastWarnMs = now;
    log.warn(`${what}: ${l.maxConnections} connections open (the limit): closing new ones`);
  });
}

/** A counting semaphore that refuses instead of queueing. */
export class Gate {
  private n = 0;
  constructor(
    readonly max: number,
    private readonly what: string,
  ) {}

  get active(): number {
    return this.n;
  }

  /** Takes a slot or throws BUSY; call the returned function exactly once to give it back. */
  enter(): () => void {
    if (this.n >= this.max) throw new OmniError('BUSY', `this node is handling ${this.max} ${this.what} (the limit); retry shortly`);
    this.n++;
    let left = false;
    return () => {
      if (left) return;
      left = true;
      this.n--;
    };
  }
}

/** How long a refused request's remaining body is read and discarded before the socket closes. */
export const API_LINGER_MS = 2_000;

/**
 * Call before answering a request whose body was not (fully) read, with Connection: close.
 * Node closes such a socket as soon as the answer is written; with request bytes still unread
 * the kernel then resets the connection, and a client still sending its body can lose the
 * answer (it sees ECONNRESET/EPIPE instead of the 413). Like Apache's lingering close: send
 * FIN after the answer, discard what still arrives for at most API_LINGER_MS, then close.
 */
export function lingeringClose(req: IncomingMessage): void {
  const socket = req.socket as Socket & { destroySoon?: () => void };
  socket.destroySoon = () => {
    socket.end();
    const timer = setTimeout(() => socket.destroy(), API_LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  };
  req.resume();
}
