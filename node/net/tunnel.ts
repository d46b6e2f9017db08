// /omni/tunnel/1.0.0: the mesh proxy on one node reaches a task replica on another over the
// cluster's libp2p network (private-network key + noise: encrypted, members only) instead of
// connecting to it in the clear. One stream per proxied TCP connection (or per UDP session,
// `udp: true`: framed datagrams instead of raw bytes, node/net/udp-relay.ts):
//   asker → header {taskId, hostPort}
//   owner → checks that the task is placed on it and desired running and that hostPort is one of
//           its ports (never an arbitrary address), connects to 127.0.0.1:hostPort, replies with
//           header {ok} or {ok:false, code, message}; then raw bytes both ways until both ends close.
import { connect, type Socket } from 'node:net';
import type { Stream, Connection } from '@libp2p/interface';
import { peerIdFromString } from '@libp2p/peer-id';
import type { OmniHost } from '../p2p/host.js';
import type { Logger } from '../logger.js';
import { HeaderReader, encodeHeader, readReply, readRequest, type TunnelRequest } from '../../protocol/net/tunnel-wire.js';
import { pipeSocketStream } from './pipe.js';
import { serveUdpTunnel, streamUdpUpstream, type UdpReplies, type UdpUpstream } from './udp-relay.js';

export const TUNNEL_PROTOCOL = '/omni/tunnel/1.0.0';
/** Concurrent tunnels per peer connection, each way (one per proxied TCP connection). */
export const MAX_TUNNEL_STREAMS_PER_PEER = 1024;
/** Concurrent tunnels this node serves for all peers together. */
export const MAX_SERVED_TUNNELS = 4096;
const DIAL_TIMEOUT_MS = 5000;
const HEADER_TIMEOUT_MS = 5000;
const CONNECT_TIMEOUT_MS = 3000;
/** A UDP tunnel's idle end is never later than a listener's session timeout. */
const UDP_IDLE_CAP_MS = 60_000;

export interface TunnelDeps {
  host: OmniHost;
  log: Logger;
  /** Throws unless `peer` is a current cluster member. */
  authorize(peer: string): void;
  /** Whether this node runs task `taskId` (placed here, desired running) with `hostPort` among its ports. */
  ownsTaskPort(taskId: string, hostPort: number): boolean;
  idleMs?: number;
}

export class TunnelError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Reads one header off a paused-on-arrival stream; the stream is left paused with any extra bytes returned. */
function readHeader(stream: Stream, timeoutMs: number): Promise<{ header: unknown; rest: Uint8Array }> {
  return new Promise((resolve, reject) => {
    const reader = new HeaderReader();
    const timer = setTimeout(() => finish(new Error(`no tunnel header within ${timeoutMs} ms`)), timeoutMs);
    const finish = (err: Error | undefined, v?: { header: unknown; rest: Uint8Array }) => {
      clearTimeout(timer);
      stream.removeEventListener('message', onMessage);
      stream.removeEventListener('close', onClose);
      stream.removeEventListener('end', onClose);
      if (err) reject(err);
      else resolve(v!);
    };
    const onMessage = (evt: { data: Uint8Array | { subarray(): Uint8Array } }) => {
      try {
        const got = reader.push(evt.data instanceof Uint8Array ? evt.data : evt.data.subarray());
        if (got) {
          // Whatever arrives next waits in the stream's buffer until the pipe takes over.
          stream.pause();
          finish(undefined, got);
        }
      } catch (err) {
        finish(err as Error);
      }
    };
    const onClose = () => finish(new Error('the stream ended before the tunnel header'));
    stream.addEventListener('message', onMessage);
    stream.addEventListener('close', onClose);
    stream.addEventListener('end', onClose);
  });
}

export class Tunnel {
  private served = 0;

  constructor(private readonly d: TunnelDeps) {}

  async start(): Promise<void> {
    await this.d.host.handle(TUNNEL_PROTOCOL, (stream, conn) => void this.serve(stream, conn), {
      maxInboundStreams: MAX_TUNNEL_STREAMS_PER_PEER,
      maxOutboundStreams: MAX_TUNNEL_STREAMS_PER_PEER,
    });
  }

  async stop(): Promise<void> {
    await this.d.host.unhandle(TUNNEL_PROTOCOL).catch(() => undefined);
  }

  /** Tunnels in use on this node (served for peers). */
  get servedCount(): number {
    return this.served;
  }

