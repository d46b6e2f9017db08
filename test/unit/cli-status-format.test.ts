// omni status's text (cli/omni/status.ts formatStatus): the state's size against its quota
// (with a pointer to omni quota), and nothing of it from an older node that does not send them.
import { describe, expect, it } from 'vitest';
import { formatStatus, type StatusView } from '../../cli/omni/status.js';

const base: StatusView = {
  clusterId: 'c1', node: 'n1', nodeId: 'id1', role: 'leader', leader: 'n1', leaderId: 'id1', term: 3, commitIndex: 40, appliedIndex: 40,
  voters: ['n1', 'n2', 'n3'], nonVoters: [], voterTarget: 3, root: null, rootRetired: true, health: 'healthy',
} as StatusView;

describe('omni status text', () => {
  it('shows the state held against its quota', () => {
    const text = formatStatus({ ...base, stateBytes: 3 * 2 ** 20, maxStateBytes: 2 * 2 ** 30 });
    expect(text).toMatch(/^state {9}3\.0MiB of its 2\.0GiB quota \(0\.1%; omni quota\)$/m);
  });

  it('leaves the line out for a node that does not report them', () => {
    expect(formatStatus(base)).not.toMatch(/^state /m);
  });
});
