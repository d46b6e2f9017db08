// MockDriver: deterministic in-memory tasks with hooks for tests and the simulator.
import { describe, expect, it } from 'vitest';
import { MockDriver } from '../../node/apps/drivers/mock.js';
import type { TaskConfig } from '../../node/apps/drivers/types.js';

function task(taskId: string, image = 'app:1'): TaskConfig {
  return { taskId, app: 'app', version: 1, image, env: {}, ports: [], volumes: [], cpu: 1, memoryBytes: 1 << 20, labels: {} };
}

describe('MockDriver', () => {
  it('starts, crashes, stops and destroys tasks on a virtual clock', async () => {
    let now = 1_000;
    const d = new MockDriver({ now: () => now });
    expect(await d.start(task('t1'))).toEqual({ taskId: 't1', state: 'running', exitCode: null, startedAtMs: 1_000 });
    await expect(d.start(task('t1'))).rejects.toMatchObject({ code: 'CONFLICT' });
    now = 2_000;
    d.crash('t1', 3);
    expect(await d.inspect('t1')).toMatchObject({ state: 'exited', exitCode: 3, exitedAtMs: 2_000 });
    await d.start(task('t2'));
    await d.stop('t2', 10);
    expect(await d.inspect('t2')).toMatchObject({ state: 'exited', exitCode: 0, reason: 'stopped' });
    await d.destroy('t2');
    expect(await d.inspect('t2')).toBeUndefined();
    expect(d.calls).toEqual(['start t1', 'start t1', 'start t2', 'stop t2', 'destroy t2']);
  });

  it('fails starts of an image on demand and reports unavailability', async () => {
    const d = new MockDriver();
    d.failStart('bad:1', 'no such image');
    await expect(d.start(task('t1', 'bad:1'))).rejects.toMatchObject({ code: 'START_FAILED', message: 'task t1: no such image' });
    d.clearFailStart('bad:1');
    await d.start(task('t1', 'bad:1'));
    d.setUnavailable('engine down');
    expect(await d.available()).toEqual({ ok: false, reason: 'engine down' });
  });

  it('keeps tasks across an agent restart and follows logs until exit', async () => {
    const d = new MockDriver({ now: () => 5 });
    await d.start(task('t1'));
    d.emitLog('t1', 'a');
    const r = d.restarted();
    expect(await r.recover()).toEqual([{ taskId: 't1', state: 'running', exitCode: null, startedAtMs: 5 }]);
    const lines: string[] = [];
    const done = (async () => {
      for await (const l of r.logs('t1', { follow: true })) lines.push(l);
    })();
    await Promise.resolve();
    r.emitLog('t1', 'b');
    r.crash('t1', 1);
    await done;
    expect(lines).toEqual(['a', 'b']);
    expect(await collectAll(r.logs('t1', { follow: false, tail: 1 }))).toEqual(['b']);
  });
});

async function collectAll(it: AsyncIterable<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const l of it) out.push(l);
  return out;
}