  /**
   * Opens a tunnel to task `req.taskId` on node `nodeId` and pipes `socket` through it; rejects
   * (TunnelError) before any byte of `socket` was consumed when the tunnel cannot be set up, so
   * the caller can try another replica. Resolves once the connection is over.
   */
  async open(nodeId: string, req: TunnelRequest, socket: Socket): Promise<{ piped: Promise<void> }> {
    const { stream, rest } = await this.handshake(nodeId, req);
    return { piped: pipeSocketStream(socket, stream, { first: rest, idleMs: this.d.idleMs }) };
  }

  /** A UDP session to task `req.taskId`'s UDP port `req.hostPort` on node `nodeId` (TunnelError when it cannot be set up). */
  async openUdp(nodeId: string, req: Omit<TunnelRequest, 'udp'>, r: UdpReplies): Promise<UdpUpstream> {
    const { stream, rest } = await this.handshake(nodeId, { ...req, udp: true });
    return streamUdpUpstream(stream, rest, r);
  }

  /** Dials, sends the request and reads the answer: the stream (paused) and the bytes after the reply. */
  private async handshake(nodeId: string, req: TunnelRequest): Promise<{ stream: Stream; rest: Uint8Array }> {
    let stream: Stream;
    try {
      stream = await this.d.host.dialProtocol(peerIdFromString(nodeId), TUNNEL_PROTOCOL, { signal: AbortSignal.timeout(DIAL_TIMEOUT_MS) });
    } catch (err) {
      throw new TunnelError('UNAVAILABLE', `cannot reach node ${nodeId.slice(0, 60)}: ${(err as Error).message}`);
    }
    try {
      stream.send(encodeHeader(req));
      const { header, rest } = await readHeader(stream, HEADER_TIMEOUT_MS + CONNECT_TIMEOUT_MS);
      const reply = readReply(header);
      if (!reply.ok) throw new TunnelError(reply.code, reply.message);
      return { stream, rest };
    } catch (err) {
      stream.abort(err as Error);
      throw err instanceof TunnelError ? err : new TunnelError('UNAVAILABLE', (err as Error).message);
    }
  }

  private async serve(stream: Stream, conn: Connection): Promise<void> {
    const from = conn.remotePeer.toString();
    let req: TunnelRequest;
    try {
      this.d.authorize(from);
      req = readRequest((await readHeader(stream, HEADER_TIMEOUT_MS)).header);
    } catch (err) {
      this.d.log.debug(`tunnel from ${from}: ${(err as Error).message}`);
      stream.abort(err as Error);
      return;
    }
    const refuse = async (code: string, message: string) => {
      try {
        stream.send(encodeHeader({ ok: false, code, message }));
        await stream.close();
      } catch {
        stream.abort(new Error(message));
      }
    };
    if (this.served >= MAX_SERVED_TUNNELS) return refuse('BUSY', `node serves ${MAX_SERVED_TUNNELS} tunnels already`);
    if (!this.d.ownsTaskPort(req.taskId, req.hostPort)) return refuse('NOT_HERE', `task ${req.taskId} with port ${req.hostPort} does not run on this node`);
    this.served++;
    if (req.udp) {
      // A UDP session: nothing to connect to first (a datagram socket to 127.0.0.1:hostPort is made at once).
      try {
        stream.send(encodeHeader({ ok: true }));
        await serveUdpTunnel(stream, new Uint8Array(0), req.hostPort, this.d.idleMs === undefined ? undefined : Math.min(this.d.idleMs, UDP_IDLE_CAP_MS));
      } catch (err) {
        stream.abort(err as Error);
      } finally {
        this.served--;
      }
      return;
    }
    try {
      let socket: Socket;
      try {
        socket = await connectLocal(req.hostPort);
      } catch (err) {
        return await refuse('CONNECT_FAILED', `task ${req.taskId}: cannot connect to port ${req.hostPort}: ${(err as Error).message}`);
      }
      try {
        stream.send(encodeHeader({ ok: true }));
      } catch (err) {
        socket.destroy();
        stream.abort(err as Error);
        return;
      }
      await pipeSocketStream(socket, stream, { idleMs: this.d.idleMs });
    } finally {
      this.served--;
    }
  }
}

/** Connects to 127.0.0.1:port (a task's host port on this node), half-open allowed. */
export function connectLocal(port: number, timeoutMs = CONNECT_TIMEOUT_MS): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`connect timed out after ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.pause();
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}
