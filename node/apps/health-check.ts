// One health probe of a task (the agent schedules them): HTTP GET (2xx/3xx passes), TCP
// connect, or a command that must exit 0 — each bounded by the spec's timeout. A detail reads
// after "health check " (the agent's failure cause): "health check got HTTP 404 on /healthz".
import { request } from 'node:http';
import { connect } from 'node:net';
import { spawn } from 'node:child_process';
import type { HealthCheckSpec } from '../../protocol/apps/spec.js';

export interface ProbeResult {
  ok: boolean;
  detail: string;
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
    const child = spawn(argv[0], argv.slice(1), { env: { ...process.env, ...env }, stdio: 'ignore', timeout: timeoutMs });
    child.once('error', (err) => resolve({ ok: false, detail: `command ${argv[0]} could not run: ${err.message}` }));
    child.once('exit', (code, sig) => resolve({ ok: code === 0, detail: sig ? `command killed by ${sig} (timeout ${timeoutMs} ms?)` : `command exited with code ${code}` }));
  });
}
