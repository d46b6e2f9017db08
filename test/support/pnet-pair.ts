// Helpers for the pnet protector tests: two raw in-memory connections (libp2p's own mock pair),
// each side protected by a given protector, and byte collection/sending with backpressure.
import { multiaddrConnectionPair } from '@libp2p/utils';
import type { ConnectionProtector, MessageStream, MultiaddrConnection } from '@libp2p/interface';

export interface ProtectedPair {
  a: MessageStream;
  b: MessageStream;
  rawA: MultiaddrConnection;
  rawB: MultiaddrConnection;
}

export async function protectedPair(protectA: ConnectionProtector, protectB: ConnectionProtector): Promise<ProtectedPair> {
  const [rawA, rawB] = multiaddrConnectionPair();
  const [a, b] = await Promise.all([protectA.protect(rawA), protectB.protect(rawB)]);
  return { a, b, rawA, rawB };
}

/** Collects every byte a stream delivers; `waitFor(n)` resolves once n bytes arrived (rejects if it closes first). */
export function collect(stream: MessageStream): { bytes(): Uint8Array; waitFor(n: number, timeoutMs?: number): Promise<Uint8Array> } {
  const parts: Uint8Array[] = [];
  let total = 0;
  let wake: (() => void) | undefined;
  let closed = false;
  stream.addEventListener('close', () => {
    closed = true;
    wake?.();
  });
  stream.addEventListener('message', (evt) => {
    const d = evt.data instanceof Uint8Array ? evt.data : evt.data.subarray();
    parts.push(Uint8Array.from(d));
    total += d.length;
    wake?.();
  });
  const bytes = () => new Uint8Array(Buffer.concat(parts));
  return {
    bytes,
    async waitFor(n, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      while (total < n) {
        if (closed || Date.now() > deadline) throw new Error(`received ${total}/${n} bytes${closed ? ' before the stream closed' : ''}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
      return bytes();
    },
  };
}

/** Sends `data` cut into chunks of the given sizes (cycled), waiting for drain when asked to. */
export async function sendInChunks(stream: MessageStream, data: Uint8Array, sizes: number[]): Promise<void> {
  let at = 0;
  for (let i = 0; at < data.length; i++) {
    const n = Math.min(sizes[i % sizes.length], data.length - at);
    if (!stream.send(data.slice(at, at + n))) await stream.onDrain();
    at += n;
  }
}

/** Deterministic non-repeating test bytes (a repeating pattern would hide keystream misalignment less well). */
export function testBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}
