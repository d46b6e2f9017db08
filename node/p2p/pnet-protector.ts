// The libp2p private-network (pnet, PSK v1) connection protector, on libsodium's or noble's XSalsa20
// instead of @libp2p/pnet's `xsalsa20` WebAssembly package.
//
// The cipher is libsodium's when its addon loads, else noble's JS (node/p2p/xsalsa20.ts).
//
// Why our own: `xsalsa20` keeps every cipher of the process in one WebAssembly memory (640 KiB,
// capped at 64 MiB) and each cipher caches a view of it. One large write (noise frames coalesced
// into ~1 MB) grows the memory, which detaches every other cipher's view; each later update on any
// connection then grows it again, until `RangeError: WebAssembly.Memory.grow(): Maximum memory size
// exceeded` is thrown from a socket callback and kills the process (issue 9). Here each direction
// of a connection only holds a 64-byte keystream block; nothing is shared between connections.
//
// Wire protocol (identical to go-libp2p and @libp2p/pnet, so mixed clusters interoperate): right
// after the transport connects, each side sends a random 24-byte nonce in the clear; from then on
// every byte a side sends is XORed with the XSalsa20 keystream of (PSK, its own nonce), and every
// byte it receives with the keystream of (PSK, the peer's nonce). The keystream of a direction
// continues across chunks: chunk boundaries carry no meaning on the wire. A peer with another key
// completes the nonce exchange but then produces garbage, so the noise handshake that follows
// fails and the connection is dropped before any stream can be opened.
import { AbstractMultiaddrConnection, byteStream } from '@libp2p/utils';
import { xsalsa20Xor, type Xsalsa20Backend, type Xsalsa20Xor } from './xsalsa20.js';
import { randomBytes } from 'node:crypto';
import type { AbortOptions, ConnectionProtector, MessageStream, MultiaddrConnection } from '@libp2p/interface';
import type { SendResult } from '@libp2p/utils';
import { OmniError } from '../errors.js';

export const PNET_KEY_BYTES = 32;
export const PNET_NONCE_BYTES = 24;
/** The nonce exchange must finish within this (and within any signal the caller passes; libp2p gives an inbound upgrade 10 s). */
export const PNET_HANDSHAKE_TIMEOUT_MS = 10_000;
/** A swarm key file is three short lines; anything larger is not one. */
export const SWARM_KEY_FILE_MAX_BYTES = 1024;
const BLOCK_BYTES = 64;
/** Coalesced sends are written at once past this many bytes (bulk transfers need no wait). */
const FLUSH_BYTES = 256 * 1024;
/** The chunk list libp2p streams pass around (its own copy of `uint8arraylist`). */
type ByteList = Parameters<AbstractMultiaddrConnection['sendData']>[0];
/**
 * noble's Salsa20 block counter is 32 bits and it refuses to wrap (the protocol's is 64 bits):
 * a direction can carry (2^32 - 1) blocks = 256 GiB; past that the connection is closed with
 * PNET_KEYSTREAM_EXHAUSTED and libp2p dials a new one (fresh nonces). The same limit holds with
 * libsodium (whose counter is 64 bits), so both ciphers behave alike.
 */
export const PNET_KEYSTREAM_MAX_BYTES = (2 ** 32 - 1) * BLOCK_BYTES;

const SWARM_KEY_HEADER = '/key/swarm/psk/1.0.0/';
const ZERO_BLOCK = new Uint8Array(BLOCK_BYTES);

/** The swarm key file libp2p (go and js) reads: header, encoding, then the key in base16. */
export function encodeSwarmKey(key: Uint8Array): Uint8Array {
  if (key.length !== PNET_KEY_BYTES) throw new OmniError('PNET_BAD_KEY', `private network key must be ${PNET_KEY_BYTES} bytes, got ${key.length}`);
  return new TextEncoder().encode(`${SWARM_KEY_HEADER}\n/base16/\n${Buffer.from(key).toString('hex')}`);
}

