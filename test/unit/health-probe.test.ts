// A task's health probe (node/apps/health-check.ts): a command check run on the node keeps its
// output (the health log); one run inside the task goes through the driver's exec.
import { describe, expect, it } from 'vitest';
import { execProbe, probe } from '../../node/apps/health-check.js';
import type { HealthCheckSpec } from '../../protocol/apps/spec.js';
import type { TaskDriver } from '../../node/apps/drivers/types.js';

const check = (command: string[], over: Partial<HealthCheckSpec> = {}): HealthCheckSpec => ({ type: 'command', port: '', path: '/', command, intervalMs: 1000, timeoutMs: 2000, retries: 3, startPeriodMs: 0, ...over });

describe('health probes', () => {
  it('a command on the node: exit code and output (stdout and stderr)', async () => {
    expect(await probe(check(['sh', '-c', 'echo out; echo err >&2; exit 2']), undefined, {})).toEqual({ ok: false, detail: 'command exited with code 2', output: 'out\nerr\n' });
    expect(await probe(check(['sh', '-c', 'echo "$X"']), undefined, { X: 'from-env' })).toEqual({ ok: true, detail: 'command exited with code 0', output: 'from-env\n' });
    expect((await probe(check(['sleep', '5'], { timeoutMs: 200 }), undefined, {})).detail).toMatch(/killed by SIGTERM/);
  });

  it('a command in the task goes through the driver (exec), never runs on the node', async () => {
    const calls: unknown[] = [];
    const driver = { exec: async (id: string, argv: string[], t: number) => (calls.push([id, argv, t]), argv[0] === 'ok' ? { exitCode: 0, output: '' } : argv[0] === 'slow' ? { exitCode: null, output: 'partial' } : { exitCode: 4, output: 'nope\n' }) } as unknown as TaskDriver;
    expect(await execProbe(driver, 't1', check(['ok']))).toEqual({ ok: true, detail: 'command exited with code 0 (in the container)', output: '' });
    expect(await execProbe(driver, 't1', check(['bad']))).toEqual({ ok: false, detail: 'command exited with code 4 (in the container)', output: 'nope\n' });
    expect(await execProbe(driver, 't1', check(['slow'], { timeoutMs: 300 }))).toEqual({ ok: false, detail: 'command timed out after 300 ms (in the container)', output: 'partial' });
    expect(calls).toEqual([['t1', ['ok'], 2000], ['t1', ['bad'], 2000], ['t1', ['slow'], 300]]);
    const broken = { exec: async () => Promise.reject(new Error('task t1 is not running')) } as unknown as TaskDriver;
    expect(await execProbe(broken, 't1', check(['x']))).toEqual({ ok: false, detail: 'command could not run in the container: task t1 is not running' });
  });
});
