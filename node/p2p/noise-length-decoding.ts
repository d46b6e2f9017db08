// Noise frames decoded without building an Error per socket read.
//
// @chainsafe/libp2p-noise 17 splits what a connection reads into frames with @libp2p/utils'
// LengthPrefixedDecoder: after the last whole frame of a read it asks its length decoder
// (`uint16BEDecode`) for the next length, which throws `RangeError('Could not decode int16BE')`
// on the empty buffer, and the decoder catches that RangeError as "wait for more bytes". So every
// read of every connection builds an Error and captures its stack. CPU profiles of a 3-node
// loopback cluster at one write at a time (`test/bench/write-latency-diag.ts`) put 0.3–0.6 s of
// each node's main thread in that function for 6,000 writes (README: Benchmarks).
//
// The patch gives each decoder a length decoder that answers an empty buffer with a length of 0
// and passes every other buffer to the decoder it had. The decoder then finds a frame of 0 bytes
// plus its prefix (at least one byte) longer than the empty buffer, and waits for more bytes, as
// it did on the RangeError — without an exception (a RangeError made in advance, tried first,
// still cost 5–10 µs a read in a profile: a throw is not free). What the decoder yields, and every
// error it raises, stay the same (test/unit/noise-length-decoding.test.ts runs the library's
// decoder under the patch, cut into reads at random).
import { LengthPrefixedDecoder } from '@libp2p/utils';
import type { Uint8ArrayList } from 'uint8arraylist';

type LengthDecoder = ((data: Uint8Array | Uint8ArrayList) => number) & { [QUIET]?: true };

const QUIET = Symbol('omni.quietLengthDecoder');
/** `decodeLength`, except that an empty buffer reads as a length of 0 (the decoder then waits for more bytes). */
export function quietLengthDecoder(decodeLength: LengthDecoder): LengthDecoder {
  if (decodeLength[QUIET]) return decodeLength;
  const quiet: LengthDecoder = (data) => {
    if (data.byteLength === 0) return 0;
    return decodeLength(data);
  };
  quiet[QUIET] = true;
  return quiet;
}

interface DecoderFields {
  lengthDecoder: LengthDecoder;
  encodingLength(length: number): number;
  decode(buf: Uint8Array | Uint8ArrayList): Generator<Uint8ArrayList, void, unknown>;
}

let installed = false;

/** Installs the quiet length decoder on every LengthPrefixedDecoder of this process (once; the host calls it before creating libp2p). */
export function installQuietLengthDecoding(): void {
  if (installed) return;
  installed = true;
  const proto = LengthPrefixedDecoder.prototype as unknown as DecoderFields;
  const decode = proto.decode;
  if (typeof decode !== 'function') throw new Error('@libp2p/utils: LengthPrefixedDecoder.decode is gone (a new major version?): review node/p2p/noise-length-decoding.ts');
  proto.decode = function (this: DecoderFields, buf: Uint8Array | Uint8ArrayList) {
    // Only where a frame of length 0 still has a prefix of at least a byte (noise's is 2): there
    // the empty buffer is shorter than any frame, so the decoder waits. Elsewhere it is left as is.
    if (typeof this.lengthDecoder === 'function' && !this.lengthDecoder[QUIET] && this.encodingLength(0) > 0) this.lengthDecoder = quietLengthDecoder(this.lengthDecoder);
    return decode.call(this, buf);
  };
}
