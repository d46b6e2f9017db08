// One health probe of a task (the agent schedules them): HTTP GET (2xx/3xx passes), TCP
// connect, or a command that must exit 0 — each bounded by the spec's timeout. A detail reads
// after "health check " (the agent's failure cause): "health check got HTTP 404 on /healthz".
import { request } from 'node:http';
import { connect } from 'node:net';
import { spawn } from 'node:child_process';
import type { HealthCheckSpec } from '../../protocol/apps/spec.js';
import { EXEC_OUTPUT_MAX_BYTES, type TaskDriver } from './drivers/types.js';

export interface ProbeResult {
  ok: boolean;
  detail: string;
  /** A command check's output (stdout and stderr, the last EXEC_OUTPUT_MAX_BYTES). */
  output?: string;
}

/** A command check run inside the task (docker exec): exit 0 passes, as Docker's HEALTHCHECK. */
export async function execProbe(driver: TaskDriver, taskId: string, check: HealthCheckSpec): Promise<ProbeResult> {
  try {
    const r = await driver.exec!(taskId, check.command, check.timeoutMs);
    if (r.exitCode === null) return { ok: false, detail: `command timed out after ${check.timeoutMs} ms (in the container)`, output: r.output };
    return { ok: r.exitCode === 0, detail: `command exited with code ${r.exitCode} (in the container)`, output: r.output };
  } catch (err) {
    return { ok: false, detail: `command could not run in the container: ${(err as Error).message}` };
  }
}

export function probe(check: HealthCheckSpec, port: number | undefined, env: Record<string, string>): Promise<ProbeResult> {
  switch (check.type) {
    case 'http':
      return httpProbe(port, check.path || '/', check.timeoutMs);
    case 'tcp':
      return tcpProbe(port, check.timeoutMs);
    case 'command':
      return commandProbe(check.command, env, check.timeoutMs);
  }
}

function httpProbe(port: number | undefined, path: string, timeoutMs: number): Promise<ProbeResult> {
  if (!port) return Promise.resolve({ ok: false, detail: 'has no port to probe' });
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', timeout: timeoutMs }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      const ok = code >= 200 && code < 400;
      resolve({ ok, detail: ok ? `HTTP ${code} on ${path}` : `got HTTP ${code} on ${path}` });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => resolve({ ok: false, detail: `GET ${path} failed: ${err.message}` }));
    req.end();
  });
}

function tcpProbe(port: number | undefined, timeoutMs: number): Promise<ProbeResult> {
  if (!port) return Promise.resolve({ ok: false, detail: 'has no port to probe' });
  return new Promise((resolve) => {
    const sock = connect({ host: '127.0.0.1', port, timeout: timeoutMs });
    sock.once('connect', () => (sock.destroy(), resolve({ ok: true, detail: `port ${port} accepts connections` })));
    sock.once('timeout', () => (sock.destroy(), resolve({ ok: false, detail: `got no answer on port ${port} within ${timeoutMs} ms` })));
    sock.once('error', (err) => resolve({ ok: false, detail: `could not connect to port ${port}: ${err.message}` }));
  });
}

function commandProbe(argv: string[], env: Record<string, string>, timeoutMs: number): Promise<ProbeResult> {
  if (argv.length === 0) return Promise.resolve({ ok: false, detail: 'has no command' });
  return new Promise((resolve) => {
    const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let out = Buffer.alloc(0);
    const keep = (c: Buffer) => {
      out = Buffer.concat([out, c]);
      if (out.length > EXEC_OUTPUT_MAX_BYTES) out = out.subarray(out.length - EXEC_OUTPUT_MAX_BYTES);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.once('error', (err) => resolve({ ok: false, detail: `command ${argv[0]} could not run: ${err.message}` }));
    child.once('exit', (code, sig) => {
      const done = () => resolve({ ok: code === 0, detail: sig ? `command killed by ${sig} (timeout ${timeoutMs} ms?)` : `command exited with code ${code}`, output: out.toString('utf8') });
      // the output's end may still be in the pipes; a child the command left behind may hold them open
      const t = setTimeout(done, 100);
      child.once('close', () => (clearTimeout(t), done()));
    });
  });
}
