// The `xsalsa20` WebAssembly cipher exactly as @libp2p/pnet loads it (resolved from pnet's own
// location, so it is the copy pnet uses), for the wire-compatibility and crash tests.
import { createRequire } from 'node:module';

export interface WasmXor {
  update(input: Uint8Array, output?: Uint8Array): Uint8Array;
  finalize(): void;
}

const requireFromPnet = createRequire(import.meta.resolve('@libp2p/pnet'));
export const wasmXsalsa20 = requireFromPnet('xsalsa20') as (nonce: Uint8Array, key: Uint8Array) => WasmXor;
