// The Raft transport's sender (node/raft/raft-transport.ts) writes at the next turn of the event
// loop: messages queued by one event — across its promise continuations — leave in one socket
// write, in the order they were sent, and after what that event's own continuations wrote
// (issue 13: a write's HTTP answer went out only after the commit index sent to followers).
import { describe, expect, it } from 'vitest';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { peerIdFromPrivateKey } from '@libp2p/peer-id';
import type { Stream } from '@libp2p/interface';
import { RaftTransport } from '../../node/raft/raft-transport.js';
import { decodeRaftMessage } from '../../protocol/codec.js';
import { FrameDecoder } from '../../protocol/framing.js';
import { MessageType, type Message } from '../../protocol/raft/types.js';
import type { OmniHost } from '../../node/p2p/host.js';
import type { Logger } from '../../node/logger.js';

const quiet = { debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined } as unknown as Logger;
const turn = () => new Promise<void>((r) => setImmediate(r));

async function setUp() {
  const self = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  const peer = peerIdFromPrivateKey(await generateKeyPair('Ed25519'));
  const order: string[] = [];
  const writes: Uint8Array[] = [];
  const drainListeners = new Set<() => void>();
  const socket = { full: false };
  const stream = {
    status: 'open',
    writeStatus: 'writable',
    inactivityTimeout: 0,
    send(bytes: Uint8Array) {
      writes.push(bytes.slice());
      order.push(`write of ${new FrameDecoder(1 << 20).push(bytes).length}`);
      return !socket.full;
    },
    abort() {},
    addEventListener(type: string, fn: () => void) {
      if (type === 'drain') drainListeners.add(fn);
    },
    removeEventListener(type: string, fn: () => void) {
      if (type === 'drain') drainListeners.delete(fn);
    },
  } as unknown as Stream;
  const host = { peerId: self, dialProtocol: async () => stream, unhandle: async () => undefined } as unknown as OmniHost;
  const t = new RaftTransport({ host, onMessage: () => undefined, isTrustedSender: () => true, log: quiet });
  const message = (commit: number): Message => ({ type: MessageType.Heartbeat, from: self.toString(), to: peer.toString(), term: 1, logTerm: 0, index: 0, entries: [], commit, reject: false, rejectHint: 0, context: new Uint8Array() });
  const commitsWritten = () => writes.map((w) => new FrameDecoder(1 << 20).push(w).map((f) => decodeRaftMessage(f, 1 << 20).commit));
  const drain = () => {
    socket.full = false;
    for (const fn of [...drainListeners]) fn();
  };
  return { t, message, writes, order, commitsWritten, socket, drain, drainListeners };
}

describe('Raft transport sender', () => {
  it('sends what one event queued, across its continuations, in one write, in order, after that event is done', async () => {
    const { t, message, order, commitsWritten } = await setUp();
    t.send([message(1)]);
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1]]);
    order.length = 0;
    // one event: a message, more from two continuations, then the event's own answer
    t.send([message(2)]);
    await Promise.resolve().then(() => t.send([message(3)]));
    await Promise.resolve().then(() => t.send([message(4), message(5)]));
    order.push('answer');
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1], [2, 3, 4, 5]]);
    expect(order).toEqual(['answer', 'write of 4']);
    await t.stop();
  });

  it('each event writes on its own turn: messages of a later event are a later write', async () => {
    const { t, message, commitsWritten } = await setUp();
    t.send([message(1)]);
    await turn();
    await turn();
    t.send([message(2)]);
    await turn();
    t.send([message(3)]);
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1], [2], [3]]);
    await t.stop();
  });

  it('messages queued while a write waits for the socket to drain go out, together, once it drains', async () => {
    const { t, message, commitsWritten, socket, drain, drainListeners } = await setUp();
    t.send([message(1)]);
    await turn();
    await turn();
    socket.full = true;
    t.send([message(2)]); // written, and the socket is full: the loop waits for 'drain'
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1], [2]]);
    expect(drainListeners.size).toBe(1);
    t.send([message(3)]);
    t.send([message(4)]);
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1], [2]]); // nothing written while full
    drain();
    await turn();
    await turn();
    expect(commitsWritten()).toEqual([[1], [2], [3, 4]]);
    expect(drainListeners.size).toBe(0);
    await t.stop();
  });
});