/** Reads a swarm key file (`/base16/`, `/base64/` or `/bin/` encoding, as go-libp2p accepts). */
export function decodeSwarmKey(file: Uint8Array): Uint8Array {
  const bad = (why: string) => new OmniError('PNET_BAD_KEY', `invalid swarm key file: ${why}`);
  if (file.length > SWARM_KEY_FILE_MAX_BYTES) throw bad(`larger than ${SWARM_KEY_FILE_MAX_BYTES} bytes`);
  const lineEnd = (from: number): [number, number] => {
    const nl = file.indexOf(0x0a, from);
    if (nl < 0) throw bad('truncated header');
    return [nl > from && file[nl - 1] === 0x0d ? nl - 1 : nl, nl + 1];
  };
  const [headerEnd, codecStart] = lineEnd(0);
  const header = Buffer.from(file.subarray(0, headerEnd)).toString('latin1');
  if (header !== SWARM_KEY_HEADER) throw bad(`expected header ${SWARM_KEY_HEADER}, got ${JSON.stringify(header.slice(0, 40))}`);
  const [codecEnd, keyStart] = lineEnd(codecStart);
  const codec = Buffer.from(file.subarray(codecStart, codecEnd)).toString('latin1');
  const rest = file.subarray(keyStart);
  let key: Uint8Array;
  if (codec === '/bin/') key = rest;
  else {
    const text = Buffer.from(rest).toString('latin1').trim();
    if (codec === '/base16/') {
      if (!/^[0-9a-fA-F]*$/.test(text)) throw bad('key is not hex');
      key = Buffer.from(text, 'hex');
    } else if (codec === '/base64/') {
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw bad('key is not base64');
      key = Buffer.from(text, 'base64');
    } else throw bad(`unknown encoding ${JSON.stringify(codec.slice(0, 40))} (expected /base16/, /base64/ or /bin/)`);
  }
  if (key.length !== PNET_KEY_BYTES) throw bad(`key must be ${PNET_KEY_BYTES} bytes, got ${key.length}`);
  return new Uint8Array(key);
}

/**
 * One direction of a protected connection: XORs bytes with the XSalsa20 keystream of (key, nonce),
 * continuing where the previous call stopped, including in the middle of a 64-byte block.
 */
export class PnetKeystream {
  private readonly cipher: Xsalsa20Xor;
  /** Keystream bytes used so far. */
  private position: number;
  /** The keystream block `blockIndex`, kept when a chunk ended inside it. */
  private readonly block = new Uint8Array(BLOCK_BYTES);
  private blockIndex = -1;

  /** `position` > 0 is for tests that check the keystream limit without sending 256 GiB; `backend` for tests that compare the two ciphers. */
  constructor(key: Uint8Array, nonce: Uint8Array, position = 0, backend?: Xsalsa20Backend) {
    if (key.length !== PNET_KEY_BYTES) throw new OmniError('PNET_BAD_KEY', `private network key must be ${PNET_KEY_BYTES} bytes`);
    if (nonce.length !== PNET_NONCE_BYTES) throw new OmniError('PNET_BAD_NONCE', `pnet nonce must be ${PNET_NONCE_BYTES} bytes`);
    if (!Number.isSafeInteger(position) || position < 0 || position > PNET_KEYSTREAM_MAX_BYTES) throw new RangeError(`bad keystream position ${position}`);
    this.cipher = xsalsa20Xor(key, nonce, backend);
    this.position = position;
  }

  get backend(): Xsalsa20Backend {
    return this.cipher.backend;
  }

  /**
   * Writes input XOR keystream into `output` (same length) and returns it. `output` may be
   * `input` itself (in place), but may not otherwise overlap it.
   */
  xor(input: Uint8Array, output: Uint8Array = new Uint8Array(input.length)): Uint8Array {
    const n = input.length;
    if (output.length !== n) throw new RangeError(`output is ${output.length} bytes for ${n} bytes of input`);
    if (n === 0) return output;
    if (n > PNET_KEYSTREAM_MAX_BYTES - this.position) {
      throw new OmniError('PNET_KEYSTREAM_EXHAUSTED', `pnet: this connection direction has used its ${PNET_KEYSTREAM_MAX_BYTES} keystream bytes; reconnect`);
    }
    let done = 0;
    const offset = this.position % BLOCK_BYTES;
    if (offset !== 0) {
      // Finish the block the previous chunk stopped in.
      const index = (this.position - offset) / BLOCK_BYTES;
      if (this.blockIndex !== index) {
        this.cipher.xor(ZERO_BLOCK, this.block, index);
        this.blockIndex = index;
      }
      done = Math.min(n, BLOCK_BYTES - offset);
      for (let i = 0; i < done; i++) output[i] = input[i] ^ this.block[offset + i];
    }
    if (done < n) {
      // Whole blocks from here (the last one truncated); its start is block-aligned.
      this.cipher.xor(input.subarray(done), output.subarray(done), (this.position + done) / BLOCK_BYTES);
    }
    this.position += n;
    return output;
  }

