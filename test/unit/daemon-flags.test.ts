// omnid's flags become DaemonOptions (cli/omnid/daemon-flags.ts): build retention, the workspace read-back interval.
import { describe, expect, it } from 'vitest';
import { daemonOptions } from '../../cli/omnid/daemon-flags.js';
import { DEFAULT_BUILD_RETENTION } from '../../protocol/forge/retention.js';
import { keepBoundApiPort } from '../../cli/omnid/saved-flags.js';

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

describe('omnid flags saved for a restart: an API port 0', () => {
  it('is saved as the port it got, for IPv4, IPv6 and names; any other --api is kept as given', () => {
    expect(keepBoundApiPort({ api: '127.0.0.1:0', name: 'a' }, 'http://127.0.0.1:40123')).toEqual({ api: '127.0.0.1:40123', name: 'a' });
    expect(keepBoundApiPort({ api: '[::1]:0' }, 'https://[::1]:40124')).toEqual({ api: '[::1]:40124' });
    expect(keepBoundApiPort({ api: '0.0.0.0:0' }, 'https://10.0.0.5:40125')).toEqual({ api: '0.0.0.0:40125' });
    expect(keepBoundApiPort({ api: '127.0.0.1:7070' }, 'http://127.0.0.1:7070')).toEqual({ api: '127.0.0.1:7070' });
    expect(keepBoundApiPort({ api: '127.0.0.1:10' }, 'http://127.0.0.1:10')).toEqual({ api: '127.0.0.1:10' });
    expect(keepBoundApiPort({}, 'http://127.0.0.1:7070')).toEqual({});
  });

  it('stays 0 when the bound address says no port', () => {
    expect(keepBoundApiPort({ api: '127.0.0.1:0' }, 'not a url')).toEqual({ api: '127.0.0.1:0' });
    expect(keepBoundApiPort({ api: '127.0.0.1:0' }, 'https://127.0.0.1')).toEqual({ api: '127.0.0.1:0' });
  });
});
