// A lab's kernel activity (issue 16: a lab is BUSY while a kernel computes). The lab's node asks
// its own notebook server for its kernels — Jupyter's REST `GET /api/kernels`, authorised with the
// lab's token in the Authorization header (never in the URL, so it is not in Jupyter's request
// log) — and counts those whose execution_state is "busy". Bounded: a timeout, and an answer of
// at most MAX_ANSWER_BYTES; anything unexpected is an error the agent ignores (activity unknown).
import { request } from 'node:http';

export interface KernelActivity {
  total: number;
  busy: number;
}

const MAX_ANSWER_BYTES = 256 * 1024;

/** Counts the notebook server's kernels and the busy ones; rejects on any failure. */
export function labKernels(port: number, token: string, timeoutMs: number): Promise<KernelActivity> {
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
          resolve(countKernels(JSON.parse(Buffer.concat(parts).toString('utf8'))));
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

/** Jupyter's kernel list → counts; throws on a shape that is not a list of kernel models. */
export function countKernels(body: unknown): KernelActivity {
  if (!Array.isArray(body)) throw new Error('GET /api/kernels: expected a list');
  let busy = 0;
  for (const k of body) {
    if (k === null || typeof k !== 'object') throw new Error('GET /api/kernels: expected kernel objects');
    if ((k as { execution_state?: unknown }).execution_state === 'busy') busy++;
  }
  return { total: body.length, busy };
}