  /**
   * The next bytes of the stream (one buffer or a list of them) XOR keystream, in a new buffer.
   * libsodium XORs each part straight into it. For noble the bytes are first copied into a buffer
   * placed so that the first whole keystream block starts on a 4-byte boundary: noble then XORs
   * 32-bit words in place instead of single bytes (socket buffers are often unaligned).
   */
  transform(data: Uint8Array | Iterable<Uint8Array>): Uint8Array {
    const parts = data instanceof Uint8Array ? [data] : [...data];
    let n = 0;
    for (const p of parts) n += p.length;
    if (this.cipher.backend === 'libsodium') {
      const out = Buffer.allocUnsafe(n);
      let at = 0;
      for (const p of parts) {
        this.xor(p, out.subarray(at, at + p.length));
        at += p.length;
      }
      return out;
    }
    const lead = this.position % 4;
    const out = new Uint8Array(new ArrayBuffer(n + lead), lead, n);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return this.xor(out, out);
  }

  /**
   * The next bytes of the stream XOR keystream, written over them (one buffer or a list of them;
   * the same object is returned) — for bytes nothing else reads, as a socket's received chunks:
   * no new buffer, and the bytes are still in the cache the kernel just wrote them through. For
   * noble, transform()'s aligned copy instead (its word-wise XOR needs the alignment).
   */
  transformInPlace<T extends Uint8Array | Iterable<Uint8Array>>(data: T): T | Uint8Array {
    if (this.cipher.backend !== 'libsodium') return this.transform(data);
    if (data instanceof Uint8Array) return this.xor(data, data);
    for (const p of data as Iterable<Uint8Array>) this.xor(p, p);
    return data;
  }

  /** Wipes the key material this direction holds. */
  destroy(): void {
    this.cipher.wipe();
    this.block.fill(0);
    this.blockIndex = -1;
  }
}

interface PnetConnectionInit {
  maConn: MultiaddrConnection;
  key: Uint8Array;
  localNonce: Uint8Array;
  remoteNonce: Uint8Array;
}

/**
 * The protected connection handed to the upgrader (noise runs over it).
 *
 * Writes are coalesced: every muxer frame (a yamux header, a noise-encrypted chunk) arrives here
 * as its own send, and writing each one through to the socket made each its own syscall (13 % of
 * a leader's CPU under load, issue 13). The sends made before the running task's microtasks
 * are done (one Raft Ready's messages, a muxer's frames for one stream write) are kept and go out
 * as one encrypted buffer in one socket write (queueMicrotask), or at once when they reach
 * FLUSH_BYTES. Waiting for the end of the event-loop turn instead (setImmediate) merged a few more
 * writes but made every message wait for the turn's other I/O callbacks: a Raft read is four
 * message hops in a row (measured: microtasks gave 5–8 % more linearizable reads and 6–14 % more
 * writes at 16 at a time, README: Benchmarks). The keystream runs over the bytes in the order they were sent, so nothing changes
 * on the wire but the TCP segment boundaries. Backpressure is the socket's: while its last write
 * reported it full, sends say `canSendMore: false`, and its `drain` resumes the muxer.
 */
class PnetConnection extends AbstractMultiaddrConnection {
  private readonly maConn: MultiaddrConnection;
  private readonly outbound: PnetKeystream;
  private readonly inbound: PnetKeystream;
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private flushScheduled = false;
  private socketFull = false;

  constructor(init: PnetConnectionInit) {
    super({ log: init.maConn.log.newScope('pnet'), remoteAddr: init.maConn.remoteAddr, direction: init.maConn.direction });
    this.maConn = init.maConn;
    this.outbound = new PnetKeystream(init.key, init.localNonce);
    this.inbound = new PnetKeystream(init.key, init.remoteNonce);

    // These run inside socket event dispatch: an exception escaping them would be an uncaught
    // exception of the process, so any failure aborts this connection only. The received chunks
    // are the socket's own (Node gives each read a buffer of its own; the raw connection has
    // handed them on): decrypted where they are.
    this.maConn.addEventListener('message', (evt) => {
      try {
        this.onData(this.inbound.transformInPlace(evt.data));
      } catch (err) {
        this.abort(err as Error);
      }
    });
    this.maConn.addEventListener('drain', () => {
      this.socketFull = false;
      this.onMuxerDrain();
    });
    this.maConn.addEventListener('close', (evt) => {
      if (evt.error != null) {
        if (evt.local) this.abort(evt.error);
        else this.onRemoteReset();
      } else this.onTransportClosed();
    });
    this.addEventListener('close', () => {
      this.dropPending();
      this.outbound.destroy();
      this.inbound.destroy();
    });
  }

