// A network's DNS address on this node (protocol/net/dns.ts decides): a datagram socket on
// DNS_VIP:53 answering the network's service names, forwarding other names to the host's
// resolvers (from /etc/resolv.conf when omnid started) and relaying their answer, SERVFAIL when
// none answers within FORWARD_TIMEOUT_MS. Port 53 needs root (or CAP_NET_BIND_SERVICE); where
// it cannot be bound the tasks keep the host's resolv.conf (names then come from /etc/hosts only).
import { createSocket, type Socket, type RemoteInfo } from 'node:dgram';
import { randomInt } from 'node:crypto';
import * as dnsPacket from 'dns-packet';
import { decideView, MAX_DNS_QUERY_BYTES, RCODE_SERVFAIL, type ViewNetwork } from '../../protocol/net/dns.js';

export const DNS_PORT = 53;
const FORWARD_TIMEOUT_MS = 2000;
/** Forwarded queries waiting for an answer, per server (beyond: SERVFAIL at once). */
const MAX_PENDING = 1024;

export interface DnsServerOptions {
  host: string;
  /** The network (or view of several networks) it answers for: in log lines. */
  network: string;
  /** Its networks' names now (alias → VIP), in order, as the task asking sees them. */
  view(): readonly ViewNetwork[];
  /** The host's resolvers, for other names. */
  upstreams: readonly string[];
  /** Whether a client may ask (docker DNS addresses: containers of this host only). */
  allow?(address: string): Promise<boolean>;
  port?: number;
  /** The resolvers' port (53; tests use another). */
  upstreamPort?: number;
}

export class DnsServer {
  private readonly socket: Socket;
  private readonly upstream: Socket;
  private readonly pending = new Map<number, { client: RemoteInfo; id: number; timer: NodeJS.Timeout; query: dnsPacket.Packet }>();

  constructor(private readonly o: DnsServerOptions) {
    this.socket = createSocket('udp4');
    this.upstream = createSocket('udp4');
    this.socket.on('message', (msg, rinfo) => void this.onQuery(msg, rinfo));
    this.socket.on('error', () => undefined);
    this.upstream.on('message', (msg, from) => this.onUpstream(msg, from));
    this.upstream.on('error', () => undefined);
  }

  async bind(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.socket.once('error', reject);
      this.socket.bind({ address: this.o.host, port: this.o.port ?? DNS_PORT, exclusive: true }, () => {
        this.socket.off('error', reject);
        resolve();
      });
    });
    await new Promise<void>((resolve) => this.upstream.bind(0, () => resolve()));
  }

  close(): void {
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    for (const s of [this.socket, this.upstream]) {
      try {
        s.close();
      } catch {
        // not bound
      }
    }
  }

  private send(packet: dnsPacket.Packet, to: RemoteInfo): void {
    this.socket.send(dnsPacket.encode(packet), to.port, to.address, () => undefined);
  }

  private servfail(query: dnsPacket.Packet, to: RemoteInfo): void {
    this.send({ type: 'response', id: query.id ?? 0, flags: 0x8000 | ((query.flags ?? 0) & 0x0100) | 0x0080 | RCODE_SERVFAIL, questions: query.questions ?? [] }, to);
  }

  private async onQuery(msg: Buffer, rinfo: RemoteInfo): Promise<void> {
    if (msg.length > MAX_DNS_QUERY_BYTES) return;
    if (this.o.allow && !(await this.o.allow(rinfo.address).catch(() => false))) return;
    let query: dnsPacket.Packet;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return; // not DNS
    }
    const d = decideView(query, this.o.view());
    if (d.kind === 'drop') return;
    if (d.kind === 'answer') return this.send(d.response, rinfo);
    const server = this.o.upstreams[0];
    if (!server || this.pending.size >= MAX_PENDING) return this.servfail(query, rinfo);
    // Forwarded under an id of ours (two clients may use the same one); the answer gets theirs back.
    // A random id (not the next one): a process on the host must not guess it and answer first.
    let id = randomInt(65536);
    while (this.pending.has(id)) id = randomInt(65536);
    const out = Buffer.from(msg);
    out.writeUInt16BE(id, 0);
    const timer = setTimeout(() => {
      const p = this.pending.get(id);
      if (!p) return;
      this.pending.delete(id);
      this.servfail(p.query, p.client);
    }, FORWARD_TIMEOUT_MS);
    this.pending.set(id, { client: rinfo, id: query.id ?? 0, timer, query });
    this.upstream.send(out, this.o.upstreamPort ?? DNS_PORT, server, (err) => {
      if (!err) return;
      clearTimeout(timer);
      this.pending.delete(id);
      this.servfail(query, rinfo);
    });
  }

  private onUpstream(msg: Buffer, from: RemoteInfo): void {
    // Only the resolver asked, from its port 53.
    if (msg.length < 12 || from.address !== this.o.upstreams[0] || from.port !== (this.o.upstreamPort ?? DNS_PORT)) return;
    const id = msg.readUInt16BE(0);
    const p = this.pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    this.pending.delete(id);
    const back = Buffer.from(msg);
    back.writeUInt16BE(p.id, 0);
    this.socket.send(back, p.client.port, p.client.address, () => undefined);
  }
}
