// Issue 9: omnid died of `RangeError: WebAssembly.Memory.grow(): Maximum memory size exceeded`
// thrown by the `xsalsa20` WebAssembly cipher inside @libp2p/pnet. These tests reproduce that
// crash with the original cipher and protector (so the scenario is the real one) and run the same
// load through our protector, which must not fail.
//
// The old cipher's errors are all caught here. Once an instance's memory is at the cap it stays
// broken for the rest of the process, so each scenario uses a fresh instance: the protector test
// the one @libp2p/pnet loads (used by nothing else in this file, which runs in its own worker),
// the cipher-alone test one of its own.
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { preSharedKey } from '@libp2p/pnet';
import type { ConnectionProtector, MessageStream } from '@libp2p/interface';
import { PnetKeystream, encodeSwarmKey, pnetProtector } from '../../node/p2p/pnet-protector.js';
import { freshWasmXsalsa20 } from '../support/old-pnet.js';
import { collect, protectedPair, testBytes } from '../support/pnet-pair.js';

const KEY = testBytes(32, 1);
/** The size of the coalesced write seen in the field (noise frames of a catch-up, in one send). */
const CATCH_UP_WRITE_BYTES = 940_000;
const CONNECTIONS = 8;
const MIB = 1 << 20;
const MAX_SMALL_UPDATES = 20_000;

const ours = () => pnetProtector({ key: KEY })();
const theirs = () => preSharedKey({ psk: encodeSwarmKey(KEY) })();

interface Cipher {
  update(input: Uint8Array): Uint8Array;
}

/**
 * The traffic of `CONNECTIONS` connections (one cipher per direction, as pnet keeps them): small
 * frames round-robin, then one catch-up write, then small frames again. Returns the first error.
 */
function runLoad(make: (i: number) => Cipher): { error: unknown; updates: number } {
  const ciphers = Array.from({ length: 2 * CONNECTIONS }, (_, i) => make(i));
  const frame = testBytes(100, 2);
  let updates = 0;
  try {
    for (let i = 0; i < MAX_SMALL_UPDATES; i++, updates++) ciphers[i % ciphers.length].update(frame);
    ciphers[0].update(new Uint8Array(CATCH_UP_WRITE_BYTES));
    updates++;
    for (let i = 0; i < MAX_SMALL_UPDATES; i++, updates++) ciphers[i % ciphers.length].update(frame);
  } catch (error) {
    return { error, updates };
  }
  return { error: undefined, updates };
}

/** Sends `rounds` messages of `messageBytes` on every connection, round-robin; returns what failed. */
async function bulkLoad(makeSender: () => ConnectionProtector, rounds: number, messageBytes: number): Promise<{ errors: Error[]; delivered: boolean[] }> {
  const pairs = await Promise.all(Array.from({ length: CONNECTIONS }, () => protectedPair(makeSender(), ours())));
  const errors: Error[] = [];
  const note = (s: MessageStream) =>
    s.addEventListener('close', (evt) => {
      if (evt.error) errors.push(evt.error);
    });
  const receivers = pairs.map(({ a, b }) => (note(a), note(b), collect(b)));
  const sent = pairs.map(() => [] as Uint8Array[]);
  for (let r = 0; r < rounds; r++) {
    for (let c = 0; c < pairs.length; c++) {
      const msg = new Uint8Array(randomBytes(messageBytes));
      try {
        // The cipher runs synchronously inside send(): this is where the RangeError surfaces.
        if (!pairs[c].a.send(msg)) await pairs[c].a.onDrain();
        sent[c].push(msg);
      } catch (err) {
        errors.push(err as Error);
      }
    }
  }
  const delivered = await Promise.all(
    receivers.map(async (rx, c) => {
      const expected = Buffer.concat(sent[c]);
      const got = await rx.waitFor(expected.length, 60_000).catch(() => rx.bytes());
      return expected.length === rounds * messageBytes && Buffer.from(got).equals(expected);
    }),
  );
  const failures = [...errors];
  for (const { a, b } of pairs) {
    await a.close();
    b.abort(new Error('test done'));
  }
  return { errors: failures, delivered };
}

describe('issue 9: the xsalsa20 WebAssembly memory crash', () => {
  it('our keystream carries the crash load and decrypts it correctly', () => {
    const nonce = (i: number) => testBytes(24, 100 + i);
    const sent: PnetKeystream[] = [];
    const { error, updates } = runLoad((i) => {
      const ks = new PnetKeystream(KEY, nonce(i));
      sent.push(ks);
      return { update: (d) => ks.xor(d) };
    });
    expect(error).toBeUndefined();
    expect(updates).toBe(2 * MAX_SMALL_UPDATES + 1);
    // spot-check: the big write decrypts with a fresh keystream positioned the same way
    const rx = new PnetKeystream(KEY, nonce(0));
    const frame = testBytes(100, 2);
    const perCipher = MAX_SMALL_UPDATES / (2 * CONNECTIONS);
    for (let i = 0; i < perCipher; i++) rx.xor(new PnetKeystream(KEY, nonce(0), i * 100).xor(frame));
    const big = new PnetKeystream(KEY, nonce(0), perCipher * 100).xor(new Uint8Array(CATCH_UP_WRITE_BYTES));
    expect(rx.xor(big).every((b) => b === 0)).toBe(true);
  });

  it('our protector carries multi-MiB writes on many connections (every byte intact)', async () => {
    const { errors, delivered } = await bulkLoad(ours, 4, 3 * MIB);
    expect(errors).toEqual([]);
    expect(delivered).toEqual(Array(CONNECTIONS).fill(true));
  });

  it('the xsalsa20 package alone: small frames are fine, then one catch-up write makes the next small frames exhaust its memory', () => {
    const xsalsa20 = freshWasmXsalsa20();
    const { error, updates } = runLoad((i) => xsalsa20(testBytes(24, 100 + i), KEY));
    expect(error).toBeInstanceOf(Error);
    expect((error as Error).name).toBe('RangeError');
    expect((error as Error).message).toMatch(/WebAssembly\.Memory\.grow\(\): Maximum memory size exceeded/);
    // it survived every small frame before the big write and died a few hundred frames after it
    expect(updates).toBeGreaterThan(MAX_SMALL_UPDATES);
    expect(updates).toBeLessThan(2 * MAX_SMALL_UPDATES);
  });

  it('the original @libp2p/pnet protector fails under the same bulk load (the process would have died)', async () => {
    // Only the sending side is the old protector: its cipher throws synchronously inside send(),
    // where the test can catch it. On a receiving side it throws inside the socket's event
    // listener, i.e. as an uncaught exception, which is what killed omnid.
    const { errors, delivered } = await bulkLoad(theirs, 4, 3 * MIB);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.some((e) => /Maximum memory size exceeded/.test(e.message))).toBe(true);
    expect(delivered.some((ok) => !ok)).toBe(true);
  });
});
