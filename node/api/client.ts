// HTTP client for the omni API (used by the omni CLI, omnid leave, tests and benchmarks).
// Talks HTTPS (https://host:port, verified against the cluster CA), HTTP (http://host:port) or
// the node-local control socket (unix:/path/to/api.sock).
import { request as httpRequest, Agent as HttpAgent, type ClientRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { createRequire } from 'node:module';
import { OmniError } from '../errors.js';

const loadBuiltin = createRequire(import.meta.url);

const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_CLIENT_TIMEOUT_MS = 30_000;

export interface ApiClientOptions {
  /** The CA certificate(s) (PEM) an https address must chain to; without it, the system's CAs. */
  ca?: string;
  /** Where `ca` came from, for error messages (a file, $OMNI_CA, the config file). */
  caSource?: string;
}

/** Node's certificate verification failures: the server is not who the CA vouches for. */
const TLS_VERIFY_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_SIGNATURE_FAILURE', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'INVALID_CA', 'HOSTNAME_MISMATCH', 'ERR_TLS_CERT_ALTNAME_INVALID', 'INVALID_PURPOSE',
]);

export class ApiClient {
  private readonly agent: HttpAgent;
  private readonly request: (opts: RequestOptions, cb: (res: IncomingMessage) => void) => ClientRequest;
  constructor(
    readonly addr: string,
    private readonly token: string | undefined,
    private readonly timeoutMs = DEFAULT_CLIENT_TIMEOUT_MS,
    private readonly opts: ApiClientOptions = {},
  ) {
    // node:https (and TLS with it) only for an https address: loading it costs a CLI start ~10 ms
    const https = addr.startsWith('https:') ? (loadBuiltin('node:https') as typeof import('node:https')) : undefined;
    this.agent = https ? new https.Agent({ keepAlive: true, maxSockets: 256, ca: opts.ca, minVersion: 'TLSv1.2' }) : new HttpAgent({ keepAlive: true, maxSockets: 256 });
    this.request = https ? https.request : httpRequest;
  }

  get<T = unknown>(path: string): Promise<T> {
    return this.call<T>('GET', path);
  }

  put<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.call<T>('PUT', path, body);
  }

  post<T = unknown>(path: string, body: unknown): Promise<T> {
    return this.call<T>('POST', path, body);
  }

  delete<T = unknown>(path: string): Promise<T> {
    return this.call<T>('DELETE', path);
  }

  close(): void {
    this.agent.destroy();
  }

  /** Raw call: status and parsed body, without turning error statuses into exceptions. */
  async raw(method: string, path: string, body?: unknown, token = this.token): Promise<{ status: number; body: unknown }> {
    // A Buffer is sent as it is (a binary body: a sync commit); anything else as JSON.
    const binary = Buffer.isBuffer(body);
    const payload = body === undefined ? undefined : binary ? body : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (payload) (headers['content-type'] = binary ? 'application/octet-stream' : 'application/json'), (headers['content-length'] = payload.length);
    const target = this.addr.startsWith('unix:') ? { socketPath: this.addr.slice(5), path } : urlTarget(this.addr, path);
    return new Promise((resolve, reject) => {
      const req = this.request({ ...target, method, headers, agent: this.agent, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) req.destroy(new Error('response too large'));
          else chunks.push(c);
        });
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown = text;
          try {
            parsed = text ? JSON.parse(text) : undefined;
          } catch {
            // leave as text
          }
          resolve({ status: res.statusCode ?? 0, body: parsed });
        });
        res.on('error', reject);
      });
      req.on('timeout', () => req.destroy(new OmniError('TIMEOUT', `no answer from ${this.addr} within ${this.timeoutMs} ms`)));
      req.on('error', (err) => reject(this.transportError(err)));
      req.end(payload);
    });
  }

  /** GET a streamed text response (logs), passing chunks on as they arrive; no overall timeout. */
  stream(path: string, onChunk: (text: string) => void, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string> = this.token ? { authorization: `Bearer ${this.token}` } : {};
    const target = this.addr.startsWith('unix:') ? { socketPath: this.addr.slice(5), path } : urlTarget(this.addr, path);
    return new Promise((resolve, reject) => {
      const req = this.request({ ...target, method: 'GET', headers, agent: this.agent, signal }, (res) => {
        if (res.statusCode !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let err: { code?: string; message?: string } | undefined;
            try {
              err = JSON.parse(Buffer.concat(chunks).toString('utf8')).error;
            } catch {
              err = undefined;
            }
            reject(new OmniError(err?.code ?? `HTTP_${res.statusCode}`, err?.message ?? `HTTP ${res.statusCode}`, { status: res.statusCode }));
          });
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (c: string) => onChunk(c));
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      req.on('error', (err) => reject(this.transportError(err)));
      req.end();
    });
  }

  /** One line a person can act on: a certificate that does not verify, the wrong scheme, or no answer. */
  private transportError(err: Error): OmniError {
    if (err instanceof OmniError) return err;
    const code = (err as NodeJS.ErrnoException).code ?? '';
    if (TLS_VERIFY_CODES.has(code)) {
      const against = this.opts.ca ? `the cluster CA from ${this.opts.caSource ?? 'the given CA'}` : 'the system CAs (no cluster CA given: set OMNI_CA or --ca to the ca.crt omnid init wrote)';
      // Node's hint about --use-system-ca would mislead: the cluster CA is what is missing.
      const why = err.message.replace(/; if the root CA is installed locally.*$/s, '');
      return new OmniError('TLS_VERIFY_FAILED', `the TLS certificate of ${this.addr} does not verify against ${against}: ${why}`);
    }
    if (this.addr.startsWith('https:') && /wrong version number|packet length too long|ERR_SSL/i.test(`${code} ${err.message}`)) {
      return new OmniError('TLS_HANDSHAKE_FAILED', `no TLS at ${this.addr} (${err.message}); if that API serves plain HTTP, use http://`);
    }
    if (this.addr.startsWith('http:') && (code === 'ECONNRESET' || /socket hang up/.test(err.message))) {
      return new OmniError('UNAVAILABLE', `cannot reach ${this.addr}: ${err.message} (if that API serves HTTPS, use https:// and the cluster CA)`);
    }
    // errno tells a caller that may try another node whether the request surely never left.
    return new OmniError('UNAVAILABLE', `cannot reach ${this.addr}: ${err.message}`, { errno: code });
  }

  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.raw(method, path, body);
    if (res.status >= 200 && res.status < 300) return res.body as T;
    const err = (res.body as { error?: { code?: string; message?: string } })?.error;
    throw new OmniError(err?.code ?? `HTTP_${res.status}`, err?.message ?? `HTTP ${res.status}`, { status: res.status, body: res.body });
  }
}

function urlTarget(addr: string, path: string): { host: string; port: number; path: string } {
  let u: URL;
  try {
    u = new URL(addr);
  } catch {
    throw new OmniError('BAD_ADDR', `not an API address: ${addr} (expected https://HOST:PORT or http://HOST:PORT)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new OmniError('BAD_ADDR', `only https:// and http:// API addresses are supported, got ${u.protocol}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || (u.protocol === 'https:' ? 443 : 80)), path };
}
