// Bytes both ways between a TCP socket and a libp2p stream (or another socket), with
// back-pressure each way, half-close carried across (a client that shuts down its sending side
// still gets the whole answer), and teardown of both sides when either fails.
import type { Socket } from 'node:net';
import type { Stream } from '@libp2p/interface';
import { nextDrain } from '../p2p/drain.js';

/** Ends an established connection that carried no byte either way for this long. */
export const DEFAULT_IDLE_MS = 60 * 60 * 1000;

/**
 * Pipes `socket` ⇄ `stream` until both directions ended; resolves once both are closed. The
 * stream should be paused when handed over if bytes may arrive before this is called (they wait
 * in its read buffer); `first` is bytes already read from the stream, written to the socket first.
 */
export function pipeSocketStream(socket: Socket, stream: Stream, opts: { first?: Uint8Array; idleMs?: number } = {}): Promise<void> {
  return new Promise<void>((resolve) => {
    let socketClosed = false;
    let streamClosed = false;
    const done = () => {
      if (socketClosed && streamClosed) resolve();
    };
    const fail = (err: Error) => {
      if (!socketClosed) socket.destroy();
      if (stream.status === 'open' || stream.status === 'closing') stream.abort(err);
    };
    stream.inactivityTimeout = 0;
    socket.setTimeout(opts.idleMs ?? DEFAULT_IDLE_MS, () => fail(new Error('idle timeout')));
    socket.setNoDelay(true);

    // stream → socket: pause the stream (yamux stops granting window) while the socket is full.
    const write = (buf: Uint8Array) => {
      if (socket.destroyed || socket.writableEnded) return;
      if (!socket.write(buf)) {
        stream.pause();
        socket.once('drain', () => stream.resume());
      }
    };
    if (opts.first && opts.first.length > 0) write(opts.first);
    stream.addEventListener('message', (evt) => {
      const d = evt.data;
      write(d instanceof Uint8Array ? d : d.subarray());
    });
    // The remote closed its writing side and every byte was delivered: half-close the socket.
    const onEnd = () => {
      if (!socket.destroyed && !socket.writableEnded) socket.end();
    };
    stream.addEventListener('end', onEnd);
    if (stream.readableEnded) onEnd();
    stream.addEventListener('close', (evt) => {
      streamClosed = true;
      if (evt.error) socket.destroy();
      else onEnd();
      done();
    });

    // socket → stream: pause the socket while the stream's send buffer is full.
    socket.on('data', (buf: Buffer) => {
      if (stream.writeStatus !== 'writable') return;
      try {
        if (!stream.send(buf)) {
          socket.pause();
          nextDrain(stream).then(
            () => socket.resume(),
            (err: Error) => fail(err),
          );
        }
      } catch (err) {
        fail(err as Error);
      }
    });
    socket.on('end', () => {
      if (stream.writeStatus === 'writable') stream.close().catch((err: Error) => fail(err));
    });
    socket.on('error', (err) => fail(err));
    socket.on('close', () => {
      socketClosed = true;
      // The socket is gone: if the stream is still up it can never finish normally.
      if (stream.status === 'open') {
        if (socket.readableEnded && stream.readableEnded) void stream.close().catch(() => undefined);
        else stream.abort(new Error('the local connection closed'));
      }
      done();
    });
    if (stream.status !== 'open') {
      streamClosed = true;
      fail(new Error('stream closed before piping'));
    }
    stream.resume();
    socket.resume();
  });
}

/** Pipes two sockets both ways (same node): back-pressure and half-close through Node's pipe. */
export function pipeSockets(a: Socket, b: Socket, idleMs = DEFAULT_IDLE_MS): Promise<void> {
  return new Promise<void>((resolve) => {
    let closed = 0;
    const kill = () => {
      a.destroy();
      b.destroy();
    };
    a.setTimeout(idleMs, kill);
    a.setNoDelay(true);
    b.setNoDelay(true);
    a.on('error', kill);
    b.on('error', kill);
    // Each side's close: once both directions ended, the other closes too.
    a.once('close', () => {
      if (!b.destroyed && !(a.readableEnded && a.writableEnded)) b.destroy();
      if (++closed === 2) resolve();
    });
    b.once('close', () => {
      if (!a.destroyed && !(b.readableEnded && b.writableEnded)) a.destroy();
      if (++closed === 2) resolve();
    });
    a.pipe(b);
    b.pipe(a);
    a.resume();
  });
}