  sendData(data: ByteList): SendResult {
    const sentBytes = data.byteLength;
    for (const chunk of data) this.pending.push(chunk);
    this.pendingBytes += sentBytes;
    // A throw here (the keystream exhausted) is caught by AbstractMessageStream, which aborts this connection.
    if (this.pendingBytes >= FLUSH_BYTES) this.flush();
    else if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flushSafely());
    }
    return { sentBytes, canSendMore: !this.socketFull };
  }

  /** Encrypts what this turn sent and writes it to the socket in one write. */
  private flush(): void {
    this.flushScheduled = false;
    if (this.pendingBytes === 0) return;
    const parts = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    if (!this.maConn.send(this.outbound.transform(parts))) this.socketFull = true;
  }

  /** The scheduled flush runs outside any stream call: a failure aborts this connection only. */
  private flushSafely(): void {
    try {
      this.flush();
    } catch (err) {
      this.abort(err as Error);
    }
  }

  private dropPending(): void {
    this.flushScheduled = false;
    this.pending = [];
    this.pendingBytes = 0;
  }

  async sendClose(options?: AbortOptions): Promise<void> {
    this.flush();
    await this.maConn.close(options);
  }

  sendReset(err: Error): void {
    this.dropPending();
    this.maConn.abort(err);
  }

  sendPause(): void {
    this.maConn.pause();
  }

  sendResume(): void {
    this.maConn.resume();
  }
}

export interface PnetProtectorInit {
  /** The raw 32-byte network key (decodeSwarmKey reads one from a swarm key file). */
  key: Uint8Array;
  /** Limit on the nonce exchange. Default PNET_HANDSHAKE_TIMEOUT_MS. */
  handshakeTimeoutMs?: number;
}

class PnetProtector implements ConnectionProtector {
  readonly [Symbol.toStringTag] = 'omni/pnet';
  private readonly key: Uint8Array;
  private readonly handshakeTimeoutMs: number;

  constructor(init: PnetProtectorInit) {
    if (init.key.length !== PNET_KEY_BYTES) throw new OmniError('PNET_BAD_KEY', `private network key must be ${PNET_KEY_BYTES} bytes, got ${init.key.length}`);
    const ms = init.handshakeTimeoutMs ?? PNET_HANDSHAKE_TIMEOUT_MS;
    if (!Number.isInteger(ms) || ms <= 0) throw new RangeError(`handshakeTimeoutMs must be a positive integer, got ${ms}`);
    this.key = Uint8Array.from(init.key);
    this.handshakeTimeoutMs = ms;
  }

  async protect(connection: MessageStream, options: AbortOptions = {}): Promise<MessageStream> {
    const maConn = connection as MultiaddrConnection;
    if (maConn?.remoteAddr == null) throw new OmniError('PNET_BAD_CONNECTION', 'pnet: can only protect a raw transport connection');
    const peer = maConn.remoteAddr.toString();
    const timeout = AbortSignal.timeout(this.handshakeTimeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const localNonce = new Uint8Array(randomBytes(PNET_NONCE_BYTES));
    const bytes = byteStream(maConn);
    let remoteNonce: Uint8Array;
    try {
      const [got] = await Promise.all([bytes.read({ bytes: PNET_NONCE_BYTES, signal }), bytes.write(localNonce, { signal })]);
      remoteNonce = got.subarray();
    } catch (err) {
      const e = timeout.aborted
        ? new OmniError('PNET_HANDSHAKE_TIMEOUT', `pnet: no nonce from ${peer} within ${this.handshakeTimeoutMs} ms`)
        : options.signal?.aborted
          ? new OmniError('PNET_HANDSHAKE_ABORTED', `pnet: nonce exchange with ${peer} aborted`)
          : new OmniError('PNET_HANDSHAKE_FAILED', `pnet: nonce exchange with ${peer} failed: ${(err as Error).message}`);
      maConn.abort(e);
      throw e;
    }
    // Bytes that arrived after the peer's nonce (its first ciphertext) go back onto the raw
    // connection by unwrap() and reach the decrypting listener first.
    return new PnetConnection({ maConn: bytes.unwrap(), key: this.key, localNonce, remoteNonce });
  }
}

/** libp2p `connectionProtector` factory: `createLibp2p({ connectionProtector: pnetProtector({ key }) })`. */
export function pnetProtector(init: PnetProtectorInit): () => ConnectionProtector {
  const protector = new PnetProtector(init);
  return () => protector;
}
