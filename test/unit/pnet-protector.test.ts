// Our pnet protector (node/p2p/pnet-protector.ts) against the original @libp2p/pnet: same keystream,
// same framing, interoperable in both directions across odd chunk sizes; a wrong key fails.
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { preSharedKey, generateKey } from '@libp2p/pnet';
import { multiaddrConnectionPair } from '@libp2p/utils';
import { xsalsa20 } from '@noble/ciphers/salsa.js';
import { generateKeyPair } from '@libp2p/crypto/keys';
import {
  PNET_KEYSTREAM_MAX_BYTES,
  PnetKeystream,
  decodeSwarmKey,
  encodeSwarmKey,
  pnetProtector,
} from '../../node/p2p/pnet-protector.js';
import { createHost } from '../../node/p2p/host.js';
import { xsalsa20Backend, xsalsa20Subkey, type Xsalsa20Backend } from '../../node/p2p/xsalsa20.js';
import { OmniError } from '../../node/errors.js';
import { wasmXsalsa20 } from '../support/old-pnet.js';
import { collect, protectedPair, sendInChunks, testBytes } from '../support/pnet-pair.js';

const KEY = testBytes(32, 1);
const OTHER_KEY = testBytes(32, 2);
const ours = (key = KEY) => pnetProtector({ key })();
const theirs = (key = KEY) => preSharedKey({ psk: encodeSwarmKey(key) })();
const ODD_SIZES = [1, 7, 63, 64, 65, 129, 1000, 4093, 65_537, 3];

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as OmniError).code;
  }
  return undefined;
}

describe('xsalsa20 backends', () => {
  it('libsodium (sodium-native) loads on this platform: omnid does not fall back to the slower JS cipher here', () => {
    // linux-x64 is a platform sodium-native ships prebuilt; a failure here means the addon is
    // missing from node_modules or was left out of the bundle's externals (scripts/build.mjs).
    expect(process.env.OMNI_PNET_CIPHER === 'js' ? 'libsodium' : xsalsa20Backend()).toBe('libsodium');
  });

  it("HSalsa20's subkey is the one XSalsa20 uses (first keystream block equals Salsa20 under it)", () => {
    const nonce = testBytes(24, 9);
    const sub = xsalsa20Subkey(KEY, nonce);
    expect(sub.length).toBe(32);
    const a = new PnetKeystream(KEY, nonce, 0, 'js').xor(new Uint8Array(64));
    const b = new PnetKeystream(KEY, nonce, 0, 'libsodium').xor(new Uint8Array(64));
    expect(Buffer.from(a).equals(Buffer.from(b))).toBe(true);
    expect(Buffer.from(a).equals(Buffer.from(xsalsa20(KEY, nonce, new Uint8Array(64))))).toBe(true);
  });
});

describe.each(['libsodium', 'js'] as Xsalsa20Backend[])('pnet keystream (%s)', (backend) => {
  it('matches the xsalsa20 package @libp2p/pnet uses, for any split of the stream into chunks', () => {
    const nonce = testBytes(24, 3);
    const data = testBytes(5000, 4);
    const reference = wasmXsalsa20(nonce, KEY).update(data);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 4 })), { maxLength: 40 }), (cuts) => {
        const ks = new PnetKeystream(KEY, nonce, 0, backend);
        expect(ks.backend).toBe(backend);
        const out: Uint8Array[] = [];
        let at = 0;
        for (const [c, how] of cuts) {
          const n = Math.min(c, data.length - at);
          const piece = data.subarray(at, at + n);
          if (how === 0) out.push(ks.xor(piece));
          else if (how === 1) out.push(ks.transform(piece));
          else if (how === 2) out.push(ks.transform([piece.subarray(0, n >> 1), piece.subarray(n >> 1)])); // a chunk list
          else if (how === 3) {
            // in place: a copy (unaligned) or a list of two, decrypted where they are
            const copy = new Uint8Array(n + 1).subarray(1);
            copy.set(piece);
            if (n % 2 === 0) {
              const got = ks.transformInPlace(copy);
              if (backend === 'libsodium') expect(got).toBe(copy);
              out.push(got);
            } else {
              const parts = [copy.subarray(0, n >> 1), copy.subarray(n >> 1)];
              const got = ks.transformInPlace(parts);
              if (backend === 'libsodium') expect(got).toBe(parts);
              out.push(...(got instanceof Uint8Array ? [got] : got));
            }
          } else {
            const copy = new Uint8Array(n + 1).subarray(1); // unaligned, encrypted in place
            copy.set(piece);
            out.push(ks.xor(copy, copy));
          }
          at += n;
        }
        out.push(ks.transform(data.subarray(at)));
        expect(Buffer.concat(out).equals(Buffer.from(reference))).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('decrypts what it encrypts, and differs per nonce', () => {
    const data = testBytes(1000, 5);
    const enc = new PnetKeystream(KEY, testBytes(24, 6), 0, backend).xor(data);
    expect(Buffer.from(new PnetKeystream(KEY, testBytes(24, 6), 0, backend).xor(enc)).equals(Buffer.from(data))).toBe(true);
    expect(Buffer.from(new PnetKeystream(KEY, testBytes(24, 7), 0, backend).xor(enc)).equals(Buffer.from(data))).toBe(false);
  });

  it('stops with PNET_KEYSTREAM_EXHAUSTED at the 32-bit block counter limit instead of wrapping', () => {
    const nonce = testBytes(24, 8);
    const lastBlock = xsalsa20(KEY, nonce, new Uint8Array(64), undefined, 2 ** 32 - 2);
    const ks = new PnetKeystream(KEY, nonce, PNET_KEYSTREAM_MAX_BYTES - 10, backend);
    expect(Array.from(ks.xor(new Uint8Array(4)))).toEqual(Array.from(lastBlock.subarray(54, 58)));
    expect(codeOf(() => ks.xor(new Uint8Array(7)))).toBe('PNET_KEYSTREAM_EXHAUSTED');
    expect(Array.from(ks.xor(new Uint8Array(6)))).toEqual(Array.from(lastBlock.subarray(58, 64)));
    expect(codeOf(() => ks.xor(new Uint8Array(1)))).toBe('PNET_KEYSTREAM_EXHAUSTED');
  });
});

