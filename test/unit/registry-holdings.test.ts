// The holdings gossip over a fake pubsub: whole blobs, and the pieces of blobs a node is still
// fetching (what lets nodes pulling the same image at once serve each other).
import { afterEach, describe, expect, it } from 'vitest';
import { Holdings, PARTIAL_PUBLISH_MS } from '../../node/registry/holdings.js';
import { encodePieceBitmap } from '../../protocol/registry/pieces.js';
import { silentLogger } from '../../node/logger.js';
import type { OmniHost } from '../../node/p2p/host.js';

const D = 'sha256:' + 'd'.repeat(64);
const E = 'sha256:' + 'e'.repeat(64);

type Listener = (evt: CustomEvent) => void;

/** A bus delivering every published message to every other subscriber, signed by its sender. */
function fakeBus() {
  const members: { id: string; listeners: Set<Listener> }[] = [];
  const deliver = (from: string, topic: string, data: Uint8Array) => {
    for (const m of members) if (m.id !== from) for (const l of m.listeners) l(new CustomEvent('message', { detail: { topic, data, type: 'signed', from: { toString: () => from } } }));
  };
  const host = (id: string): OmniHost => {
    const me = { id, listeners: new Set<Listener>() };
    members.push(me);
    return {
      peerId: { toString: () => id },
      services: {
        pubsub: {
          subscribe: () => undefined,
          unsubscribe: () => undefined,
          addEventListener: (_t: string, l: Listener) => me.listeners.add(l),
          removeEventListener: (_t: string, l: Listener) => me.listeners.delete(l),
          publish: async (topic: string, data: Uint8Array) => deliver(id, topic, data),
        },
      },
    } as unknown as OmniHost;
  };
  return { host, deliver };
}

const started: Holdings[] = [];
afterEach(() => {
  for (const h of started.splice(0)) h.stop();
});

function holdings(bus: ReturnType<typeof fakeBus>, id: string, held: string[] = []): Holdings {
  const h = new Holdings({ host: bus.host(id), clusterId: 'c1', held: () => held, log: silentLogger, announceIntervalMs: 60_000 });
  h.start();
  started.push(h);
  return h;
}

const settle = () => new Promise((r) => setTimeout(r, PARTIAL_PUBLISH_MS + 50));

describe('holdings gossip', () => {
  it('whole blobs: announced at start and when added, forgotten when removed', async () => {
    const bus = fakeBus();
    const b = holdings(bus, 'B');
    const a = holdings(bus, 'A', [D]);
    expect(b.holders(D)).toEqual(['A']);
    a.added(E);
    await Promise.resolve();
    expect(b.holders(E)).toEqual(['A']);
    a.removed(E);
    await Promise.resolve();
    expect(b.holders(E)).toEqual([]);
  });

  it('the pieces of a blob being fetched: coalesced, replaced, cleared, and gone once the blob is whole', async () => {
    const bus = fakeBus();
    const a = holdings(bus, 'A');
    const b = holdings(bus, 'B');
    a.fetching(D, [0]);
    a.fetching(D, [0, 3]); // within the publish interval: one message, the latest state
    expect(b.partialHolders(D)).toEqual([]);
    await settle();
    expect(b.partialHolders(D)).toEqual([{ peer: 'A', pieces: [0, 3] }]);
    expect(b.holders(D)).toEqual([]); // partial is not whole
    a.fetching(D, null);
    await settle();
    expect(b.partialHolders(D)).toEqual([]);
    a.fetching(D, [1]);
    await settle();
    a.added(D);
    await Promise.resolve();
    expect(b.partialHolders(D)).toEqual([]);
    expect(b.holders(D)).toEqual(['A']);
  });

  it('ignores messages that speak for another node, bad digests and bad bitmaps', async () => {
    const bus = fakeBus();
    const b = holdings(bus, 'B');
    const send = (from: string, body: unknown) => bus.deliver(from, '/omni/registry/have/1/c1', new TextEncoder().encode(JSON.stringify(body)));
    send('M', { id: 'A', partial: { [D]: encodePieceBitmap([1]) } }); // M speaking for A
    send('M', { id: 'M', partial: { 'sha256:nope': encodePieceBitmap([1]), [E]: 'not base64!' } });
    send('M', { id: 'M', partial: [D] });
    expect(b.partialHolders(D)).toEqual([]);
    expect(b.partialHolders(E)).toEqual([]);
    send('M', { id: 'M', partial: { [D]: encodePieceBitmap([2, 5]) } });
    expect(b.partialHolders(D)).toEqual([{ peer: 'M', pieces: [2, 5] }]);
  });
});
