// GET /metrics' registry and Forge gauges (node/metrics/node-metrics.ts), from fake sources.
import { describe, expect, it } from 'vitest';
import { NodeMetrics, type MetricsSources } from '../../node/metrics/node-metrics.js';

const base: MetricsSources = {
  node: { id: 'id1', name: 'n1', clusterId: () => 'c1' },
  raft: () => ({ term: 2, commitIndex: 10, appliedIndex: 10, isLeader: true, hasLeader: true, voters: 3, learners: 0 }),
  state: () => ({ bytes: 1000, quotaBytes: 2000, nodes: [{ status: 'up' }], apps: 4, recordsAsText: 1 }),
  localTasks: () => [],
  sampleTasks: async () => [],
};

describe('node metrics: registry and builds', () => {
  it("the registry's blobs on this node; under-replicated and lost blobs only from the leader; builds by phase and outcome", async () => {
    let leader = true;
    const m = new NodeMetrics({
      ...base,
      registry: () => ({ blobs: 7, bytes: 7340032, ...(leader ? { underReplicated: 2, lost: 0 } : {}) }),
      builds: () => [
        { phase: 'STOPPED', outcome: 'succeeded' },
        { phase: 'STOPPED', outcome: 'succeeded' },
        { phase: 'STOPPED', outcome: 'failed' },
        { phase: 'RUNNING', outcome: '' },
      ],
    });
    const text = (await m.render()).text;
    expect(text).toMatch(/^omni_state_records_as_text 1$/m);
    expect(text).toMatch(/^omni_registry_blobs 7$/m);
    expect(text).toMatch(/^omni_registry_blob_bytes 7340032$/m);
    expect(text).toMatch(/^omni_registry_blobs_under_replicated\{leader="n1"\} 2$/m);
    expect(text).toMatch(/^omni_registry_blobs_lost\{leader="n1"\} 0$/m);
    expect(text).toMatch(/^omni_builds\{phase="STOPPED",outcome="succeeded"\} 2$/m);
    expect(text).toMatch(/^omni_builds\{phase="STOPPED",outcome="failed"\} 1$/m);
    expect(text).toMatch(/^omni_builds\{phase="RUNNING",outcome=""\} 1$/m);
    leader = false;
    const follower = (await m.render()).text;
    expect(follower).toMatch(/^omni_registry_blobs 7$/m);
    expect(follower).not.toMatch(/^omni_registry_blobs_under_replicated\{/m);
  });

  it('without a registry or builds source: no such metrics', async () => {
    const text = (await new NodeMetrics(base).render()).text;
    expect(text).not.toContain('omni_registry_blobs');
    expect(text).not.toContain('omni_builds');
    expect(text).toMatch(/^omni_raft_term 2$/m);
  });
});
