// omnid's flags become DaemonOptions (cli/omnid/daemon-flags.ts): build retention, the workspace read-back interval.
import { describe, expect, it } from 'vitest';
import { daemonOptions } from '../../cli/omnid/daemon-flags.js';
import { DEFAULT_BUILD_RETENTION } from '../../protocol/forge/retention.js';

describe('omnid flags: --build-keep and --build-ttl', () => {
  it('are absent unless given; either one keeps the default of the other', () => {
    expect(daemonOptions({}).buildRetention).toBeUndefined();
    expect(daemonOptions({ 'build-keep': '0' }).buildRetention).toEqual({ keepLast: 0, ttlMs: DEFAULT_BUILD_RETENTION.ttlMs });
    expect(daemonOptions({ 'build-ttl': '30m' }).buildRetention).toEqual({ keepLast: DEFAULT_BUILD_RETENTION.keepLast, ttlMs: 30 * 60_000 });
    expect(daemonOptions({ 'build-keep': '20', 'build-ttl': 'off' }).buildRetention).toEqual({ keepLast: 20, ttlMs: Number.POSITIVE_INFINITY });
  });

  it('refuse what is not a count or a duration, with the flag named', () => {
    expect(() => daemonOptions({ 'build-keep': '-1' })).toThrow(/--build-keep/);
    expect(() => daemonOptions({ 'build-keep': 'many' })).toThrow(/--build-keep/);
    expect(() => daemonOptions({ 'build-ttl': '10' })).toThrow(/--build-ttl/);
    expect(() => daemonOptions({ 'build-ttl': '500ms' })).toThrow(/--build-ttl must be at least 1s/);
  });
});

describe('omnid flags: --workspace-sync', () => {
  it('a duration of at least 1s, or off (0); absent: the agent default', () => {
    expect(daemonOptions({}).workspaceSyncMs).toBeUndefined();
    expect(daemonOptions({ 'workspace-sync': '10s' }).workspaceSyncMs).toBe(10_000);
    expect(daemonOptions({ 'workspace-sync': 'off' }).workspaceSyncMs).toBe(0);
    expect(() => daemonOptions({ 'workspace-sync': '100ms' })).toThrow(/--workspace-sync must be at least 1s/);
    expect(() => daemonOptions({ 'workspace-sync': 'often' })).toThrow(/--workspace-sync/);
  });
});
