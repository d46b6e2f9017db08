// Why tasks fail, in words (protocol/apps/failure.ts), $VAR expansion of process argv
// (protocol/apps/expand.ts), and how `omni run`/`deploy` judge a rollout (cli/omni/app-io.ts).
import { describe, expect, it } from 'vitest';
import { classifyExit, classifyStartError, summarizeFailures } from '../../protocol/apps/failure.js';
import { expandArg, expandArgv } from '../../protocol/apps/expand.js';
import { assessDeploy, CRASH_LOOP_RESTARTS, type InspectView } from '../../cli/omni/app-io.js';

describe('failure causes', () => {
  it('a command that does not exist: from the driver start error and from the supervisor line in the log', () => {
    const err = 'task web-1a2b3c: cannot start "redis-srv": spawn redis-srv ENOENT';
    expect(classifyStartError(err)).toEqual({ cause: 'command not found: redis-srv', permanent: true, portsInUse: [] });
    // the process driver's own PATH lookup (its shell wrapper never runs a missing command)
    expect(classifyStartError('task web-1a2b3c: cannot start "redis-srv": not found in PATH')).toEqual({ cause: 'command not found: redis-srv', permanent: true, portsInUse: [] });
    expect(classifyStartError('task web-1a2b3c: cannot start "/opt/x/run": no such executable file')).toMatchObject({ cause: 'command not found: /opt/x/run', permanent: true });
    const fromLog = classifyExit({ exitCode: 127, logTail: ['omni: cannot start "redis-srv": spawn redis-srv ENOENT'], hostPorts: [] });
    expect(fromLog).toMatchObject({ cause: 'command not found: redis-srv', permanent: true });
    expect(classifyStartError('task x: cannot start "./run.sh": spawn ./run.sh EACCES')).toMatchObject({ cause: 'permission denied: ./run.sh is not executable', permanent: true });
  });

  it('a shell that cannot find the command', () => {
    expect(classifyExit({ exitCode: 127, logTail: ['sh: 1: redis-server: not found'], hostPorts: [] })).toMatchObject({ cause: 'command not found: redis-server', permanent: true });
    expect(classifyExit({ exitCode: 127, logTail: ['bash: line 1: foo: command not found'], hostPorts: [] })).toMatchObject({ cause: 'command not found: foo', permanent: true });
    expect(classifyExit({ exitCode: 127, logTail: [], hostPorts: [] })).toMatchObject({ cause: 'command not found (exit code 127)', permanent: true });
  });

  it('a port another process holds: names the port, and reports it so the scheduler avoids it', () => {
    const node = classifyExit({ exitCode: 1, logTail: ['starting', 'Error: listen EADDRINUSE: address already in use 127.0.0.1:20001', '    at Server.setupListenHandle'], hostPorts: [20001, 20002] });
    expect(node).toEqual({ cause: 'port 20001 is already in use on this host', permanent: true, portsInUse: [20001] });
    const redis = classifyExit({ exitCode: 1, logTail: ['# Warning: Could not create server TCP listening socket *:6379: bind: Address already in use'], hostPorts: [6379] });
    expect(redis.portsInUse).toEqual([6379]);
    const docker = classifyExit({ exitCode: 128, reason: 'driver failed programming external connectivity on endpoint omni-web-1: Bind for 0.0.0.0:20007 failed: port is already allocated', logTail: [], hostPorts: [20007] });
    expect(docker).toMatchObject({ cause: 'port 20007 is already in use on this host', portsInUse: [20007] });
    const unnamed = classifyExit({ exitCode: 1, logTail: ['OSError: [Errno 98] Address already in use'], hostPorts: [20005] });
    expect(unnamed).toMatchObject({ cause: 'port 20005 is already in use on this host', portsInUse: [20005] });
    expect(classifyStartError('address already in use: 20003', [20003])).toMatchObject({ cause: 'port 20003 is already in use on this host', portsInUse: [20003] });
    // A clean exit is not a bind failure, whatever it printed earlier.
    expect(classifyExit({ exitCode: 0, logTail: ['retrying after EADDRINUSE'], hostPorts: [1] }).portsInUse).toEqual([]);
  });

  it('out of memory, signals, and a plain exit with its last output line', () => {
    expect(classifyExit({ exitCode: 137, reason: 'OOMKilled', logTail: [], hostPorts: [] })).toMatchObject({ cause: 'out of memory (OOMKilled)', permanent: false });
    expect(classifyExit({ exitCode: 134, logTail: ['FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory'], hostPorts: [] }).cause).toMatch(/^out of memory \(FATAL ERROR/);
    expect(classifyExit({ exitCode: null, reason: 'signal SIGKILL', logTail: [], hostPorts: [] }).cause).toBe('killed by SIGKILL');
    expect(classifyExit({ exitCode: 1, logTail: ['*** FATAL CONFIG FILE ERROR ***', "Bad directive or wrong number of arguments", ''], hostPorts: [] })).toEqual({ cause: 'exited with code 1: Bad directive or wrong number of arguments', permanent: false, portsInUse: [] });
    expect(classifyExit({ exitCode: 0, logTail: ['done'], hostPorts: [] }).cause).toBe('exited with code 0');
  });

  it('summarizes failures per cause with the nodes they happened on', () => {
    const s = summarizeFailures([
      { node: 'n2', cause: 'command not found: foo' },
      { node: 'n1', cause: 'command not found: foo' },
      { node: 'n4', cause: 'exited with code 1' },
      { node: 'n3', cause: 'command not found: foo' },
      { node: 'n1', cause: 'command not found: foo' },
    ]);
    expect(s).toBe('command not found: foo on n1, n2, n3; exited with code 1 on n4');
  });
});

describe('argv expansion of the task env', () => {
  const env = { PORT: '20001', OMNI_PORT_HTTP: '20001', OMNI_PORT_ADMIN: '20002', MODE: 'prod' };

  it('expands $NAME and ${NAME} of the task env only; $$ is a literal $', () => {
    expect(expandArgv(['redis-server', '--port', '$PORT'], env)).toEqual(['redis-server', '--port', '20001']);
    expect(expandArg('--listen=127.0.0.1:${OMNI_PORT_ADMIN}/x', env)).toBe('--listen=127.0.0.1:20002/x');
    expect(expandArg('$MODE-$MODE', env)).toBe('prod-prod');
    expect(expandArg('cost: $$5 and $$PORT', env)).toBe('cost: $5 and $PORT');
    expect(expandArg('$NOT_SET ${NOT_SET} $1 $ $-', env)).toBe('$NOT_SET ${NOT_SET} $1 $ $-');
    expect(expandArg('$PORTX', env)).toBe('$PORTX'); // the longest name is the reference
    expect(expandArg('${PORT}X', env)).toBe('20001X');
    expect(expandArg('$__proto__ $constructor', env)).toBe('$__proto__ $constructor');
  });
});

describe('omni run / deploy: when a rollout is done', () => {
  const view = (over: Partial<InspectView> = {}, tasks: Partial<InspectView['tasks'][number]>[] = []): InspectView => ({
    state: 'running',
    replicas: 1,
    healthy: 0,
    version: 1,
    pending: '',
    deployment: { status: 'stable', message: '' },
    tasks: tasks.map((t, i) => ({ id: `t${i}`, version: 1, node: 'n1', desired: 'run', state: 'running', health: 'none', reason: '', restarts: 0, exitCode: null, ...t })),
    ...over,
  });

  it('running is not enough: a replica must be stable (update.minHealthyMs without a restart)', () => {
    const b = new Map<string, number>();
    expect(assessDeploy(view({}, [{ health: 'none' }]), 1, b)).toMatchObject({ done: false, progress: '1/1 healthy (0 stable)' });
    expect(assessDeploy(view({}, [{ health: 'healthy', stable: true }]), 1, b)).toMatchObject({ done: true, ok: true });
  });

  it('a crash loop is a failure with the cause and exit code, not "healthy"', () => {
    const b = new Map<string, number>();
    // redis-server --port '$PORT' before expansion: exits 1, restarted every second, "running" in between
    expect(assessDeploy(view({}, [{ restarts: 0 }]), 1, b).done).toBe(false);
    expect(assessDeploy(view({}, [{ restarts: CRASH_LOOP_RESTARTS - 1 }]), 1, b).done).toBe(false);
    const lastOutput = ['*** FATAL CONFIG FILE ERROR ***', 'Bad directive or wrong number of arguments'];
    const v = assessDeploy(view({}, [{ restarts: CRASH_LOOP_RESTARTS, state: 'exited', exitCode: 1, cause: 'exited with code 1: Bad directive or wrong number of arguments', lastOutput }]), 1, b);
    expect(v).toEqual({ done: true, ok: false, task: 't0', logs: lastOutput, message: `crash loop: task t0 on n1 restarted ${CRASH_LOOP_RESTARTS} times (exited with code 1: Bad directive or wrong number of arguments)` });
    const bare = assessDeploy(view({}, [{ id: 'x', restarts: CRASH_LOOP_RESTARTS, state: 'exited', exitCode: 2, reason: 'restarting in 1000 ms' }]), 1, new Map([['x', 0]]));
    expect(bare).toMatchObject({ message: `crash loop: task x on n1 restarted ${CRASH_LOOP_RESTARTS} times (restarting in 1000 ms, last exit code 2)` });
  });

  it('counts restarts from when the task was first seen', () => {
    const b = new Map<string, number>();
    expect(assessDeploy(view({}, [{ restarts: 7 }]), 1, b).done).toBe(false);
    expect(assessDeploy(view({}, [{ restarts: 7 + CRASH_LOOP_RESTARTS }]), 1, b)).toMatchObject({ done: true, ok: false });
  });

  it('a failed app, a failed deployment and a rollback end the wait', () => {
    expect(assessDeploy(view({ state: 'failed', reason: 'failed: command not found: foo on n1, n2, n3' }, [{ state: 'failed', desired: 'stop' }]), 1, new Map())).toMatchObject({ done: true, ok: false, message: 'failed: command not found: foo on n1, n2, n3', task: 't0' });
    expect(assessDeploy(view({ deployment: { status: 'failed', message: 'boom' } }), 1, new Map())).toMatchObject({ done: true, ok: false, message: 'boom' });
    expect(assessDeploy(view({ version: 1, deployment: { status: 'rolled-back', message: 'task x on n1: health check got HTTP 404 on /healthz' } }), 2, new Map())).toMatchObject({ done: true, ok: false, message: 'rolled back to version 1: task x on n1: health check got HTTP 404 on /healthz' });
  });
});