describe('swarm key file', () => {
  it('round-trips, and reads what @libp2p/pnet generates', () => {
    expect(Array.from(decodeSwarmKey(encodeSwarmKey(KEY)))).toEqual(Array.from(KEY));
    const generated = new Uint8Array(95);
    generateKey(generated);
    const hex = new TextDecoder().decode(generated).split('\n')[2];
    expect(Buffer.from(decodeSwarmKey(generated)).toString('hex')).toBe(hex);
  });

  it('accepts the /base64/ and /bin/ encodings and CRLF line ends, as go-libp2p does', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    const b64 = enc(`/key/swarm/psk/1.0.0/\r\n/base64/\r\n${Buffer.from(KEY).toString('base64')}\n`);
    expect(Array.from(decodeSwarmKey(b64))).toEqual(Array.from(KEY));
    const bin = new Uint8Array(Buffer.concat([enc('/key/swarm/psk/1.0.0/\n/bin/\n'), KEY]));
    expect(Array.from(decodeSwarmKey(bin))).toEqual(Array.from(KEY));
  });

  it('refuses malformed files with PNET_BAD_KEY', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    const hex = Buffer.from(KEY).toString('hex');
    for (const bad of [
      `/key/swarm/psk/2.0.0/\n/base16/\n${hex}`,
      `/key/swarm/psk/1.0.0/\n/base32/\n${hex}`,
      `/key/swarm/psk/1.0.0/\n/base16/\n${hex.slice(2)}`,
      `/key/swarm/psk/1.0.0/\n/base16/\nzz${hex.slice(2)}`,
      `/key/swarm/psk/1.0.0/`,
      '',
      `/key/swarm/psk/1.0.0/\n/base16/\n${'00'.repeat(600)}`,
    ]) {
      expect(codeOf(() => decodeSwarmKey(enc(bad))), bad.slice(0, 60)).toBe('PNET_BAD_KEY');
    }
    expect(codeOf(() => pnetProtector({ key: new Uint8Array(31) }))).toBe('PNET_BAD_KEY');
  });
});

