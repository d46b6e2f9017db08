// The states a person sees (protocol/apps/user-state.ts) and the flows' decisions from them.
import { describe, expect, it } from 'vitest';
import { decideRun, decideStop, decideWatch, isActive, stateLabel, userState, type StateInput } from '../../protocol/apps/user-state.js';

type Task = StateInput['tasks'][number];
const task = (over: Partial<Task> = {}): Task => ({ version: 1, desired: 'run', state: 'running', health: 'healthy', stable: true, ...over });
const app = (over: Partial<StateInput> = {}): StateInput => ({ type: 'service', state: 'running', version: 1, replicas: 1, deploy: 'stable', tasks: [task()], ...over });

describe('user states', () => {
  it('agent: NONE, INIT, IDLE, BUSY, DEAD', () => {
    expect(userState(undefined).state).toBe('NONE');
    expect(userState(app({ tasks: [] })).state).toBe('INIT');
    expect(userState(app({ tasks: [task({ state: 'pending', health: 'none', stable: false })] })).state).toBe('INIT');
    expect(userState(app({ tasks: [task({ state: 'starting', health: 'starting', stable: false })] })).state).toBe('INIT');
    expect(userState(app({ tasks: [task({ health: 'unhealthy', stable: false })] })).state).toBe('INIT');
    expect(userState(app()).state).toBe('IDLE');
    expect(userState(app({ type: 'lab' })).state).toBe('IDLE');
    // serving but not yet stable, a rollout, a second replica still starting, an old task stopping
    expect(userState(app({ tasks: [task({ stable: false })] })).state).toBe('BUSY');
    expect(userState(app({ deploy: 'deploying' })).detail).toContain('rollout');
    expect(userState(app({ replicas: 2, tasks: [task(), task({ state: 'starting', health: 'starting', stable: false })] }))).toMatchObject({ state: 'BUSY', detail: expect.stringContaining('1/2 serving') });
    expect(userState(app({ version: 2, tasks: [task({ version: 2 }), task({ version: 1, desired: 'stop' })] }))).toMatchObject({ state: 'BUSY', detail: expect.stringContaining('old task') });
    // stopped: DEAD once nothing runs; BUSY while its tasks go down
    expect(userState(app({ state: 'stopped', tasks: [task({ desired: 'stop' })] })).state).toBe('BUSY');
    expect(userState(app({ state: 'stopped', tasks: [task({ desired: 'stop', state: 'exited' })] })).state).toBe('DEAD');
    expect(userState(app({ state: 'failed', tasks: [] })).state).toBe('DEAD');
    expect(userState(app({ state: 'removing', tasks: [] })).state).toBe('DEAD');
    expect(userState(app({ replicas: 0, tasks: [] })).state).toBe('IDLE');
  });

  it('lab: BUSY while a kernel computes, IDLE with idle kernels; a service ignores kernels', () => {
    expect(userState(app({ type: 'lab', tasks: [task({ kernels: { total: 2, busy: 0 } })] })).state).toBe('IDLE');
    expect(userState(app({ type: 'lab', tasks: [task({ kernels: { total: 2, busy: 1 } })] }))).toMatchObject({ state: 'BUSY', detail: '1 kernel(s) computing' });
    expect(userState(app({ type: 'service', tasks: [task({ kernels: { total: 1, busy: 1 } })] })).state).toBe('IDLE');
    // a lab still starting stays INIT whatever its kernels
    expect(userState(app({ type: 'lab', tasks: [task({ state: 'starting', health: 'starting', stable: false, kernels: { total: 1, busy: 1 } })] })).state).toBe('INIT');
  });

  it('cron: IDLE between fires, BUSY while a run is in progress, DEAD once stopped', () => {
    const cron = (over: Partial<StateInput> = {}) => userState(app({ type: 'cron', tasks: [], ...over }));
    expect(cron().state).toBe('IDLE');
    expect(cron({ tasks: [task({ health: 'none' })] })).toMatchObject({ state: 'BUSY', detail: expect.stringContaining('in progress') });
    expect(cron({ state: 'stopped' }).state).toBe('DEAD');
    expect(cron({ state: 'stopped', tasks: [task({ desired: 'stop' })] }).state).toBe('BUSY');
  });

  it('job: CREATED, RUNNING, STOPPED with its outcome', () => {
    const job = (phase: 'CREATED' | 'RUNNING' | 'STOPPED', outcome = '') => userState(app({ type: 'job', job: { phase, outcome } }));
    expect(job('CREATED')).toMatchObject({ kind: 'job', state: 'CREATED' });
    expect(job('RUNNING').state).toBe('RUNNING');
    expect(job('STOPPED', 'succeeded')).toMatchObject({ state: 'STOPPED', outcome: 'succeeded' });
    expect(stateLabel(job('STOPPED', 'failed'))).toBe('STOPPED (failed)');
    expect(isActive(job('RUNNING'))).toBe(true);
    expect(isActive(job('STOPPED', 'failed'))).toBe(false);
  });

  it('run flow: decided from the current state only', () => {
    expect(decideRun(userState(undefined))).toBe('submit');
    expect(decideRun(userState(app({ state: 'stopped', tasks: [] })))).toBe('submit');
    expect(decideRun(userState(app({ tasks: [] })))).toBe('wait');
    expect(decideRun(userState(app()))).toBe('ensure');
    expect(decideRun(userState(app({ tasks: [task({ stable: false })] })))).toBe('ensure');
    const job = (phase: 'CREATED' | 'RUNNING' | 'STOPPED', outcome = '') => userState(app({ type: 'job', job: { phase, outcome } }));
    expect(decideRun(job('CREATED'))).toBe('ensure');
    expect(decideRun(job('RUNNING'))).toBe('ensure');
    expect(decideRun(job('STOPPED', 'stopped'))).toBe('submit');
    expect(decideRun(job('STOPPED', 'succeeded'))).toBe('report');
    expect(decideRun(job('STOPPED', 'failed'))).toBe('report');
  });

  it('stop and watch flows', () => {
    expect(decideStop(userState(undefined), undefined)).toBe('nothing');
    expect(decideStop(userState(app({ state: 'stopped', tasks: [] })), 'stopped')).toBe('nothing');
    expect(decideStop(userState(app()), 'running')).toBe('stop');
    expect(decideStop(userState(app({ tasks: [] })), 'running')).toBe('stop');
    expect(decideStop(userState(app({ state: 'stopped', tasks: [task({ desired: 'stop' })] })), 'stopped')).toBe('wait');
    expect(decideWatch(userState(undefined))).toBe('missing');
    expect(decideWatch(userState(app()))).toBe('stream');
    expect(decideWatch(userState(app({ state: 'stopped', tasks: [task({ desired: 'stop' })] })))).toBe('stream');
    expect(decideWatch(userState(app({ state: 'failed', tasks: [] })))).toBe('cached');
    expect(decideWatch(userState(app({ type: 'job', job: { phase: 'STOPPED', outcome: 'succeeded' } })))).toBe('cached');
  });
});
