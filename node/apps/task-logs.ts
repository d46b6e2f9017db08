// Task logs between nodes over libp2p (/omni/logs/1.0.0), so the node a user asked serves
// the logs of tasks running elsewhere without sending the user's API token anywhere: the
// stream is authenticated by the cluster's private network and noise, and only a current
// member may open it. One stream per (task, request):
//   caller → one JSON request frame {taskId, follow, sinceMs?, tail?, stamped?}
//   server → 'O' (accepted) or 'E'+JSON {code, message}; then 'L'+line frames; then it closes
//            (or 'E' if reading the logs failed part way).
// A follow stream stays open until either side stops: the caller aborts it when its HTTP
// client goes away, and the server then stops reading the task's logs.
import type { Stream, Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from '../p2p/host.js';
import { readFrames, readOneFrame, sendFrame } from '../p2p/framed-stream.js';
import { OmniError } from '../errors.js';
import type { Logger } from '../logger.js';
import type { LogOptions } from './drivers/types.js';

export const LOGS_PROTOCOL = '/omni/logs/1.0.0';
export const MAX_LOGS_REQUEST_BYTES = 4096;
/** A longer line is cut (with a marker): one runaway line must not stall the stream. */
export const MAX_LOG_LINE_BYTES = 64 * 1024;
const MAX_LOGS_FRAME_BYTES = MAX_LOG_LINE_BYTES + 1024;
/** Concurrent log streams a peer may hold open on this node (each `omni logs -f` is one per remote task). */
const MAX_INBOUND_LOG_STREAMS = 256;
const MAX_OUTBOUND_LOG_STREAMS = 256;
const DIAL_TIMEOUT_MS = 5000;
/** The caller must send its request, and the server accept it, within this time. */
const HANDSHAKE_TIMEOUT_MS = 10_000;
const MAX_TAIL = 10_000;

export interface TaskLogRequest {
  taskId: string;
  follow: boolean;
  sinceMs?: number;
  tail?: number;
  /** Lines as `\0<epoch ms>\t<text>` (drivers/types.ts stampLine). */
  stamped?: boolean;
}

export interface TaskLogServiceOptions {
  /** Throws (FORBIDDEN) unless `peer` is a current cluster member. */
  authorize: (peer: string) => void;
  /** This node's log lines for a task, or undefined when the task is not known here. */
  localLogs: (taskId: string, opts: LogOptions) => AsyncIterable<string> | undefined;
  log: Logger;
}

const TAG_OK = 0x4f; // 'O'
const TAG_LINE = 0x4c; // 'L'
const TAG_ERROR = 0x45; // 'E'

export class TaskLogService {
  constructor(
    private readonly host: OmniHost,
    private readonly opts: TaskLogServiceOptions,
  ) {}

  async start(): Promise<void> {
    await this.host.handle(LOGS_PROTOCOL, (stream, conn) => this.serve(stream, conn), {
      maxInboundStreams: MAX_INBOUND_LOG_STREAMS,
      maxOutboundStreams: MAX_OUTBOUND_LOG_STREAMS,
    });
  }

  async stop(): Promise<void> {
    await this.host.unhandle(LOGS_PROTOCOL).catch(() => undefined);
  }

  /** The lines of a task on `peer` (a node id). Ends when the logs end; aborting `signal` closes the stream. */
  async *read(peer: string, req: TaskLogRequest, signal: AbortSignal): AsyncGenerator<string> {
    let stream: Stream;
    try {
      stream = await this.host.dialProtocol(peerIdFromString(peer), LOGS_PROTOCOL, { signal: AbortSignal.any([signal, AbortSignal.timeout(DIAL_TIMEOUT_MS)]) });
    } catch (err) {
      if (signal.aborted) return;
      throw new OmniError('UNAVAILABLE', `cannot reach node ${peer.slice(0, 80)}: ${(err as Error).message}`);
    }
    // A followed task may print nothing for a long time: the stream must not idle out.
    stream.inactivityTimeout = 0;
    const onAbort = () => stream.abort(new Error('log reader went away'));
    signal.addEventListener('abort', onAbort, { once: true });
    try {
      await sendFrame(stream, new TextEncoder().encode(JSON.stringify(req)), signal);
      let accepted = false;
      const handshake = setTimeout(() => accepted || stream.abort(new Error(`no answer within ${HANDSHAKE_TIMEOUT_MS} ms`)), HANDSHAKE_TIMEOUT_MS);
      try {
        for await (const frame of readFrames(stream, MAX_LOGS_FRAME_BYTES)) {
          const tag = frame[0];
          const body = new TextDecoder().decode(frame.subarray(1));
          if (tag === TAG_ERROR) throw remoteError(body);
          if (!accepted) {
            if (tag !== TAG_OK) throw new OmniError('BAD_RESPONSE', 'malformed logs reply');
            accepted = true;
            continue;
          }
          if (tag !== TAG_LINE) throw new OmniError('BAD_RESPONSE', 'malformed logs frame');
          yield body;
        }
      } finally {
        clearTimeout(handshake);
      }
      if (!accepted && !signal.aborted) throw new OmniError('UNAVAILABLE', 'the logs stream closed before it was accepted');
    } catch (err) {
      if (signal.aborted) return;
      throw err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `logs from node ${peer.slice(0, 80)}: ${(err as Error).message}`);
    } finally {
      signal.removeEventListener('abort', onAbort);
      // Done early (the consumer stopped) or failed: reset rather than wait for the remote.
      if (stream.status === 'open') stream.abort(new Error('log reader done'));
    }
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    const abort = new AbortController();
    // The reader resets the stream when its HTTP client goes away: stop reading the task's logs.
    stream.addEventListener('close', () => abort.abort(), { once: true });
    stream.inactivityTimeout = 0;
    let req: TaskLogRequest;
    let lines: AsyncIterable<string>;
    try {
      this.opts.authorize(from);
      req = parseRequest(await withTimeout(readOneFrame(stream, MAX_LOGS_REQUEST_BYTES), HANDSHAKE_TIMEOUT_MS));
      const found = this.opts.localLogs(req.taskId, { follow: req.follow, sinceMs: req.sinceMs, tail: req.tail, ...(req.stamped ? { stamped: true } : {}), signal: abort.signal });
      if (!found) throw new OmniError('NOT_FOUND', `task ${req.taskId} is not known on this node`);
      lines = found;
      this.opts.log.debug(`logs: streaming task ${req.taskId} to ${from}${req.follow ? ' (follow)' : ''}`);
      await sendFrame(stream, tagged(TAG_OK, ''), abort.signal);
    } catch (err) {
      const e = err instanceof OmniError ? err : new OmniError('BAD_REQUEST', (err as Error).message);
      if (e.code === 'FORBIDDEN') this.opts.log.warn(`logs: refused a stream from ${from}: ${e.message}`);
      await this.finish(stream, tagged(TAG_ERROR, JSON.stringify({ code: e.code, message: e.message })));
      return;
    }
    try {
      for await (const line of lines) {
        if (abort.signal.aborted) break;
        await sendFrame(stream, tagged(TAG_LINE, truncate(line)), abort.signal);
      }
      if (!abort.signal.aborted) await this.finish(stream);
    } catch (err) {
      if (!abort.signal.aborted) await this.finish(stream, tagged(TAG_ERROR, JSON.stringify({ code: 'UNAVAILABLE', message: `logs ended: ${(err as Error).message}` })));
    } finally {
      this.opts.log.debug(`logs: stream of task ${req.taskId} to ${from} ended${abort.signal.aborted ? ' (reader went away)' : ''}`);
    }
  }

  private async finish(stream: Stream, last?: Uint8Array): Promise<void> {
    try {
      if (last) await sendFrame(stream, last);
      await stream.close({ signal: AbortSignal.timeout(HANDSHAKE_TIMEOUT_MS) });
    } catch {
      stream.abort(new Error('logs stream failed'));
    }
  }
}

