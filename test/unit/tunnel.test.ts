// /omni/tunnel between two real libp2p hosts (pnet + noise + yamux on 127.0.0.1): bytes both
// ways with back-pressure, half-close carried across, refusal of a task that does not run on
// the answering node (it never connects anywhere), of a non-member, and stream cleanup.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { randomBytes, createHash } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { Tunnel, TunnelError, TUNNEL_PROTOCOL } from '../../node/net/tunnel.js';
import { silentLogger } from '../../node/logger.js';

/** A local TCP pair: `client` is what a proxy accepted; the test writes/reads `peer`. */
async function socketPair(): Promise<{ client: Socket; peer: Socket; close(): void }> {
  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const accepted = new Promise<Socket>((r) => server.once('connection', r));
  const peer = connect({ port: (server.address() as AddressInfo).port, host: '127.0.0.1', allowHalfOpen: true });
  const client = await accepted;
  client.on('error', () => client.destroy());
  return { client, peer, close: () => server.close() };
}

function readAll(s: Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
  });
}

describe('tunnel over libp2p', () => {
  let a: OmniHost;
  let b: OmniHost;
  let target: Server;
  let targetPort = 0;
  let targetConnections = 0;
  let aTunnel: Tunnel;
  let bTunnel: Tunnel;
  const members = new Set<string>();

  beforeAll(async () => {
    const networkKey = randomBytes(32);
    const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
    [a, b] = await Promise.all([host(), host()]);
    await a.dial(b.getMultiaddrs()[0]);
    members.add(a.peerId.toString());
    // The "task": answers with the sha256 of everything it received once the caller half-closes,
    // after echoing the first line (to show bytes flow both ways while both are open).
    target = createServer({ allowHalfOpen: true }, (s) => {
      targetConnections++;
      const h = createHash('sha256');
      let n = 0;
      let echoed = false;
      s.on('data', (c: Buffer) => {
        h.update(c);
        n += c.length;
        if (!echoed && c.includes(10)) {
          echoed = true;
          s.write(c.subarray(0, c.indexOf(10) + 1));
        }
      });
      s.on('end', () => s.end(`${n} ${h.digest('hex')}\n`));
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    targetPort = (target.address() as AddressInfo).port;
    const owns = (id: string, port: number) => id === 'api-1' && port === targetPort;
    aTunnel = new Tunnel({ host: a, log: silentLogger, authorize: () => undefined, ownsTaskPort: () => false });
    bTunnel = new Tunnel({
      host: b,
      log: silentLogger,
      authorize: (p) => {
        if (!members.has(p)) throw new Error('not a member');
      },
      ownsTaskPort: owns,
    });
    await aTunnel.start();
    await bTunnel.start();
  });
  afterAll(async () => {
    await aTunnel?.stop();
    await bTunnel?.stop();
    target?.close();
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it('carries 8 MiB to the task and its answer back after a half-close', async () => {
    const { client, peer, close } = await socketPair();
    const { piped } = await aTunnel.open(b.peerId.toString(), { taskId: 'api-1', hostPort: targetPort }, client);
    const payload = randomBytes(8 * 1024 * 1024);
    const first = new Promise<string>((r) => peer.once('data', (c: Buffer) => r(c.toString())));
    peer.write('hello\n');
    expect(await first).toBe('hello\n');
    const answer = readAll(peer);
    peer.end(payload); // half-close: the task sees end of input and still answers
    const expected = createHash('sha256').update('hello\n').update(payload).digest('hex');
    expect((await answer).toString()).toBe(`${6 + payload.length} ${expected}\n`);
    await piped;
    close();
  });

  it('stops reading from the caller while the task does not read (back-pressure), then delivers everything', async () => {
    // A task that reads nothing for a while: the bytes must wait in bounded buffers, not vanish.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let received = 0;
    const slow = createServer({ allowHalfOpen: true }, (s) => {
      s.pause();
      void gate.then(() => {
        s.on('data', (c: Buffer) => (received += c.length));
        s.on('end', () => s.end('done'));
        s.resume();
      });
    });
    await new Promise<void>((r) => slow.listen(0, '127.0.0.1', r));
    const port = (slow.address() as AddressInfo).port;
    const t = new Tunnel({ host: b, log: silentLogger, authorize: () => undefined, ownsTaskPort: (id, p) => id === 'slow-1' && p === port });
    await bTunnel.stop();
    await t.start();
    try {
      const { client, peer, close } = await socketPair();
      const { piped } = await aTunnel.open(b.peerId.toString(), { taskId: 'slow-1', hostPort: port }, client);
      const total = 32 * 1024 * 1024;
      let written = 0;
      const chunk = randomBytes(64 * 1024);
      // Write until the caller's socket says stop: it must, long before 32 MiB (yamux window + socket buffers).
      while (written < total && peer.write(chunk)) written += chunk.length;
      written += chunk.length;
      await new Promise((r) => setTimeout(r, 300));
      if (process.env.TUNNEL_TEST_LOG) console.log(`buffered before back-pressure: ${written} bytes`);
      expect(written).toBeLessThan(total);
      expect(received).toBe(0);
      release();
      const answer = readAll(peer);
      peer.end();
      expect((await answer).toString()).toBe('done');
      expect(received).toBe(written);
      await piped;
      close();
    } finally {
      await t.stop();
      slow.close();
      await bTunnel.start();
    }
  });

  it('refuses a task that does not run there, without connecting anywhere', async () => {
    const before = targetConnections;
    const { client, close } = await socketPair();
    await expect(aTunnel.open(b.peerId.toString(), { taskId: 'other-1', hostPort: targetPort }, client)).rejects.toMatchObject({ code: 'NOT_HERE' });
    await expect(aTunnel.open(b.peerId.toString(), { taskId: 'api-1', hostPort: 22 }, client)).rejects.toBeInstanceOf(TunnelError);
    expect(targetConnections).toBe(before);
    client.destroy();
    close();
  });

  it('refuses a peer that is not a member', async () => {
    members.clear();
    try {
      const { client, close } = await socketPair();
      await expect(aTunnel.open(b.peerId.toString(), { taskId: 'api-1', hostPort: targetPort }, client)).rejects.toBeInstanceOf(TunnelError);
      client.destroy();
      close();
    } finally {
      members.add(a.peerId.toString());
    }
  });

  it('leaves no tunnel stream open once connections are over', async () => {
    for (let i = 0; i < 20; i++) {
      const { client, peer, close } = await socketPair();
      const { piped } = await aTunnel.open(b.peerId.toString(), { taskId: 'api-1', hostPort: targetPort }, client);
      const answer = readAll(peer);
      peer.end('x\n');
      expect((await answer).toString()).toMatch(/^x\n2 [0-9a-f]{64}\n$/);
      await piped;
      close();
    }
    await new Promise((r) => setTimeout(r, 200));
    const open = a.getConnections(b.peerId).flatMap((c) => c.streams).filter((s) => s.protocol === TUNNEL_PROTOCOL);
    expect(open).toEqual([]);
    expect(bTunnel.servedCount).toBe(0);
  });
});
