// The `xsalsa20` WebAssembly cipher exactly as @libp2p/pnet loads it (resolved from pnet's own
// location, so it is the copy pnet uses), for the wire-compatibility and crash tests.
import { createRequire } from 'node:module';

export interface WasmXor {
  update(input: Uint8Array, output?: Uint8Array): Uint8Array;
  finalize(): void;
}
type WasmXsalsa20 = (nonce: Uint8Array, key: Uint8Array) => WasmXor;

const requireFromPnet = createRequire(import.meta.resolve('@libp2p/pnet'));

/** The instance @libp2p/pnet itself uses in this process (one WebAssembly memory for all ciphers). */
export const wasmXsalsa20 = requireFromPnet('xsalsa20') as WasmXsalsa20;

/**
 * A separate instance of the package, with its own fresh WebAssembly memory (as in a new process):
 * once an instance's memory has hit its cap it stays broken, so each crash scenario takes its own.
 */
export function freshWasmXsalsa20(): WasmXsalsa20 {
  const id = requireFromPnet.resolve('xsalsa20');
  const shared = requireFromPnet.cache[id];
  delete requireFromPnet.cache[id];
  try {
    return requireFromPnet('xsalsa20') as WasmXsalsa20;
  } finally {
    if (shared) requireFromPnet.cache[id] = shared;
  }
}
