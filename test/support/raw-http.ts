// A raw HTTP/1.1 client over a TCP socket, for tests that must send what node:http's client
// refuses to (malformed targets, odd methods, chunked bodies of any size) and see exactly how
// the server answers or closes.
import { connect, type Socket } from 'node:net';

export interface RawResponse {
  /** 0 when the connection closed (or was reset) before a complete response head. */
  status: number;
  headers: Record<string, string>;
  /** The body (empty for a chunked/streamed answer: only its head is awaited). */
  body: string;
  /** The socket error, if the connection ended with one (e.g. ECONNRESET). */
  error?: string;
}

const HEAD_END = '\r\n\r\n';

/** Sends `data` and resolves with the first response; times out as an error after timeoutMs. */
export function rawHttp(port: number, data: Buffer | string | ((s: Socket) => void), timeoutMs = 20_000): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let done = false;
    let error: string | undefined;
    const finish = (r: RawResponse) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => {
      done = true;
      s.destroy();
      reject(new Error(`no complete answer within ${timeoutMs} ms; got ${JSON.stringify(buf.toString('latin1').slice(0, 200))}`));
    }, timeoutMs);
    const tryParse = (closed: boolean) => {
      const text = buf.toString('latin1');
      const end = text.indexOf(HEAD_END);
      if (end < 0) {
        if (closed) finish({ status: 0, headers: {}, body: '', error });
        return;
      }
      const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1] ?? 0);
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const bodyBytes = buf.subarray(Buffer.byteLength(text.slice(0, end + HEAD_END.length), 'latin1'));
      const length = headers['content-length'];
      if (length !== undefined) {
        if (bodyBytes.length >= Number(length)) finish({ status, headers, body: bodyBytes.subarray(0, Number(length)).toString('utf8'), error });
        else if (closed) finish({ status, headers, body: bodyBytes.toString('utf8'), error: error ?? 'closed before the end of the body' });
      } else if (headers['transfer-encoding'] || closed) {
        finish({ status, headers, body: headers['transfer-encoding'] ? '' : bodyBytes.toString('utf8'), error });
      }
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      tryParse(false);
    });
    s.on('error', (e: NodeJS.ErrnoException) => (error = e.code ?? e.message));
    s.on('close', () => tryParse(true));
    s.on('connect', () => {
      if (typeof data === 'function') data(s);
      else s.write(data);
    });
  });
}

/** Resolves once the socket is closed by the peer (or errors); never rejects. */
export function whenClosed(s: Socket): Promise<void> {
  return new Promise((resolve) => {
    if (s.destroyed) return resolve();
    s.once('close', () => resolve());
  });
}
