// Apps that fail, on a real 3-node loopback cluster with the process driver: a command that
// does not exist ends in the terminal `failed` state (bounded churn) and `omni start` / a new
// version resets it; `omni run` reports a crash loop instead of "healthy" and expands '$PORT';
// a node killed with -9 leaves orphans holding ports and the replacements get other ports; a
// port held by another process is a typed failure shown by inspect and ps; `omni nodes drain`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { promisify } from 'node:util';
import type { LocalCluster } from '../../node/local-cluster.js';
import { apiCall, formCluster, waitFor, httpGet, recordsKeptAsText } from './helpers.js';

const run = promisify(execFile);

// Answers with its task id on the port given as its first argument (or $PORT).
const SERVER = `const port = Number(process.argv[1] ?? process.env.PORT); require('http').createServer((q, s) => s.end(q.url === '/pid' ? String(process.pid) : 'hello from ' + process.env.OMNI_TASK_ID)).listen(port, '127.0.0.1', () => console.log('listening on ' + port))`;

interface TaskView { id: string; node: string; version: number; desired: string; state: string; health: string; restarts: number; hostPorts: number[]; reason: string; cause: string; stable: boolean }
interface Inspect {
  name: string;
  version: number;
  state: string;
  reason: string;
  pending: string;
  failures: number;
  deployment: { status: string; message: string };
  tasks: TaskView[];
  events: { message: string }[];
  endpoints: { task: string; ports: Record<string, number> }[];
}

