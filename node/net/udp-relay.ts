// UDP through the service mesh. A mesh listener for a UDP port is one datagram socket on VIP:port
// (or the published port); each client address (address:port) it hears from is a **session**,
// as a NAT keeps one: the session picks a serving replica when it starts (round-robin, like a
// TCP connection) and keeps it, its replies go back to the client from the listener's socket,
// and it ends after UDP_SESSION_IDLE_MS without a datagram either way. A replica on this node is
// reached with a datagram socket connected to 127.0.0.1:hostPort; one on another node through a
// UDP tunnel stream (node/net/tunnel.ts, datagrams framed by protocol/net/tunnel-wire.ts).
// Datagrams may be dropped, as UDP allows: while a session starts (beyond a small queue), or
// while its tunnel stream's send buffer is full.
import { createSocket, type Socket as DgramSocket, type RemoteInfo } from 'node:dgram';
import type { Stream } from '@libp2p/interface';
import { nextDrain } from '../p2p/drain.js';
import { DatagramReader, frameDatagram } from '../../protocol/net/tunnel-wire.js';

/** A session ends after this long without a datagram either way (a NAT's UDP timeout). */
export const UDP_SESSION_IDLE_MS = 60_000;
/** Sessions one listener keeps at once; a new client beyond it is dropped until one ends. */
export const MAX_UDP_SESSIONS = 4096;
/** Datagrams held while a session's upstream is being set up (the rest are dropped). */
const MAX_QUEUED = 64;
const SWEEP_MS = 5000;

/** Where a session's datagrams go: a replica here or through a tunnel. */
export interface UdpUpstream {
  send(payload: Uint8Array): void;
  close(): void;
}

/** Callbacks of one upstream: a reply for the client, and the upstream's end. */
export interface UdpReplies {
  reply(payload: Uint8Array): void;
  closed(): void;
}

/** A datagram socket connected to 127.0.0.1:port (a task's UDP host port on this node). */
export function localUdpUpstream(port: number, r: UdpReplies): Promise<UdpUpstream> {
  return new Promise((resolve, reject) => {
    const s = createSocket('udp4');
    let up = false;
    s.on('message', (msg: Buffer) => r.reply(msg));
    // An ICMP port unreachable (nothing listens yet) is an error on a connected socket: keep the session.
    s.on('error', (err) => {
      if (!up) reject(err);
    });
    s.on('close', () => r.closed());
    s.connect(port, '127.0.0.1', () => {
      up = true;
      resolve({
        send: (payload) => s.send(payload, (err) => void err),
        close: () => {
          try {
            s.close();
          } catch {
            // closed already
          }
        },
      });
    });
  });
}

/**
 * A UDP tunnel stream as an upstream: datagrams framed both ways. `first` is what followed the
 * reply header in the stream's first bytes. The stream is resumed here.
 */
export function streamUdpUpstream(stream: Stream, first: Uint8Array, r: UdpReplies): UdpUpstream {
  const reader = new DatagramReader();
  const take = (b: Uint8Array) => {
    let list: Uint8Array[];
    try {
      list = reader.push(b);
    } catch (err) {
      stream.abort(err as Error);
      return;
    }
    for (const d of list) r.reply(d);
  };
  stream.inactivityTimeout = 0;
  if (first.length > 0) take(first);
  stream.addEventListener('message', (evt) => take(evt.data instanceof Uint8Array ? evt.data : evt.data.subarray()));
  stream.addEventListener('close', () => r.closed());
  let congested = false;
  stream.resume();
  return {
    send: (payload) => {
      if (congested || stream.writeStatus !== 'writable') return; // dropped, as UDP may
      try {
        if (!stream.send(frameDatagram(payload))) {
          congested = true;
          nextDrain(stream).then(
            () => (congested = false),
            () => undefined,
          );
        }
      } catch {
        // the stream is going away: its close ends the session
      }
    },
    close: () => void stream.close().catch(() => stream.abort(new Error('closing'))),
  };
}