function parseRequest(frame: Uint8Array): TaskLogRequest {
  let r: Partial<TaskLogRequest>;
  try {
    r = JSON.parse(new TextDecoder().decode(frame));
  } catch {
    throw new OmniError('BAD_REQUEST', 'logs request is not valid JSON');
  }
  if (typeof r?.taskId !== 'string' || !/^[a-z0-9-]{1,63}$/.test(r.taskId)) throw new OmniError('BAD_REQUEST', 'logs request needs a task id');
  if (typeof r.follow !== 'boolean') throw new OmniError('BAD_REQUEST', 'logs request needs follow: boolean');
  if (r.sinceMs !== undefined && (typeof r.sinceMs !== 'number' || !Number.isFinite(r.sinceMs))) throw new OmniError('BAD_REQUEST', 'sinceMs must be a number');
  if (r.tail !== undefined && (!Number.isInteger(r.tail) || r.tail < 0 || r.tail > MAX_TAIL)) throw new OmniError('BAD_REQUEST', `tail must be an integer from 0 to ${MAX_TAIL}`);
  if (r.stamped !== undefined && typeof r.stamped !== 'boolean') throw new OmniError('BAD_REQUEST', 'stamped must be a boolean');
  return { taskId: r.taskId, follow: r.follow, sinceMs: r.sinceMs, tail: r.tail, ...(r.stamped ? { stamped: true } : {}) };
}

function tagged(tag: number, text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  const out = new Uint8Array(body.length + 1);
  out[0] = tag;
  out.set(body, 1);
  return out;
}

function truncate(line: string): string {
  if (line.length <= MAX_LOG_LINE_BYTES / 4) return line; // at most 4 UTF-8 bytes per UTF-16 unit: surely short enough
  const bytes = Buffer.from(line, 'utf8');
  if (bytes.length <= MAX_LOG_LINE_BYTES) return line;
  return bytes.subarray(0, MAX_LOG_LINE_BYTES - 32).toString('utf8') + ` … [cut at ${MAX_LOG_LINE_BYTES} bytes]`;
}

function remoteError(body: string): OmniError {
  try {
    const e = JSON.parse(body) as { code?: unknown; message?: unknown };
    return new OmniError(String(e.code ?? 'UNAVAILABLE'), String(e.message ?? 'remote error').slice(0, 500));
  } catch {
    return new OmniError('BAD_RESPONSE', 'malformed logs error');
  }
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new OmniError('TIMEOUT', `no logs request within ${ms} ms`)), ms);
    p.then(resolve, reject).finally(() => clearTimeout(t));
  });
}
