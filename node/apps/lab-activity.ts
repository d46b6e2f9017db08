// A lab's kernel activity (issue 16: a lab is BUSY while a kernel computes). The lab's node asks
// its own notebook server for its kernels — Jupyter's REST `GET /api/kernels`, authorised with the
// lab's token in the Authorization header (never in the URL, so it is not in Jupyter's request
// log) — and counts those whose execution_state is "busy". Bounded: a timeout, and an answer of
// at most MAX_ANSWER_BYTES; anything unexpected is an error the agent ignores (activity unknown).
//
// The REST execution_state alone is not enough: Debian bookworm's notebook 6.4 (with its
// jupyter_client 7 / pyzmq 24) sometimes never receives anything on the IOPub subscription behind
// it, and the kernel then reads "starting" forever, even while it computes (seen in about one
// kernel start in eight on a quiet host, more under load). So LabKernelWatch also follows each
// kernel's IOPub `status` messages itself, through the notebook server's kernel channels websocket
// (as a browser does; the server's "nudge" makes that subscription deliver), and a kernel is busy
// when either source says so. A watch that has heard nothing for WATCH_SILENT_MS is reopened.
// Known gap: a kernel that starts computing before its watch opens (the node lists kernels with
// each health probe, every 2 s by default) is seen only by the REST state until that cell ends.
import { request } from 'node:http';

export interface KernelActivity {
  total: number;
  busy: number;
}

/** One kernel as the REST list gives it. */
export interface KernelModel {
  id: string;
  state: string;
}

const MAX_ANSWER_BYTES = 256 * 1024;
/** A status message is small; anything larger (cell output) is not parsed. */
const MAX_STATUS_MESSAGE_CHARS = 64 * 1024;
/** Kernels followed on one notebook server (beyond that, only the REST state counts). */
const MAX_WATCHED_KERNELS = 64;
/** The server answers a new channels connection with a kernel_info exchange: silence means a deaf subscription. */
const WATCH_SILENT_MS = 15_000;
const KERNEL_ID = /^[A-Za-z0-9-]{1,64}$/;

