// HTTP client for the omni API (used by the omni CLI, omnid leave, tests and benchmarks).
// Talks TCP (http://host:port) or the node-local control socket (unix:/path/to/api.sock).
import { request, Agent } from 'node:http';
import { OmniError } from './errors.js';

const MAX_RESPONSE_BYTES = 64 * 1024 * 1024;
export const DEFAULT_CLIENT_TIMEOUT_MS = 30_000;

export class ApiClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 256 });
  constructor(
    readonly addr: string,
    private readonly token: string | undefined,
    private readonly timeoutMs = DEFAULT_CLIENT_TIMEOUT_MS,
  ) {}

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
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { accept: 'application/json' };
    if (token) headers.authorization = `Bearer ${token}`;
    if (payload) (headers['content-type'] = 'application/json'), (headers['content-length'] = payload.length);
    const target = this.addr.startsWith('unix:') ? { socketPath: this.addr.slice(5), path } : urlTarget(this.addr, path);
    return new Promise((resolve, reject) => {
      const req = request({ ...target, method, headers, agent: this.agent, timeout: this.timeoutMs }, (res) => {
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
      req.on('error', (err) => reject(err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `cannot reach ${this.addr}: ${err.message}`)));
      req.end(payload);
    });
  }

  /** GET a streamed text response (logs), passing chunks on as they arrive; no overall timeout. */
  stream(path: string, onChunk: (text: string) => void, signal?: AbortSignal): Promise<void> {
    const headers: Record<string, string> = this.token ? { authorization: `Bearer ${this.token}` } : {};
    const target = this.addr.startsWith('unix:') ? { socketPath: this.addr.slice(5), path } : urlTarget(this.addr, path);
    return new Promise((resolve, reject) => {
      const req = request({ ...target, method: 'GET', headers, agent: this.agent, signal }, (res) => {
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
            reject(new OmniError(err?.code ?? `HTTP_${res.statusCode}`, err?.message ?? `HTTP ${res.statusCode}`));
          });
          return;
        }
        res.setEncoding('utf8');
        res.on('data', (c: string) => onChunk(c));
        res.on('end', () => resolve());
        res.on('error', reject);
      });
      req.on('error', (err) => reject(err instanceof OmniError ? err : new OmniError('UNAVAILABLE', `cannot reach ${this.addr}: ${err.message}`)));
      req.end();
    });
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
    throw new OmniError('BAD_ADDR', `not an API address: ${addr} (expected http://HOST:PORT)`);
  }
  if (u.protocol !== 'http:') throw new OmniError('BAD_ADDR', `only http:// API addresses are supported, got ${u.protocol}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: Number(u.port || 80), path };
}
