// `npm start` (cli/local.ts): a real 3-process cluster that forms, steps the root down and
// serves a write through a follower. --exit makes it stop once shown.
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

describe('npm start', () => {
  it('forms a 3-node local cluster, prints omni status, round-trips a key and serves an example app', async () => {
    const { stdout } = await run('node_modules/.bin/node', ['--import', 'tsx', 'cli/local.ts', '--exit'], { timeout: 90_000 });
    expect(stdout).toMatch(/cluster ready in [\d.]+ s/);
    expect(stdout).toMatch(/health\s+healthy/);
    expect(stdout).toMatch(/voters\s+node1, node2, node3 \(target 3\)/);
    expect(stdout).toMatch(/root node\s+node1 \(retired\)/);
    expect(stdout).toMatch(/omni kv get hello\s+\(via node\d\) → world/);
    expect(stdout).toMatch(/hello-web is healthy: 3\/3 replicas, one per node/);
    expect(stdout).toMatch(/curl http:\/\/127\.0\.0\.1:\d+\/ → hello from hello-web-[0-9a-f]+/);
  });
});
