// Frames over a libp2p stream: write with backpressure, read whole frames with a size limit.
import type { Stream } from '@libp2p/interface';
import { FrameDecoder, encodeFrame, encodeTaggedFrame } from '../../protocol/framing.js';

/** Sends one frame; waits for the stream to drain when its write buffer is full. */
export async function sendFrame(stream: Stream, payload: Uint8Array, signal?: AbortSignal): Promise<void> {
  if (!stream.send(encodeFrame(payload))) await stream.onDrain({ signal });
}

/** Sends one frame whose payload is the byte `tag` then `body` (one buffer, one copy of the body). */
export async function sendTaggedFrame(stream: Stream, tag: number, body: Uint8Array | string, signal?: AbortSignal): Promise<void> {
  const bytes = typeof body === 'string' ? Buffer.from(body) : body;
  if (!stream.send(encodeTaggedFrame(tag, bytes, (n) => Buffer.allocUnsafe(n)))) await stream.onDrain({ signal });
}

/** Yields whole frames as they arrive; throws FrameError on an oversized or malformed frame. */
export async function* readFrames(stream: Stream, maxFrameBytes: number): AsyncGenerator<Uint8Array> {
  const decoder = new FrameDecoder(maxFrameBytes, (n) => Buffer.allocUnsafe(n));
  for await (const chunk of stream) {
    const bytes = chunk instanceof Uint8Array ? chunk : chunk.subarray();
    for (const frame of decoder.push(bytes)) yield frame;
  }
}

/** Reads exactly one frame (a request or a response), or throws if the stream ends first. */
export async function readOneFrame(stream: Stream, maxFrameBytes: number): Promise<Uint8Array> {
  for await (const frame of readFrames(stream, maxFrameBytes)) return frame;
  throw new Error('stream ended before a complete message arrived');
}
