// The CLI's client: the address it was given first, then the other API addresses of the
// cluster it knows (kept in the config file), tried in turn when a node does not answer.
// Only failures that prove the request never reached a node move on for writes (connection
// refused, no route); reads also move on after a reset or a timeout.
import { ApiClient, type ApiClientOptions } from '../../node/api/client.js';
import { OmniError } from '../../node/errors.js';

export interface ApiTarget {
  addr: string;
  /** Where the address came from, for the error when nothing answers: "--addr", "$OMNI_ADDR", "config file …". */
  source: string;
}

/** Connection errors after which the request surely never reached the node. */
const NEVER_SENT = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL', 'ENOENT']);
/** For reads (idempotent): also a connection reset or a node that stopped answering. */
const READ_RETRYABLE_CODES = new Set(['TIMEOUT']);

export function failoverWorthy(err: unknown, method: string): boolean {
  if (!(err instanceof OmniError)) return false;
  if (err.code === 'UNAVAILABLE' && NEVER_SENT.has(String(err.detail.errno ?? ''))) return true;
  if (method !== 'GET') return false;
  return err.code === 'UNAVAILABLE' || READ_RETRYABLE_CODES.has(err.code);
}

export class FailoverClient extends ApiClient {
  private readonly clients: ApiClient[];
  /** The client that answered last (later calls start there). */
  private current = 0;
  /** Run once, after the first call that got an answer (the CLI refreshes its member list). */
  afterFirstAnswer: (() => Promise<void>) | undefined;

  constructor(
    private readonly targets: ApiTarget[],
    token: string | undefined,
    opts: ApiClientOptions,
    timeoutMs?: number,
  ) {
    super(targets[0].addr, token, timeoutMs, opts);
    this.clients = targets.map((t) => new ApiClient(t.addr, token, timeoutMs, opts));
  }

  /** The address that answered last. */
  get answeringAddr(): string {
    return this.targets[this.current].addr;
  }

  override raw(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: unknown }> {
    return this.attempt((err) => failoverWorthy(err, method), (c) => c.raw(method, path, body, token));
  }

  /** A stream moves on only before its first chunk (a log stream is never replayed from another node). */
  override stream(path: string, onChunk: (text: string) => void, signal?: AbortSignal): Promise<void> {
    let started = false;
    const chunk = (t: string) => {
      started = true;
      onChunk(t);
    };
    return this.attempt((err) => !started && failoverWorthy(err, 'GET'), (c) => c.stream(path, chunk, signal));
  }

  override close(): void {
    for (const c of this.clients) c.close();
    super.close();
  }

  private async attempt<T>(mayMoveOn: (err: unknown) => boolean, call: (c: ApiClient) => Promise<T>): Promise<T> {
    const failures: string[] = [];
    for (let i = 0; i < this.clients.length; i++) {
      const at = (this.current + i) % this.clients.length;
      const t = this.targets[at];
      try {
        const r = await call(this.clients[at]);
        this.current = at;
        const hook = this.afterFirstAnswer;
        this.afterFirstAnswer = undefined;
        if (hook) await hook().catch(() => undefined); // best effort: never fails the command
        return r;
      } catch (err) {
        if (!mayMoveOn(err)) throw err;
        failures.push(`${t.addr} (from ${t.source}): ${(err as Error).message.replace(/^cannot reach \S+: /, '')}`);
      }
    }
    throw new OmniError('UNAVAILABLE', `no node answered; tried ${failures.join('; ')}`, { tried: failures.length });
  }
}
