// Output of process tasks. A task's stdout and stderr are two named pipes in its directory
// (out.pipe, err.pipe) that its wrapper (process-wrapper.sh) holds open; omnid reads them here and
// appends "<ISO time> <O|E> <text>" lines to output.log, splitting long lines and rotating the
// file to output.log.1 at its size limit. One pump per task directory in this process, whichever
// driver instance attached first; it ends when every writer of both pipes is gone.
// While it is attached the pump also holds ack.pipe open, which lets a wrapper whose command has
// ended exit: the pump then already holds what is left in the pipes.
import { closeSync, constants, fstatSync, openSync, renameSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const OUT_PIPE = 'out.pipe';
export const ERR_PIPE = 'err.pipe';
export const ACK_PIPE = 'ack.pipe';
export const OUTPUT_LOG = 'output.log';

export interface OutputOptions {
  /** output.log is renamed to output.log.1 (replacing it) when it would grow past this. */
  logMaxBytes: number;
  /** Longer output lines are split. */
  lineMaxBytes: number;
}

/** output.log with its size limit; synchronous appends, one write per chunk read (page-cache writes). */
export class LogFile {
  private fd: number | undefined;
  private size = 0;
  private readonly path: string;

  constructor(
    dir: string,
    private readonly maxBytes: number,
  ) {
    this.path = join(dir, OUTPUT_LOG);
  }

  /** Appends lines read at the same moment (one timestamp), rotating between two lines when one would not fit. */
  append(tag: 'O' | 'E', texts: string[]): void {
    const prefix = `${new Date().toISOString()} ${tag} `;
    this.open(); // for the current size
    const all = Buffer.from(`${prefix}${texts.join(`\n${prefix}`)}\n`);
    if (this.size + all.length <= this.maxBytes) {
      this.writeAll(all); // the common case: no rotation within this chunk
      return;
    }
    const pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = () => {
      this.writeAll(Buffer.concat(pending, pendingBytes));
      pending.length = 0;
      pendingBytes = 0;
    };
    for (const text of texts) {
      const b = Buffer.from(`${prefix}${text}\n`);
      if (this.size + pendingBytes > 0 && this.size + pendingBytes + b.length > this.maxBytes) {
        flush();
        this.rotate();
      }
      pending.push(b);
      pendingBytes += b.length;
    }
    if (pendingBytes > 0) flush();
  }

  close(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
  }

  private writeAll(buf: Buffer): void {
    const fd = this.open();
    let off = 0;
    while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    this.size += buf.length;
  }

  private open(): number {
    if (this.fd === undefined) {
      this.fd = openSync(this.path, 'a', 0o600);
      this.size = fstatSync(this.fd).size;
    }
    return this.fd;
  }

  private rotate(): void {
    this.close();
    renameSync(this.path, `${this.path}.1`);
    this.open();
  }
}

/** Cuts a byte stream into lines (at most lineMaxBytes each); a line is decoded only once complete. */
class LineSplitter {
  private pending: Buffer = Buffer.alloc(0);

  constructor(
    private readonly lineMaxBytes: number,
    private readonly emit: (texts: string[]) => void,
  ) {}

  push(chunk: Buffer): void {
    this.pending = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const lines: string[] = [];
    let nl: number;
    while ((nl = this.pending.indexOf(10)) >= 0) {
      lines.push(text(this.pending.subarray(0, nl)));
      this.pending = this.pending.subarray(nl + 1);
    }
    while (this.pending.length >= this.lineMaxBytes) {
      lines.push(text(this.pending.subarray(0, this.lineMaxBytes)));
      this.pending = this.pending.subarray(this.lineMaxBytes);
    }
    if (lines.length > 0) this.emit(lines);
  }

  /** Emits a last line without its newline (the command ended). */
  flush(): void {
    if (this.pending.length > 0) this.emit([text(this.pending)]);
    this.pending = Buffer.alloc(0);
  }
}

function text(b: Buffer): string {
  const s = b.toString('utf8');
  return s.endsWith('\r') ? s.slice(0, -1) : s;
}

export class OutputPump {
  /** Resolves once both pipes reached end of file (no writer left) or the pump was closed. */
  readonly ended: Promise<void>;
  private settled: Promise<void> | undefined;
  private readonly sockets: Socket[] = [];
  private readonly splitters: LineSplitter[] = [];
  private ackFd: number | undefined;
  private readonly log: LogFile;
  private closed = false;
  private resolveEnded!: () => void;

  /** Opens the pipes; throws (ENOENT) if the task has none. */
  constructor(
    readonly dir: string,
    opts: OutputOptions,
    private readonly onEnd: (p: OutputPump) => void,
  ) {
    this.ended = new Promise((r) => (this.resolveEnded = r));
    this.log = new LogFile(dir, opts.logMaxBytes);
    const fds: number[] = [];
    try {
      // read ends first: once the wrapper can pass ack.pipe, the pipes must already have a reader
      for (const name of [OUT_PIPE, ERR_PIPE]) fds.push(openSync(join(dir, name), constants.O_RDONLY | constants.O_NONBLOCK));
      // O_RDWR never blocks on a FIFO and makes this a writer of it: the wrapper's open for reading returns
      this.ackFd = openSync(join(dir, ACK_PIPE), constants.O_RDWR | constants.O_NONBLOCK);
    } catch (e) {
      for (const fd of fds) closeSync(fd);
      throw e;
    }
    let open = fds.length;
    fds.forEach((fd, i) => {
      const tag = i === 0 ? 'O' : 'E';
      const split = new LineSplitter(opts.lineMaxBytes, (texts) => this.write(tag, texts));
      const sock = new Socket({ fd, readable: true, writable: false, allowHalfOpen: true });
      sock.unref(); // the pump must not keep omnid (or a test) alive
      sock.on('data', (c: Buffer) => {
        split.push(c);
        // one chunk per event-loop turn: a task that floods its output must not stall omnid
        // (libuv would otherwise read and deliver many chunks in a row); the task waits meanwhile
        sock.pause();
        setImmediate(() => sock.resume());
      });
      sock.on('end', () => split.flush());
      sock.on('error', () => {}); // 'close' follows
      sock.on('close', () => {
        open -= 1;
        if (open === 0) this.close();
      });
      this.sockets.push(sock);
      this.splitters.push(split);
    });
  }

  /** Waits (at most graceMs) for the pipes to end after the command ended, then emits partial lines. */
  settle(graceMs: number): Promise<void> {
    // grandchildren may keep the pipes open: wait for them once, not on every call
    this.settled ??= Promise.race([this.ended, sleep(graceMs, undefined, { ref: false })]).then(() => {
      if (!this.closed) for (const s of this.splitters) s.flush();
    });
    return this.settled;
  }

  close(): void {
    if (this.closed) return;
    for (const s of this.splitters) s.flush();
    this.closed = true;
    for (const s of this.sockets) s.destroy();
    this.log.close();
    if (this.ackFd !== undefined) closeSync(this.ackFd);
    this.ackFd = undefined;
    this.onEnd(this);
    this.resolveEnded();
  }

  private write(tag: 'O' | 'E', texts: string[]): void {
    if (this.closed) return;
    try {
      this.log.append(tag, texts);
    } catch {
      // disk full or the directory removed under us: drop the line rather than fail omnid
    }
  }
}

const pumps = new Map<string, OutputPump>();

/** The task's pump, attached now if needed; undefined if the task has no pipes (yet, or any more). */
export function attachOutput(dir: string, opts: OutputOptions): OutputPump | undefined {
  const cur = pumps.get(dir);
  if (cur) return cur;
  let p: OutputPump;
  try {
    p = new OutputPump(dir, opts, (done) => {
      if (pumps.get(dir) === done) pumps.delete(dir);
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  pumps.set(dir, p);
  return p;
}

/** The task's pump if one is attached in this process. */
export function outputOf(dir: string): OutputPump | undefined {
  return pumps.get(dir);
}

/** Stops reading the task's pipes (before its directory is removed or reused). */
export function detachOutput(dir: string): void {
  pumps.get(dir)?.close();
}
