import { describe, expect, it } from 'vitest';
import { assessHealth, type HealthInput } from '../../protocol/cluster/health.js';

const up = (id: string) => ({ id, name: id, status: 'up', statusReason: '' });
const base = (over: Partial<HealthInput> = {}): HealthInput => ({
  selfId: 'n1',
  leader: 'n1',
  voters: ['n1', 'n2', 'n3'],
  voterTarget: 3,
  nodes: [up('n1'), up('n2'), up('n3')],
  silentMs: () => 100,
  silentAfterMs: 3000,
  ...over,
});

describe('assessHealth', () => {
  it('healthy: a leader, every voter heard, the voter target met', () => {
    expect(assessHealth(base())).toMatchObject({ status: 'healthy', reasons: [], votersUp: 3, quorum: true });
  });

  it('degraded when a voter is silent, before the autopilot marks it down (the issue-10 trial: 2 of 3 voters up)', () => {
    const h = assessHealth(base({ silentMs: (id) => (id === 'n3' ? 4200 : 100) }));
    expect(h.status).toBe('degraded');
    expect(h.votersUp).toBe(2);
    expect(h.reasons).toEqual(['voter n3 not heard from for 4.2 s']);
  });

  it('degraded when a node is marked down', () => {
    const h = assessHealth(base({ nodes: [up('n1'), up('n2'), { id: 'n3', name: 'n3', status: 'down', statusReason: 'no heartbeat for 5 s' }] }));
    expect(h).toMatchObject({ status: 'degraded', votersUp: 2, nodesDown: ['n3'] });
    expect(h.reasons).toEqual(['voter n3 is down: no heartbeat for 5 s']);
  });

  it('degraded with fewer voters than the target (no failure tolerated)', () => {
    const h = assessHealth(base({ voters: ['n1', 'n2'], nodes: [up('n1'), up('n2')] }));
    expect(h.status).toBe('degraded');
    expect(h.reasons[0]).toMatch(/^2 of 3 target voters: join 1 more host/);
    expect(assessHealth(base({ voters: ['n1'], voterTarget: 1, nodes: [up('n1')] })).status).toBe('healthy');
  });

  it('unhealthy without a leader or without a majority of voters up', () => {
    expect(assessHealth(base({ leader: '' })).status).toBe('unhealthy');
    const h = assessHealth(base({ silentMs: (id) => (id === 'n1' ? undefined : 9000) }));
    expect(h).toMatchObject({ status: 'unhealthy', quorum: false, votersUp: 1 });
  });

  it('never counts itself silent, and a peer never heard since start is not silent', () => {
    expect(assessHealth(base({ silentMs: (id) => (id === 'n1' ? 99_999 : undefined) })).status).toBe('healthy');
  });
});
