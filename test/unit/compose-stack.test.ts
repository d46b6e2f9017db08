// Stack records (protocol/compose/stack.ts): which held services start, when a stack fails, and
// its health (healthy / degraded / unhealthy).
import { describe, expect, it } from 'vitest';
import { advanceStack, conditionState, stackHealth, type ServiceView, type StackRecord } from '../../protocol/compose/stack.js';

const view = (over: Partial<ServiceView> = {}): ServiceView => ({ exists: true, state: 'running', isJob: false, replicas: 1, running: 1, serving: 1, reason: '', lastOutput: [], ...over });

function stack(over: Partial<StackRecord> = {}): StackRecord {
  return {
    name: 's',
    generation: 1,
    services: [
      { service: 'db', app: 's-db', dependsOn: [], critical: true },
      { service: 'init', app: 's-init', dependsOn: [{ service: 'db', condition: 'service_healthy', required: true }], critical: true },
      { service: 'api', app: 's-api', dependsOn: [{ service: 'db', condition: 'service_healthy', required: true }, { service: 'init', condition: 'service_completed_successfully', required: true }], critical: true },
      { service: 'worker', app: 's-worker', dependsOn: [{ service: 'api', condition: 'service_started', required: true }], critical: false },
    ],
    held: ['init', 'api', 'worker'],
    status: 'starting',
    heldSinceMs: 0,
    startTimeoutMs: 10_000,
    updatedAtMs: 0,
    ...over,
  };
}

describe('stacks: conditions', () => {
  it('started, healthy, completed successfully', () => {
    expect(conditionState('service_started', view({ serving: 0 }))).toEqual({ met: true });
    expect(conditionState('service_started', view({ running: 0, serving: 0 }))).toEqual({ met: false });
    expect(conditionState('service_healthy', view({ replicas: 2, serving: 1 }))).toEqual({ met: false });
    expect(conditionState('service_healthy', view({ replicas: 2, serving: 2 }))).toEqual({ met: true });
    expect(conditionState('service_healthy', view({ state: 'failed', reason: 'failed: boom' }))).toEqual({ met: false, failed: 'failed: boom' });
    expect(conditionState('service_completed_successfully', view({ isJob: true, job: 'running' }))).toEqual({ met: false });
    expect(conditionState('service_completed_successfully', view({ isJob: true, job: 'succeeded' }))).toEqual({ met: true });
    expect(conditionState('service_completed_successfully', view({ isJob: true, job: 'failed', reason: 'job failed: exit 3' }))).toEqual({ met: false, failed: 'job failed: exit 3' });
    expect(conditionState('service_started', undefined)).toEqual({ met: false, failed: 'its app does not exist' });
  });
});

describe('stacks: advancing held services in dependency order', () => {
  it('starts each service once its dependencies meet their conditions, never past a held one', () => {
    const views = new Map([['db', view({ serving: 0 })]]);
    expect(advanceStack(stack(), views, 1000)).toEqual({ start: [] });
    views.set('db', view());
    expect(advanceStack(stack(), views, 1000)).toEqual({ start: ['init'] });
    views.set('init', view({ isJob: true, job: 'succeeded', running: 0, serving: 0 }));
    expect(advanceStack(stack({ held: ['api', 'worker'] }), views, 1000)).toEqual({ start: ['api'] });
    views.set('api', view());
    expect(advanceStack(stack({ held: ['worker'] }), views, 1000)).toEqual({ start: ['worker'] });
    expect(advanceStack(stack({ held: [], status: 'up' }), views, 1000)).toEqual({ start: [] });
  });

  it('fails after the start timeout with the dependency, its output and what was not started', () => {
    const views = new Map([['db', view({ serving: 0, reason: 'health check failing: exit 1', lastOutput: ['FATAL: no data dir'] })]]);
    expect(advanceStack(stack(), views, 9_999)).toEqual({ start: [] });
    expect(advanceStack(stack(), views, 10_001)).toEqual({
      start: [],
      failure: { service: 'db', condition: 'service_healthy', reason: 'db did not become healthy within 10 s: health check failing: exit 1', lastOutput: ['FATAL: no data dir'], notStarted: ['init', 'api', 'worker'] },
    });
  });

  it('fails at once when a dependency failed', () => {
    const views = new Map([['db', view()], ['init', view({ isJob: true, job: 'failed', reason: 'job failed: exit code 2', lastOutput: ['migration 7 failed'] })]]);
    const r = advanceStack(stack({ held: ['api', 'worker'] }), views, 1);
    expect(r.failure).toEqual({ service: 'init', condition: 'service_completed_successfully', reason: 'init did not complete successfully: job failed: exit code 2', lastOutput: ['migration 7 failed'], notStarted: ['api', 'worker'] });
  });
});

describe('stacks: health', () => {
  const all = () => new Map([['db', view()], ['init', view({ isJob: true, job: 'succeeded', running: 0, serving: 0 })], ['api', view({ replicas: 2, serving: 2 })], ['worker', view()]]);
  const up = stack({ held: [], status: 'up' });
  it('healthy when every service is up', () => {
    expect(stackHealth(up, all())).toMatchObject({ status: 'healthy', reasons: [] });
  });
  it('degraded when only a non-critical service is down', () => {
    const v = all();
    v.set('worker', view({ running: 0, serving: 0, reason: 'exited with code 1' }));
    expect(stackHealth(up, v)).toMatchObject({ status: 'degraded', reasons: ['worker (not critical): exited with code 1'] });
  });
  it('unhealthy when a critical service is down, held, or the start failed', () => {
    const v = all();
    v.set('api', view({ replicas: 2, serving: 0, running: 0 }));
    expect(stackHealth(up, v)).toMatchObject({ status: 'unhealthy', reasons: ['api: 0/2 replicas healthy'] });
    expect(stackHealth(stack({ held: ['worker'] }), all())).toMatchObject({ status: 'degraded', reasons: ['worker (not critical): waiting for api'] });
    const failed = stack({ held: ['api', 'worker'], status: 'failed', failure: { service: 'init', condition: 'service_completed_successfully', reason: 'init did not complete successfully', lastOutput: [], notStarted: ['api', 'worker'] } });
    const h = stackHealth(failed, all());
    expect(h.status).toBe('unhealthy');
    expect(h.reasons[0]).toBe('start failed: init did not complete successfully');
    expect(h.services.find((s) => s.service === 'api')!.state).toBe('not started');
  });
});
