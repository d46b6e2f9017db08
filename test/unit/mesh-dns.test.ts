import { afterEach, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import * as dnsPacket from 'dns-packet';
import { aliasOf, decide, decideView, nameservers, resolvConf } from '../../protocol/net/dns.js';
import { DnsServer } from '../../node/net/dns-server.js';

const query = (name: string, type: dnsPacket.RecordType = 'A', id = 7): dnsPacket.Packet => ({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });
const names = new Map([['api', '127.77.0.9'], ['db', '127.77.0.10']]);

describe("a network's DNS (pure)", () => {
  it('names: bare, with the network, with the cluster domain; nothing else', () => {
    expect(['api', 'api.shop', 'API.shop.omni.', 'api.other', 'api.shop.omni.example', 'www.example.com'].map((n) => aliasOf(n, 'shop'))).toEqual(['api', 'api', 'api', undefined, undefined, undefined]);
  });

  it('answers a service with its VIP, a missing name of the network with NXDOMAIN, and forwards the rest', () => {
    const a = decide(query('api.shop.omni'), 'shop', names);
    expect(a.kind).toBe('answer');
    if (a.kind === 'answer') {
      expect(a.response).toMatchObject({ type: 'response', id: 7, answers: [{ type: 'A', name: 'api.shop.omni', data: '127.77.0.9', ttl: 5 }] });
      expect((a.response.flags ?? 0) & dnsPacket.AUTHORITATIVE_ANSWER).toBeTruthy();
    }
    const aaaa = decide(query('db', 'AAAA'), 'shop', names);
    expect(aaaa.kind === 'answer' && aaaa.response.answers).toEqual([]);
    const missing = decide(query('cache.shop'), 'shop', names);
    expect(missing.kind === 'answer' && (dnsPacket.decode(dnsPacket.encode(missing.response)) as { rcode?: string }).rcode).toBe('NXDOMAIN');
    expect(decide(query('example.com'), 'shop', names).kind).toBe('forward');
    expect(decide(query('cache'), 'shop', names).kind).toBe('forward'); // a bare unknown name may be the host's
    expect(decide({ type: 'response', id: 1, questions: [] } as dnsPacket.Packet, 'shop', names).kind).toBe('drop');
    expect(decide({ ...query('api'), questions: [...query('api').questions!, ...query('db').questions!] }, 'shop', names).kind).toBe('drop');
  });

  it('a task on several networks: each network qualified by name, a bare alias from the first that has it, NXDOMAIN in any of their domains', () => {
    const front = new Map([['web', '127.77.0.20'], ['api', '127.77.0.21']]);
    const back = new Map([['api', '127.77.0.30'], ['db', '127.77.0.31']]);
    const view = [{ network: 'back', names: back }, { network: 'front', names: front }];
    const a = (name: string) => {
      const d = decideView(query(name), view);
      return d.kind === 'answer' ? (d.response.answers?.[0] as { data?: string } | undefined)?.data ?? (dnsPacket.decode(dnsPacket.encode(d.response)) as { rcode?: string }).rcode : d.kind;
    };
    expect(a('api')).toBe('127.77.0.30'); // back sorts first
    expect(a('api.front')).toBe('127.77.0.21');
    expect(a('api.front.omni')).toBe('127.77.0.21');
    expect(a('api.back')).toBe('127.77.0.30');
    expect(a('web')).toBe('127.77.0.20');
    expect(a('db.back.omni')).toBe('127.77.0.31');
    expect(a('db.front')).toBe('NXDOMAIN'); // db is not on front
    expect(a('cache')).toBe('forward');
    expect(a('example.com')).toBe('forward');
    expect(resolvConf(['back', 'front'], '127.77.0.5', ['10.0.0.2'])).toContain('search back.omni back front.omni front\n');
  });

  it("reads the host's resolvers and writes a task's resolv.conf", () => {
    const text = '# comment\nnameserver 10.0.0.2\nnameserver 127.77.0.1\nnameserver ::1\nnameserver 10.0.0.3 # second\nnameserver 10.0.0.2\nsearch lan\n';
    const servers = nameservers(text, (ip) => ip.startsWith('127.77.'));
    expect(servers).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(resolvConf('shop', '127.77.0.1', servers)).toContain('nameserver 127.77.0.1\nnameserver 10.0.0.2\nnameserver 10.0.0.3\nsearch shop.omni shop\n');
  });
});

describe('DnsServer', () => {
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const s of open.splice(0)) s.close();
  });
  const ask = async (port: number, q: dnsPacket.Packet): Promise<dnsPacket.Packet> => {
    const s = createSocket('udp4');
    open.push(s);
    return new Promise((resolve) => {
      s.on('message', (m) => resolve(dnsPacket.decode(m)));
      s.send(dnsPacket.encode(q), port, '127.0.0.1');
    });
  };
  const freeUdpPort = async (): Promise<number> => {
    const s = createSocket('udp4');
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    const p = s.address().port;
    s.close();
    return p;
  };

  it('answers its names, relays other names to the resolver (with the client\'s id), SERVFAIL without one', async () => {
    // a stand-in resolver: answers every A query with 10.9.9.9
    const resolver: Socket = createSocket('udp4');
    open.push(resolver);
    await new Promise<void>((r) => resolver.bind(0, '127.0.0.1', () => r()));
    let forwardedId = -1;
    resolver.on('message', (m, from) => {
      const q = dnsPacket.decode(m);
      forwardedId = q.id ?? -1;
      resolver.send(dnsPacket.encode({ type: 'response', id: q.id, flags: 0x8180, questions: q.questions, answers: [{ type: 'A', name: q.questions![0].name, data: '10.9.9.9' }] }), from.port, from.address);
    });
    const port = await freeUdpPort();
    const server = new DnsServer({ host: '127.0.0.1', port, network: 'shop', view: () => [{ network: 'shop', names }], upstreams: ['127.0.0.1'], upstreamPort: resolver.address().port });
    open.push(server);
    await server.bind();
    expect((await ask(port, query('api'))).answers).toMatchObject([{ type: 'A', data: '127.77.0.9' }]);
    const ext = await ask(port, query('example.com', 'A', 4242));
    expect(ext).toMatchObject({ id: 4242, answers: [{ type: 'A', name: 'example.com', data: '10.9.9.9' }] });
    expect(forwardedId).not.toBe(-1);
    const port2 = await freeUdpPort();
    const alone = new DnsServer({ host: '127.0.0.1', port: port2, network: 'shop', view: () => [{ network: 'shop', names }], upstreams: [] });
    open.push(alone);
    await alone.bind();
    expect(await ask(port2, query('example.com'))).toMatchObject({ rcode: 'SERVFAIL' });
  });
});
