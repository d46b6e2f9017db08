import { afterEach, describe, expect, it } from 'vitest';
import { createSocket, type Socket } from 'node:dgram';
import { DatagramReader, MAX_DATAGRAM_BYTES, frameDatagram, readRequest } from '../../protocol/net/tunnel-wire.js';
import { UdpListener, localUdpUpstream } from '../../node/net/udp-relay.js';

describe('UDP tunnel framing', () => {
  it('datagrams come back whole whatever the chunking of the stream, empty ones too', () => {
    const sent = [new Uint8Array([1, 2, 3]), new Uint8Array(0), new Uint8Array(300).fill(7), new Uint8Array([9])];
    const bytes = Buffer.concat(sent.map((d) => frameDatagram(d)));
    for (const size of [1, 2, 3, 5, 64, bytes.length]) {
      const r = new DatagramReader();
      const got: Uint8Array[] = [];
      for (let i = 0; i < bytes.length; i += size) got.push(...r.push(bytes.subarray(i, i + size)));
      expect(got.map((d) => Buffer.from(d).toString('hex'))).toEqual(sent.map((d) => Buffer.from(d).toString('hex')));
    }
    expect(() => frameDatagram(new Uint8Array(MAX_DATAGRAM_BYTES + 1))).toThrow(/at most 65507/);
    expect(() => new DatagramReader().push(new Uint8Array([0xff, 0xff]))).toThrow(/at most 65507/);
  });

  it('a tunnel request may ask for UDP, and says nothing else', () => {
    expect(readRequest({ taskId: 't-1', hostPort: 53, udp: true })).toEqual({ taskId: 't-1', hostPort: 53, udp: true });
    expect(readRequest({ taskId: 't-1', hostPort: 53 })).toEqual({ taskId: 't-1', hostPort: 53 });
    expect(() => readRequest({ taskId: 't-1', hostPort: 53, udp: 'yes' })).toThrow(/malformed/);
  });
});

describe('UdpListener: a session per client address', () => {
  const sockets: Socket[] = [];
  const listeners: UdpListener[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.close();
    for (const l of listeners.splice(0)) l.close();
  });
  const udp = async (port = 0): Promise<Socket> => {
    const s = createSocket('udp4');
    sockets.push(s);
    await new Promise<void>((r) => s.bind(port, '127.0.0.1', () => r()));
    return s;
  };
  const reply = (s: Socket) => new Promise<string>((r) => s.once('message', (m) => r(m.toString())));

  it('relays to the replica and back to each client; idle sessions end', async () => {
    // the "task": an echo server that says which source port it saw (one per session)
    const echo = await udp();
    echo.on('message', (m, from) => echo.send(`${m}@${from.port}`, from.port, from.address));
    const probe = await udp();
    const port = probe.address().port;
    probe.close();
    sockets.splice(sockets.indexOf(probe), 1);
    let opened = 0;
    const l = new UdpListener({
      host: '127.0.0.1',
      port,
      idleMs: 300,
      open: (_client, r) => {
        opened++;
        return localUdpUpstream(echo.address().port, r);
      },
    });
    listeners.push(l);
    await l.bind();
    const a = await udp();
    const b = await udp();
    a.send('one', port, '127.0.0.1');
    const ra = await reply(a);
    b.send('two', port, '127.0.0.1');
    const rb = await reply(b);
    a.send('three', port, '127.0.0.1');
    const ra2 = await reply(a);
    expect(ra).toMatch(/^one@\d+$/);
    expect(rb).toMatch(/^two@\d+$/);
    // a's two datagrams went through one session (the same upstream socket), b's through another
    expect(ra2.split('@')[1]).toBe(ra.split('@')[1]);
    expect(rb.split('@')[1]).not.toBe(ra.split('@')[1]);
    expect(opened).toBe(2);
    expect(l.sessionCount).toBe(2);
    // idle past 300 ms: the sweep ends both sessions
    for (let i = 0; i < 100 && l.sessionCount > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(l.sessionCount).toBe(0);
    a.send('four', port, '127.0.0.1');
    expect(await reply(a)).toMatch(/^four@\d+$/);
    expect(opened).toBe(3);
  });

  it('a refused client and a session whose upstream fails get nothing and keep nothing', async () => {
    const probe = await udp();
    const port = probe.address().port;
    probe.close();
    sockets.splice(sockets.indexOf(probe), 1);
    const l = new UdpListener({ host: '127.0.0.1', port, open: async () => Promise.reject(new Error('no replica')), allow: async () => true });
    listeners.push(l);
    await l.bind();
    const a = await udp();
    a.send('x', port, '127.0.0.1');
    await new Promise((r) => setTimeout(r, 200));
    expect(l.sessionCount).toBe(0);
    const busy = new UdpListener({ host: '127.0.0.1', port, open: async () => Promise.reject(new Error('unused')) });
    await expect(busy.bind()).rejects.toMatchObject({ code: 'EADDRINUSE' });
    busy.close();
  });
});