/** Relays datagrams both ways between a tunnel stream and a socket connected to 127.0.0.1:port (the answering node's side). */
export async function serveUdpTunnel(stream: Stream, first: Uint8Array, port: number, idleMs = UDP_SESSION_IDLE_MS): Promise<void> {
  let lastMs = Date.now();
  let upstream: UdpUpstream | undefined;
  const early: Uint8Array[] = [];
  await new Promise<void>((resolve) => {
    let ended = false;
    const end = () => {
      if (ended) return;
      ended = true;
      clearInterval(timer);
      upstream?.close();
      if (stream.status === 'open') void stream.close().catch(() => stream.abort(new Error('closing')));
      resolve();
    };
    const timer = setInterval(() => {
      if (Date.now() - lastMs > idleMs) end();
    }, Math.min(SWEEP_MS, idleMs));
    const toStream = streamUdpUpstream(stream, first, {
      reply: (d) => {
        lastMs = Date.now();
        if (upstream) upstream.send(d);
        else if (early.length < MAX_QUEUED) early.push(d);
      },
      closed: end,
    });
    localUdpUpstream(port, {
      reply: (d) => {
        lastMs = Date.now();
        toStream.send(d);
      },
      closed: end,
    }).then(
      (u) => {
        upstream = u;
        if (ended) return u.close();
        for (const d of early.splice(0)) u.send(d);
      },
      () => end(),
    );
  });
}

interface Session {
  upstream: UdpUpstream | undefined;
  queue: Uint8Array[];
  lastMs: number;
  ended: boolean;
}

export interface UdpListenerOptions {
  host: string;
  port: number;
  /** Opens the upstream of a new session (rejects: no replica answered; the session's datagrams are dropped). */
  open(client: RemoteInfo, r: UdpReplies): Promise<UdpUpstream>;
  /** Whether a client address may use this listener (docker VIPs: containers of this host only). */
  allow?(address: string): Promise<boolean>;
  idleMs?: number;
  onError?(err: Error): void;
}

/** One UDP port of the mesh (see the file comment). */
export class UdpListener {
  private readonly socket: DgramSocket;
  private readonly sessions = new Map<string, Session>();
  private sweep: NodeJS.Timeout | undefined;

  constructor(private readonly o: UdpListenerOptions) {
    this.socket = createSocket({ type: 'udp4', reuseAddr: false });
    this.socket.on('message', (msg, rinfo) => void this.onMessage(msg, rinfo));
  }

  /** Binds; rejects with the bind error (EADDRINUSE, …). */
  bind(): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (err: Error) => reject(err);
      this.socket.once('error', onError);
      this.socket.bind({ address: this.o.host, port: this.o.port, exclusive: true }, () => {
        this.socket.off('error', onError);
        this.socket.on('error', (err) => this.o.onError?.(err));
        const idle = this.o.idleMs ?? UDP_SESSION_IDLE_MS;
        this.sweep = setInterval(() => {
          const now = Date.now();
          for (const [k, s] of this.sessions) if (now - s.lastMs > idle) this.end(k, s);
        }, Math.min(SWEEP_MS, idle));
        resolve();
      });
    });
  }

  close(): void {
    clearInterval(this.sweep);
    for (const [k, s] of this.sessions) this.end(k, s);
    try {
      this.socket.close();
    } catch {
      // never bound, or closed
    }
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  private end(key: string, s: Session): void {
    if (s.ended) return;
    s.ended = true;
    this.sessions.delete(key);
    s.upstream?.close();
  }

  private async onMessage(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    const key = `${rinfo.address}:${rinfo.port}`;
    let s = this.sessions.get(key);
    if (s) {
      s.lastMs = Date.now();
      if (s.upstream) s.upstream.send(msg);
      else if (s.queue.length < MAX_QUEUED) s.queue.push(msg);
      return;
    }
    if (this.sessions.size >= MAX_UDP_SESSIONS) return;
    s = { upstream: undefined, queue: [msg], lastMs: Date.now(), ended: false };
    const session = s;
    this.sessions.set(key, session);
    if (this.o.allow && !(await this.o.allow(rinfo.address).catch(() => false))) return this.end(key, session);
    try {
      const up = await this.o.open(rinfo, {
        reply: (d) => {
          session.lastMs = Date.now();
          this.socket.send(d, rinfo.port, rinfo.address, (err) => void err);
        },
        closed: () => this.end(key, session),
      });
      if (session.ended) return up.close();
      session.upstream = up;
      for (const d of session.queue.splice(0)) up.send(d);
    } catch (err) {
      this.o.onError?.(err as Error);
      this.end(key, session);
    }
  }
}