describe('failing apps on a 3-node cluster (process driver)', () => {
  let c: LocalCluster;
  /** The node the test talks to (never one it killed). */
  let via = 'n1';
  const api = <T>(method: string, path: string, body?: unknown) => apiCall<T>(c, via, method, path, body);
  const inspect = async (name: string) => (await api<Inspect>('GET', `/v1/apps/${name}`)).body;
  const placements = (a: Inspect) => a.events.filter((e) => /^placed /.test(e.message)).length;
  const omni = (...args: string[]) => {
    const env = { ...process.env, OMNI_ADDR: c.nodes.get(via)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    return run('bin/omni', args, { env, timeout: 120_000 }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
  };
  const leader = async () => (await api<{ leader: string }>('GET', '/v1/status')).body.leader;

  beforeAll(async () => {
    c = await formCluster(['n1', 'n2', 'n3']);
  });
  afterAll(async () => c?.destroy());

  it('a command that does not exist: tried on each node, then failed with the reason; omni start and a new version reset it', async () => {
    const spec = { name: 'nocmd', command: ['omni-test-no-such-command', '--serve'], replicas: 1, reschedule: { attempts: 3, delayMs: 300, maxDelayMs: 2000 } };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const failed = await waitFor('nocmd failed', async () => {
      const a = await inspect('nocmd');
      return a.state === 'failed' ? a : undefined;
    }, 60_000, 200);
    expect(failed.reason).toBe('failed: command not found: omni-test-no-such-command on n1, n2, n3');
    expect(placements(failed)).toBe(1 + spec.reschedule.attempts);
    expect(failed.tasks.every((t) => t.desired === 'stop')).toBe(true);
    expect(failed.tasks[0].reason).toMatch(/^failed: command not found: omni-test-no-such-command$/);
    // It stays failed: no more tasks are created.
    await new Promise((r) => setTimeout(r, 3000));
    const later = await inspect('nocmd');
    expect(later.state).toBe('failed');
    expect(placements(later)).toBe(placements(failed));
    const ps = await omni('ps');
    expect(ps.stdout).toMatch(/nocmd .* failed .*failed: command not found: omni-test-no-such-command on n1, n2, n3/);

    // omni start: a fresh streak, tasks are placed again.
    expect((await omni('start', 'nocmd')).code).toBe(0);
    const restarted = await waitFor('placed again', async () => {
      const a = await inspect('nocmd');
      return placements(a) > placements(later) ? a : undefined;
    }, 20_000, 200);
    expect(restarted.state).toBe('running');
    // A new version that works: stable and running, the failures forgotten.
    expect((await api('POST', '/v1/apps', { ...spec, command: [process.execPath, '-e', SERVER], ports: [{ name: 'http', port: 8080 }], update: { minHealthyMs: 500 } })).status).toBe(200);
    const fixed = await waitFor('new version stable', async () => {
      const a = await inspect('nocmd');
      return a.version === 2 && a.tasks.some((t) => t.version === 2 && t.desired === 'run' && t.stable) ? a : undefined;
    }, 60_000, 200);
    expect(fixed.state).toBe('running');
    expect(fixed.failures).toBe(0);
    expect((await api('DELETE', '/v1/apps/nocmd')).status).toBe(200);
  });

  it('omni run reports a crash loop with the exit code and last output, and exits 1', async () => {
    const r = await omni('run', '--name', 'crashy', '--port', '8080', '--', 'sh', '-c', 'echo "cannot serve on $PORT" >&2; exit 3');
    expect(r.code).toBe(1);
    expect(r.stdout).not.toMatch(/is healthy/);
    expect(r.stdout).toMatch(/^crashy: crash loop: task crashy-[0-9a-f]+ on n\d restarted \d+ times \(exited with code 3: cannot serve on \d+\)$/m);
    expect(r.stdout).toMatch(/last output:\n {2}cannot serve on \d+\n/);
    await omni('rm', 'crashy');
  });

  it("omni run expands '$PORT' in a command's arguments (no shell needed)", async () => {
    const r = await omni('run', '--name', 'argport', '--port', '8080', '--health-http', '/', '--', process.execPath, '-e', SERVER, '$PORT');
    expect(r.stdout).toMatch(/argport is healthy \(version 1\)/);
    expect(r.code).toBe(0);
    const a = await inspect('argport');
    expect((await httpGet(a.endpoints[0].ports.http)).body).toBe(`hello from ${a.endpoints[0].task}`);
    await omni('rm', 'argport');
  });

  it('omni run refuses an existing name with CONFLICT (409); --replace rolls the new spec out', async () => {
    const first = await omni('run', '--name', 'once', '--port', '8080', '--health-http', '/', '--', process.execPath, '-e', SERVER, '$PORT');
    expect(first.code).toBe(0);
    const again = await omni('run', '--name', 'once', '--port', '8080', '--', 'sleep', '1000');
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/an app named once already exists: use omni deploy to change it, omni run --replace/);
    expect((await inspect('once')).version).toBe(1); // nothing was rolled out
    expect((await api('POST', '/v1/apps?create=true', { name: 'once', command: ['sleep', '1000'] })).status).toBe(409);
    const replaced = await omni('run', '--name', 'once', '--replace', '--detach', '--port', '8080', '--health-http', '/', '--', process.execPath, '-e', SERVER, '$PORT', 'v2');
    expect(replaced.code).toBe(0);
    expect((await inspect('once')).version).toBe(2);
    await omni('rm', 'once');
  });

  it('a port held by another process on the host: a typed failure in inspect and ps, and the port is not handed out again', async () => {
    const holder: Server = createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', r));
    const port = (holder.address() as { port: number }).port;
    try {
      const spec = { name: 'fixedport', command: [process.execPath, '-e', SERVER], ports: [{ name: 'http', port: 8080, hostPort: port }], replicas: 1 };
      expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
      const a = await waitFor('typed port failure', async () => {
        const x = await inspect('fixedport');
        return x.tasks.some((t) => t.desired === 'stop') && x.pending ? x : undefined;
      }, 30_000, 200);
      expect(a.tasks[0].reason).toBe(`failed: port ${port} is already in use on this host`);
      expect(a.tasks[0].cause).toBe(`port ${port} is already in use on this host`);
      expect(a.pending).toMatch(/have the host port in use/);
      expect(placements(a)).toBe(1); // no retry loop on a port known to be taken
      expect(a.failures).toBe(0); // not the app's fault
      expect((await omni('inspect', 'fixedport')).stdout).toMatch(new RegExp(`port ${port} is already in use on this host`));
      expect((await omni('ps')).stdout).toMatch(/fixedport .*have the host port in use/);
      await api('DELETE', '/v1/apps/fixedport');
    } finally {
      holder.close();
    }
  });

  it('after kill -9 of a node its orphans keep their ports: the replacement gets another port and never restarts', async () => {
    const lead = await leader();
    const spec = { name: 'orphan', command: [process.execPath, '-e', SERVER], ports: [{ name: 'http', port: 8080 }], replicas: 1, constraints: [`node.name!=${lead}`], restart: { delayMs: 200 }, update: { minHealthyMs: 500 } };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const first = await waitFor('orphan stable', async () => {
      const a = await inspect('orphan');
      const live = a.tasks.find((t) => t.desired === 'run' && t.stable);
      return a.endpoints.length === 1 && live ? { ...a, live } : undefined;
    }, 60_000, 200);
    // No other task of the app is ever given the orphan's port (other processes on this machine
    // may hold other ports: those are probed and skipped, which is fine here).
    const givenOldPort = (a: Inspect) => a.tasks.filter((t) => t.id !== first.live.id && t.hostPorts[0] === first.live.hostPorts[0]);
    const victim = first.live.node;
    via = lead;
    const oldPort = first.endpoints[0].ports.http;
    const oldPid = Number((await httpGet(oldPort, '/pid')).body);
    await c.kill(victim, 'SIGKILL');
    const moved = await waitFor('replacement stable on the other node', async () => {
      const a = await inspect('orphan');
      const live = a.tasks.find((t) => t.desired === 'run' && t.node !== victim);
      return live && live.stable ? { a, live } : undefined;
    }, 60_000, 300);
    expect(moved.live.hostPorts[0]).not.toBe(oldPort);
    expect(moved.live.restarts).toBe(0);
    expect(givenOldPort(moved.a)).toEqual([]);
    expect((await httpGet(moved.live.hostPorts[0])).body).toBe(`hello from ${moved.live.id}`);
    // Placements in later rounds must not get the orphan's port either (the lowest free one, were it released).
    await api('POST', '/v1/apps/orphan/scale', { replicas: 2 });
    const scaled = await waitFor('2 stable', async () => {
      const a = await inspect('orphan');
      const live = a.tasks.filter((t) => t.desired === 'run' && t.stable);
      return live.length === 2 ? { a, live } : undefined;
    }, 60_000, 300);
    expect(scaled.live.map((t) => t.hostPorts[0])).not.toContain(oldPort);
    expect(scaled.live.every((t) => t.restarts === 0)).toBe(true);
    expect(givenOldPort(scaled.a)).toEqual([]);
    // The orphan still runs on the dead node's host, on its port.
    expect(Number((await httpGet(oldPort, '/pid')).body)).toBe(oldPid);
    // The node comes back: its agent stops the orphan (its task was stopped while it was away).
    await c.restart(victim);
    await waitFor('orphan stopped', async () => {
      const a = await inspect('orphan');
      return a.tasks.find((t) => t.id === first.live.id)?.state === 'exited';
    }, 40_000, 300);
    await expect(httpGet(oldPort, '/pid')).rejects.toThrow();
    await api('DELETE', '/v1/apps/orphan');
  });

  it('omni nodes drain moves the tasks off a node start-first and leaves it ineligible; eligible undoes it', async () => {
    // Kept off n1, the two replicas spread over n2 and n3: n3's must move to n2.
    const spec = { name: 'drainme', command: [process.execPath, '-e', SERVER], ports: [{ name: 'http', port: 8080 }], replicas: 2, constraints: ['node.name!=n1'], update: { minHealthyMs: 500 } };
    expect((await api('POST', '/v1/apps', spec)).status).toBe(201);
    const before = await waitFor('2 stable', async () => {
      const a = await inspect('drainme');
      return a.tasks.filter((t) => t.desired === 'run' && t.stable).length === 2 ? a : undefined;
    }, 40_000, 200);
    const onN3 = before.tasks.find((t) => t.desired === 'run' && t.node === 'n3')!;
    expect(onN3).toBeDefined();
    const r = await omni('nodes', 'drain', 'n3', '--timeout', '60');
    expect(r.stdout).toMatch(/n3: drained/);
    expect(r.code).toBe(0);
    const a = await inspect('drainme');
    const live = a.tasks.filter((t) => t.desired === 'run');
    expect(live).toHaveLength(2);
    expect(live.every((t) => t.node === 'n2' && t.state === 'running')).toBe(true);
    expect(a.tasks.find((t) => t.id === onN3.id)?.reason).toBe('node n3 is draining');
    expect((await omni('nodes')).stdout).toMatch(/n3 .* ineligible /);
    // Nothing new lands on n3 while it is ineligible...
    await api('POST', '/v1/apps/drainme/scale', { replicas: 3 });
    await waitFor('3 replicas', async () => (await inspect('drainme')).tasks.filter((t) => t.desired === 'run').length === 3, 20_000, 200);
    expect((await inspect('drainme')).tasks.filter((t) => t.desired === 'run').every((t) => t.node === 'n2')).toBe(true);
    // ...and once eligible again, it takes new ones.
    expect((await omni('nodes', 'eligible', 'n3')).stdout).toMatch(/n3: eligible/);
    await api('POST', '/v1/apps/drainme/scale', { replicas: 4 });
    await waitFor('placed on n3 again', async () => (await inspect('drainme')).tasks.some((t) => t.desired === 'run' && t.node === 'n3'), 20_000, 200);
    await api('DELETE', '/v1/apps/drainme');
  });

  it('keeps every record Omni wrote in protobuf on every node (none kept as JSON text)', async () => {
    const counts = await recordsKeptAsText(c);
    expect(Object.keys(counts).length).toBeGreaterThan(0);
    for (const n of Object.values(counts)) expect(n).toBe(0);
  });
});