/** The notebook server's kernels (`GET /api/kernels`); rejects on any failure. */
export function listKernels(port: number, token: string, timeoutMs: number): Promise<KernelModel[]> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path: '/api/kernels', method: 'GET', timeout: timeoutMs, headers: { authorization: `token ${token}`, accept: 'application/json' } }, (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        reject(new Error(`GET /api/kernels answered HTTP ${res.statusCode}`));
        return;
      }
      const parts: Buffer[] = [];
      let size = 0;
      res.on('data', (b: Buffer) => {
        size += b.length;
        if (size > MAX_ANSWER_BYTES) req.destroy(new Error(`GET /api/kernels answered more than ${MAX_ANSWER_BYTES} bytes`));
        else parts.push(b);
      });
      res.on('end', () => {
        try {
          resolve(parseKernels(JSON.parse(Buffer.concat(parts).toString('utf8'))));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Jupyter's kernel list → kernel models; throws on a shape that is not a list of kernel models. */
export function parseKernels(body: unknown): KernelModel[] {
  if (!Array.isArray(body)) throw new Error('GET /api/kernels: expected a list');
  return body.map((k) => {
    if (k === null || typeof k !== 'object') throw new Error('GET /api/kernels: expected kernel objects');
    const { id, execution_state: state } = k as { id?: unknown; execution_state?: unknown };
    return { id: typeof id === 'string' ? id : '', state: typeof state === 'string' ? state : '' };
  });
}

/** An IOPub status message: the kernel's state and the request it is about. */
export interface KernelStatus {
  state: string;
  parentId: string;
  parentType: string;
}

/** The IOPub status message on a kernel channels websocket, if `data` is one (bounded size). */
export function statusOf(data: unknown): KernelStatus | undefined {
  if (typeof data !== 'string' || data.length > MAX_STATUS_MESSAGE_CHARS || !data.includes('"status"')) return undefined;
  try {
    const m = JSON.parse(data) as { channel?: unknown; msg_type?: unknown; header?: { msg_type?: unknown }; parent_header?: { msg_id?: unknown; msg_type?: unknown }; content?: { execution_state?: unknown } };
    const type = m.msg_type ?? m.header?.msg_type;
    if (m.channel !== 'iopub' || type !== 'status' || typeof m.content?.execution_state !== 'string') return undefined;
    const parentId = m.parent_header?.msg_id;
    const parentType = m.parent_header?.msg_type;
    return { state: m.content.execution_state, parentId: typeof parentId === 'string' ? parentId : '', parentType: typeof parentType === 'string' ? parentType : '' };
  } catch {
    return undefined;
  }
}

interface Watch {
  ws: WebSocket;
  /** the execute requests the kernel said it is busy with and not yet idle after */
  executing: Set<string>;
  openedAtMs: number;
  heardAtMs: number;
}

/** Execute requests followed per kernel (a cap: the set is emptied when a status comes for each). */
const MAX_EXECUTING = 1000;

/**
 * Follows one notebook server's kernels: `refresh()` lists them (REST), opens a channels websocket
 * for each new one (at most MAX_WATCHED_KERNELS), closes those of kernels that are gone, and
 * counts a kernel busy when its REST state says "busy" or it is running an execute request (a
 * `busy` status about an execute_request, and no `idle` about it yet; the statuses ipykernel
 * publishes about control-channel requests — kernel_info, interrupts — do not count). A kernel
 * that was already computing when its watch opened is seen only through REST. `close()` ends
 * every watch (the task stopped).
 */
export class LabKernelWatch {
  private readonly watches = new Map<string, Watch>();
  private closed = false;

  constructor(
    private readonly port: number,
    private readonly token: string,
    private readonly now: () => number = Date.now,
  ) {}

  async refresh(timeoutMs: number): Promise<KernelActivity> {
    const kernels = await listKernels(this.port, this.token, timeoutMs);
    const ids = new Set(kernels.map((k) => k.id));
    for (const [id, w] of this.watches) {
      const silent = w.heardAtMs === 0 && this.now() - w.openedAtMs > WATCH_SILENT_MS;
      if (!ids.has(id) || silent) this.drop(id, w);
    }
    for (const k of kernels) if (!this.closed && KERNEL_ID.test(k.id) && !this.watches.has(k.id) && this.watches.size < MAX_WATCHED_KERNELS) this.watch(k.id);
    return { total: kernels.length, busy: kernels.filter((k) => k.state === 'busy' || (this.watches.get(k.id)?.executing.size ?? 0) > 0).length };
  }

  /** The kernels followed now (for tests and diagnostics). */
  watching(): string[] {
    return [...this.watches.keys()];
  }

  close(): void {
    this.closed = true;
    for (const [id, w] of this.watches) this.drop(id, w);
  }

  private watch(id: string): void {
    // The token goes in a header (undici's WebSocket takes headers), not in the URL.
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/api/kernels/${id}/channels?session_id=omni-activity-${Math.random().toString(36).slice(2, 10)}`, { headers: { authorization: `token ${this.token}` } });
    const w: Watch = { ws, executing: new Set(), openedAtMs: this.now(), heardAtMs: 0 };
    ws.onmessage = (e) => {
      w.heardAtMs = this.now();
      const st = statusOf(e.data);
      if (st === undefined || st.parentType !== 'execute_request' || st.parentId === '') return;
      if (st.state === 'busy' && w.executing.size < MAX_EXECUTING) w.executing.add(st.parentId);
      else if (st.state === 'idle') w.executing.delete(st.parentId);
    };
    const gone = () => {
      if (this.watches.get(id) === w) this.watches.delete(id);
    };
    ws.onclose = gone;
    ws.onerror = gone;
    this.watches.set(id, w);
  }

  private drop(id: string, w: Watch): void {
    this.watches.delete(id);
    w.ws.onmessage = null;
    w.ws.onclose = null;
    w.ws.onerror = null;
    try {
      w.ws.close();
    } catch {
      // closing a socket that never opened: nothing to do
    }
  }
}
