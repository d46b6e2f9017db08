// XSalsa20 keystream XOR for the pnet protector, from libsodium (the `sodium-native` addon) when it
// loads, else pure JavaScript (@noble/ciphers). Both give the same bytes (tested).
//
// Why: every byte between two nodes goes through this cipher (under noise's ChaCha20-Poly1305,
// which Node's OpenSSL does natively). noble's JS XSalsa20 was 24 % of the CPU of a snapshot
// stream between two hosts (`npm run bench:snapshot-stream`, 2026-12-05: ~340 MB/s per core in
// place); libsodium runs at ~2,200 MB/s here. The addon ships prebuilt for Linux, macOS and Windows
// on x64 and arm64; where it does not load (another platform, a broken install), the JS cipher is
// used and nothing else changes. OMNI_PNET_CIPHER=js forces the JS one (tests compare the two).
//
// XSalsa20(key, nonce24) = Salsa20(HSalsa20(key, nonce[0..16]), nonce[16..24]): the subkey is
// computed once per direction with noble's HSalsa20, then libsodium's `crypto_stream_salsa20_xor_ic`
// XORs from any 64-byte block index (64-bit counter).
import { createRequire } from 'node:module';
import { hsalsa, xsalsa20 } from '@noble/ciphers/salsa.js';

/** The keystream of one (key, nonce) pair. */
export interface Xsalsa20Xor {
  readonly backend: Xsalsa20Backend;
  /** XORs `input` with the keystream from 64-byte block `counter` on into `output` (same length; may be `input`). */
  xor(input: Uint8Array, output: Uint8Array, counter: number): void;
  /** Wipes the key material it holds; no use after. */
  wipe(): void;
}

interface SodiumStream {
  crypto_stream_salsa20_xor_ic(c: Uint8Array, m: Uint8Array, n: Uint8Array, ic: number, k: Uint8Array): void;
}

export type Xsalsa20Backend = 'libsodium' | 'js';

let sodium: SodiumStream | null | undefined;

/** libsodium's stream functions, or null when the addon cannot be loaded (or OMNI_PNET_CIPHER=js). */
function loadSodium(): SodiumStream | null {
  if (sodium !== undefined) return sodium;
  sodium = null;
  if (process.env.OMNI_PNET_CIPHER === 'js') return sodium;
  try {
    const loaded = createRequire(import.meta.url)('sodium-native') as Partial<SodiumStream>;
    if (typeof loaded.crypto_stream_salsa20_xor_ic === 'function') sodium = loaded as SodiumStream;
  } catch {
    // no prebuilt addon for this platform: the JS cipher below
  }
  return sodium;
}

/** Which implementation `xsalsa20Xor` uses in this process. */
export function xsalsa20Backend(): Xsalsa20Backend {
  return loadSodium() ? 'libsodium' : 'js';
}

const SIGMA = new Uint32Array(new Uint8Array(Buffer.from('expand 32-byte k', 'latin1')).buffer);

function littleEndianWords(bytes: Uint8Array): Uint32Array {
  const words = new Uint32Array(bytes.length / 4);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < words.length; i++) words[i] = view.getUint32(i * 4, true);
  return words;
}

/** HSalsa20(key, nonce[0..16]): the Salsa20 key XSalsa20 uses for this nonce. */
export function xsalsa20Subkey(key: Uint8Array, nonce: Uint8Array): Uint8Array {
  const out = new Uint32Array(8);
  hsalsa(SIGMA, littleEndianWords(key), littleEndianWords(nonce.subarray(0, 16)), out);
  const bytes = new Uint8Array(32);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 8; i++) view.setUint32(i * 4, out[i], true);
  return bytes;
}

/**
 * The XOR function of one (key, 24-byte nonce) pair, holding copies of what it needs; `backend`
 * picks one explicitly (tests), else libsodium when it loads.
 */
export function xsalsa20Xor(key: Uint8Array, nonce: Uint8Array, backend: Xsalsa20Backend = xsalsa20Backend()): Xsalsa20Xor {
  const native = backend === 'libsodium' ? loadSodiumOrThrow() : null;
  if (native) {
    const subkey = xsalsa20Subkey(key, nonce);
    const tail = Uint8Array.from(nonce.subarray(16, 24));
    return {
      backend: 'libsodium',
      xor: (input, output, counter) => native.crypto_stream_salsa20_xor_ic(output, input, tail, counter, subkey),
      wipe: () => subkey.fill(0),
    };
  }
  const k = Uint8Array.from(key);
  const n = Uint8Array.from(nonce);
  return {
    backend: 'js',
    xor: (input, output, counter) => {
      xsalsa20(k, n, input, output, counter);
    },
    wipe: () => k.fill(0),
  };
}

function loadSodiumOrThrow(): SodiumStream {
  const s = loadSodium();
  if (!s) throw new Error('libsodium (sodium-native) is not available in this process');
  return s;
}
