// Waiting for a libp2p stream's write buffer to go out. `Stream.onDrain()` of @libp2p/utils 7
// keeps the promise of its first wait and resolves every later call with it, at once: a sender
// that waits on it after the first drain never waits again and queues everything it sends in
// memory. This waits for the stream's next 'drain' event itself.
import type { Stream } from '@libp2p/interface';

/**
 * Resolves on the stream's next 'drain' (call it after `send()` returned false); rejects when the
 * stream closes or can no longer be written, or when `signal` aborts.
 */
export function nextDrain(stream: Stream, signal?: AbortSignal): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    if (stream.writeStatus !== 'writable') return reject(new Error(`the stream is ${stream.writeStatus}`));
    const cleanup = () => {
      stream.removeEventListener('drain', onDrain);
      stream.removeEventListener('close', onClose);
      signal?.removeEventListener('abort', onAbort);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onClose = (evt: Event) => {
      cleanup();
      reject((evt as Event & { error?: Error }).error ?? new Error('the stream closed'));
    };
    const onAbort = () => {
      cleanup();
      reject(signal!.reason);
    };
    stream.addEventListener('drain', onDrain);
    stream.addEventListener('close', onClose);
    signal?.addEventListener('abort', onAbort);
  });
}

/** Sends `bytes`; when the stream's write buffer is full, waits for it to drain. */
export async function sendDrained(stream: Stream, bytes: Uint8Array, signal?: AbortSignal): Promise<void> {
  if (!stream.send(bytes)) await nextDrain(stream, signal);
}