describe('pnet protector', () => {
  const pairings = [
    ['ours', 'theirs', ours, theirs],
    ['theirs', 'ours', theirs, ours],
    ['ours', 'ours', ours, ours],
  ] as const;

  for (const [nameA, nameB, makeA, makeB] of pairings) {
    it(`${nameA} (dialer) ↔ ${nameB} (listener): bytes flow both ways across odd-sized chunks`, async () => {
      const { a, b, rawA } = await protectedPair(makeA(), makeB());
      // what actually crossed the wire towards b, copied as a's protector hands it to its raw
      // connection (b's decrypts the chunks it receives in place: a listener on b's raw side would see plaintext)
      const wire: Uint8Array[] = [];
      const send = rawA.send.bind(rawA);
      rawA.send = (data) => {
        wire.push(Uint8Array.from(data instanceof Uint8Array ? data : data.subarray()));
        return send(data);
      };
      const atA = collect(a);
      const atB = collect(b);
      const toB = testBytes(300_000, 11);
      const toA = testBytes(200_000, 12);
      // both directions at once, with different chunkings on each side
      await Promise.all([sendInChunks(a, toB, ODD_SIZES), sendInChunks(b, toA, [...ODD_SIZES].reverse())]);
      const [gotB, gotA] = await Promise.all([atB.waitFor(toB.length), atA.waitFor(toA.length)]);
      expect(Buffer.from(gotB).equals(Buffer.from(toB))).toBe(true);
      expect(Buffer.from(gotA).equals(Buffer.from(toA))).toBe(true);
      // the wire carried ciphertext, not the plaintext
      const raw = Buffer.concat(wire);
      expect(raw.length).toBe(toB.length);
      expect(Buffer.from(raw).indexOf(Buffer.from(toB.subarray(1000, 1032)))).toBe(-1);
    });
  }

  it('a peer with another key completes the nonce exchange but reads only garbage (both implementations)', async () => {
    for (const [makeA, makeB] of [
      [ours, theirs],
      [theirs, ours],
    ] as const) {
      const { a, b } = await protectedPair(makeA(KEY), makeB(OTHER_KEY));
      const atB = collect(b);
      const msg = testBytes(4096, 13);
      await sendInChunks(a, msg, [100, 3000, 996]);
      const got = await atB.waitFor(msg.length);
      expect(got.length).toBe(msg.length);
      expect(Buffer.from(got).equals(Buffer.from(msg))).toBe(false);
    }
  });

  it('hosts built with createHost and different network keys cannot connect', async () => {
    const mk = async (networkKey: Uint8Array) => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
    const [h1, h2, h3] = await Promise.all([mk(KEY), mk(KEY), mk(OTHER_KEY)]);
    try {
      // same key: connects and pings
      await h1.dial(h2.getMultiaddrs()[0]);
      await h1.services.ping.ping(h2.peerId);
      // other key: the noise handshake over garbage fails
      await expect(h1.dial(h3.getMultiaddrs()[0], { signal: AbortSignal.timeout(30_000) })).rejects.toThrow();
      expect(h1.getConnections(h3.peerId)).toHaveLength(0);
    } finally {
      await Promise.all([h1.stop(), h2.stop(), h3.stop()]);
    }
  });

  it('gives up with PNET_HANDSHAKE_TIMEOUT when the peer never sends its nonce, and aborts the connection', async () => {
    const [rawA] = multiaddrConnectionPair();
    const err = await pnetProtector({ key: KEY, handshakeTimeoutMs: 200 })().protect(rawA).catch((e: OmniError) => e);
    expect((err as OmniError).code).toBe('PNET_HANDSHAKE_TIMEOUT');
    expect(rawA.status).toBe('aborted');
  });

  it("honours the caller's AbortSignal (PNET_HANDSHAKE_ABORTED)", async () => {
    const [rawA] = multiaddrConnectionPair();
    const ac = new AbortController();
    const pending = ours().protect(rawA, { signal: ac.signal }).catch((e: OmniError) => e);
    ac.abort();
    expect(((await pending) as OmniError).code).toBe('PNET_HANDSHAKE_ABORTED');
  });

  it('fails with PNET_HANDSHAKE_FAILED when the peer closes before sending a full nonce', async () => {
    const [rawA, rawB] = multiaddrConnectionPair();
    const pending = ours().protect(rawA).catch((e: OmniError) => e);
    rawB.send(new Uint8Array(10));
    await rawB.close();
    const err = (await pending) as OmniError;
    expect(err.code).toBe('PNET_HANDSHAKE_FAILED');
    expect(err.message).toMatch(/nonce exchange/);
  });

  it('keeps the bytes that arrive together with the nonce (they are the first ciphertext)', async () => {
    // The listener's nonce and its first encrypted bytes reach the dialer in one chunk.
    const [rawA, rawB] = multiaddrConnectionPair();
    const nonceB = testBytes(24, 20);
    const payload = testBytes(777, 21);
    const pendingA = ours().protect(rawA);
    rawB.send(new Uint8Array(Buffer.concat([nonceB, new PnetKeystream(KEY, nonceB).xor(payload)])));
    const a = await pendingA;
    const got = await collect(a).waitFor(payload.length);
    expect(Buffer.from(got).equals(Buffer.from(payload))).toBe(true);
  });

  it('coalesces the sends of one event-loop turn into one socket write, and flushes before close', async () => {
    const { a, b, rawA } = await protectedPair(ours(), ours());
    let writes = 0;
    const send = rawA.send.bind(rawA);
    rawA.send = (d) => {
      writes++;
      return send(d);
    };
    const atB = collect(b);
    const frames = Array.from({ length: 50 }, (_, i) => testBytes(13 + i, 30 + i));
    for (const f of frames) a.send(f); // one turn: 50 muxer-sized frames
    const all = Buffer.concat(frames);
    expect(Buffer.from(await atB.waitFor(all.length)).equals(all)).toBe(true);
    expect(writes).toBe(1);
    // a large burst is written as it reaches the flush size, not held for the turn
    writes = 0;
    const big = testBytes(600_000, 90);
    for (let at = 0; at < big.length; at += 60_000) a.send(big.subarray(at, at + 60_000));
    expect(writes).toBeGreaterThanOrEqual(1); // already, within the turn
    expect(Buffer.from((await atB.waitFor(all.length + big.length)).subarray(all.length)).equals(Buffer.from(big))).toBe(true);
    // what was sent just before close() still arrives
    const last = testBytes(999, 91);
    a.send(last);
    await a.close();
    const got = await atB.waitFor(all.length + big.length + last.length);
    expect(Buffer.from(got.subarray(all.length + big.length)).equals(Buffer.from(last))).toBe(true);
  });
});
