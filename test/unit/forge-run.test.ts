// omni run DIR's pure parts: the app name from a directory, the spec fields from a build, and
// telling a source directory from an image reference.
import { describe, expect, it } from 'vitest';
import { appNameFromDir, isSourceDir, runSpecFromBuild } from '../../cli/omni/run.js';
import { UsageError } from '../../cli/common.js';

const digest = 'sha256:' + 'a'.repeat(64);

describe('omni run DIR', () => {
  it('names the app after the directory: lower case, letters/digits/-, starting with a letter, at most 40', () => {
    expect(appNameFromDir('examples/node-api')).toBe('node-api');
    expect(appNameFromDir('/tmp/My_App.v2')).toBe('my-app-v2');
    expect(appNameFromDir('/tmp/2fast')).toBe('fast');
    expect(appNameFromDir('/tmp/123')).toBe('app');
    expect(appNameFromDir('/tmp/' + 'x'.repeat(39) + '--y')).toBe('x'.repeat(39));
  });

  it('the image pinned by digest, ports (the first named http), the build health check or TCP', () => {
    expect(runSpecFromBuild({ repository: 'team/api', digest, run: { ports: [8080] } })).toEqual({
      image: `team/api@${digest}`,
      ports: [{ name: 'http', port: 8080 }],
      healthCheck: { type: 'tcp', port: 'http' },
    });
    expect(runSpecFromBuild({ repository: 'api', digest, run: { ports: [8080, 9090], health: { path: '/healthz', port: 9090, intervalMs: 500 } } })).toEqual({
      image: `api@${digest}`,
      ports: [{ name: 'http', port: 8080 }, { name: 'p1', port: 9090 }],
      healthCheck: { type: 'http', port: 'p1', path: '/healthz', intervalMs: 500 },
    });
    // no ports: no health check (a worker)
    expect(runSpecFromBuild({ repository: 'w', digest, run: { ports: [] } })).toEqual({ image: `w@${digest}`, ports: [] });
  });

  it('a positional is a directory when one exists; a path-like name that does not exist is an error', () => {
    expect(isSourceDir('examples/node-api')).toBe(true);
    expect(isSourceDir('busybox')).toBe(false);
    expect(isSourceDir('team/api:v1')).toBe(false);
    expect(isSourceDir('examples/node-api/server.js')).toBe(false);
    expect(() => isSourceDir('./no-such-dir')).toThrow(UsageError);
  });
});
