// The leader's orchestrator removes finished build apps past their retention (protocol/forge/retention.ts).
import { describe, expect, it } from 'vitest';
import { Orchestrator } from '../../node/apps/orchestrator.js';
import { silentLogger } from '../../node/logger.js';
import { OmniError } from '../../node/errors.js';
import { waitFor } from '../../node/local-cluster.js';
import { ClusterState, encodeCommand, type Command } from '../../protocol/cluster/state.js';
import { appKey, specKey, type AppRecord, type JobRecord } from '../../protocol/apps/model.js';
import { validateAppSpec } from '../../protocol/apps/spec.js';
import { buildCommand } from '../../protocol/forge/build-request.js';
import type { Raft } from '../../protocol/raft/raft.js';

function cluster() {
  const state = new ClusterState();
  let index = 0;
  const apply = (cmd: Command) => state.apply(++index, encodeCommand(cmd));
  apply({ type: 'node.register', node: { id: 'a', name: 'a', addrs: [], apiUrl: 'http://a', resources: { cpuCores: 8, memoryBytes: 8 * 1024 ** 3, diskBytes: 1e11, arch: 'x86_64', gpus: [] }, labels: {} } });
  /** A build app; `stoppedAtMs`: cancelled (omni build --cancel) in the middle of its run. */
  const add = (name: string, src: string, status: JobRecord['status'] | undefined, finishedAtMs: number, stoppedAtMs?: number) => {
      const v = validateAppSpec({ name, type: 'job', driver: 'forge', retries: 0, exclusive: true, command: buildCommand({ repo: 'team/a', sourceBlob: 'sha256:' + src.repeat(64), sourceDigest: 'sha256:' + src.repeat(64), tags: [], rebuild: false, runner: 'host', maxSourceBytes: 1000 }) });
      if (!v.ok) throw new Error(JSON.stringify(v.errors));
      const job: JobRecord | undefined = status ? { version: 1, run: 1, status, succeeded: status === 'succeeded' ? 1 : 0, failures: status === 'failed' ? 1 : 0, attempts: 1, notBeforeMs: 0, startedAtMs: finishedAtMs - 1000, finishedAtMs, reason: '', history: [], runs: [], ...(stoppedAtMs !== undefined ? { stoppedAtMs } : {}) } : undefined;
      const rec: AppRecord = { name, version: 1, previousVersion: 0, latestVersion: 1, state: stoppedAtMs !== undefined ? 'stopped' : 'running', deploy: { status: 'stable', fromVersion: 0, startedAtMs: 0, message: '' }, pending: '', events: [], ...(job ? { job } : {}) };
      apply({ type: 'kv.put', key: specKey(name, 1), value: JSON.stringify(v.spec) });
      apply({ type: 'kv.put', key: appKey(name), value: JSON.stringify(rec) });
    };
  return { state, apply, add };
}

describe('orchestrator: finished build apps are removed after their retention', () => {
  it('keeps the newest keepLast finished builds of a repository and every running one', async () => {
    const { state, apply, add } = cluster();
    const now = Date.now();
    add('build-old', '1', 'succeeded', now - 3000);
    add('build-mid', '2', 'failed', now - 2000);
    add('build-new', '3', 'succeeded', now - 1000);
    const o = new Orchestrator({
      log: silentLogger,
      raft: { state, isLeader: true, raft: {} as Raft },
      buildRetention: { keepLast: 1, ttlMs: 3600_000 },
      proposeOk: async (cmd) => {
        const r = apply(cmd as Command);
        if (!r.ok) throw new OmniError(r.error.code, r.error.message);
        return r.value;
      },
    });
    o.start();
    try {
      await waitFor('old builds removed', () => !state.kvGet(appKey('build-old')) && !state.kvGet(appKey('build-mid')), 5000, 10);
      expect(state.kvGet(appKey('build-new'))).toBeDefined();
      expect(state.kvGet(specKey('build-old', 1))).toBeUndefined();
    } finally {
      o.stop();
    }
  });

  it('a cancelled build is collected like a finished one, from the time it stopped (--build-ttl); a build under way is not', async () => {
    const { state, apply, add } = cluster();
    const now = Date.now();
    add('build-cancelled-long-ago', '4', 'running', 0, now - 10_000);
    add('build-cancelled-now', '5', 'running', 0, now);
    add('build-under-way', '6', 'running', 0);
    const o = new Orchestrator({
      log: silentLogger,
      raft: { state, isLeader: true, raft: {} as Raft },
      buildRetention: { keepLast: 5, ttlMs: 5_000 },
      proposeOk: async (cmd) => {
        const r = apply(cmd as Command);
        if (!r.ok) throw new OmniError(r.error.code, r.error.message);
        return r.value;
      },
    });
    o.start();
    try {
      await waitFor('the build cancelled long ago removed', () => !state.kvGet(appKey('build-cancelled-long-ago')), 5000, 10);
      expect(state.kvGet(specKey('build-cancelled-long-ago', 1))).toBeUndefined();
      expect(state.kvGet(appKey('build-cancelled-now'))).toBeDefined();
      expect(state.kvGet(appKey('build-under-way'))).toBeDefined();
      // past its ttl, the one cancelled now goes too
      await waitFor('the build cancelled now removed after the ttl', () => !state.kvGet(appKey('build-cancelled-now')), 15_000, 50);
      expect(state.kvGet(appKey('build-under-way'))).toBeDefined();
    } finally {
      o.stop();
    }
  });
});
