// Vitest global setup: ONE private dockerd for the whole run (scripts/dockerd-private.sh), when
// DOCKER_HOST is unset, dockerd is installed and we are root. Its DOCKER_HOST goes to the workers
// (provide/inject, and process.env for pools that inherit it); teardown stops it by its pidfile.
// Set OMNI_TEST_DOCKER=0 to not start one. First it brings dist/ up to date (scripts/build.mjs):
// the omnid processes the tests start run dist/omnid.cjs through bin/omnid, which would rebuild a
// stale one itself, but once here is cheaper than several at once in the test files.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type { TestProject } from 'vitest/node';
import { DOCKERD_SCRIPT, type DockerSetupInfo } from './docker.js';

const run = promisify(execFile);
const START_TIMEOUT_MS = 120_000;
const STOP_TIMEOUT_MS = 60_000;

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(delimiter).some((d) => d && existsSync(join(d, cmd)));
}

async function stopAndRemove(dir: string): Promise<void> {
  await run('bash', [DOCKERD_SCRIPT, 'stop', dir], { timeout: STOP_TIMEOUT_MS }).catch((e: Error) => {
    console.warn(`global-setup: stopping the private dockerd failed: ${e.message}`);
  });
  // never rm -rf through a mount dockerd left behind
  const mounts = await readFile('/proc/self/mounts', 'utf8').catch(() => '');
  if (!mounts.includes(` ${dir}/`)) await rm(dir, { recursive: true, force: true });
  else console.warn(`global-setup: ${dir} still has mounts; not removed`);
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILD_TIMEOUT_MS = 300_000;

export default async function setup(project: TestProject): Promise<(() => Promise<void>) | undefined> {
  await run(join(ROOT, 'node_modules', '.bin', 'node'), [join(ROOT, 'scripts', 'build.mjs'), '--if-stale', '--quiet'], { timeout: BUILD_TIMEOUT_MS }).catch((e: Error & { stderr?: string }) => {
    // bin/omnid then runs the TypeScript sources through tsx: slower, still the current code
    console.warn(`global-setup: building dist/ failed (omnid runs from the sources): ${e.message}\n${e.stderr ?? ''}`);
  });
  const info: DockerSetupInfo = {};
  const provide = () => project.provide('omniDocker', info);
  if (process.env.DOCKER_HOST) {
    info.note = `DOCKER_HOST=${process.env.DOCKER_HOST} is set`;
  } else if (process.env.OMNI_TEST_DOCKER === '0') {
    info.note = 'OMNI_TEST_DOCKER=0';
  } else if (!onPath('dockerd')) {
    info.note = 'dockerd is not installed (apt-get install -y docker.io busybox-static)';
  } else if (process.getuid?.() !== 0) {
    info.note = 'not root: cannot start a private dockerd';
  } else {
    const dir = await mkdtemp('/tmp/omni-dockerd-');
    try {
      const { stdout } = await run('bash', [DOCKERD_SCRIPT, 'start', dir], { timeout: START_TIMEOUT_MS });
      const line = stdout.split('\n').find((l) => l.startsWith('DOCKER_HOST='));
      if (!line) throw new Error(`no DOCKER_HOST line in: ${stdout}`);
      info.host = line.slice('DOCKER_HOST='.length).trim();
      process.env.DOCKER_HOST = info.host;
      provide();
      return async () => {
        delete process.env.DOCKER_HOST;
        await stopAndRemove(dir);
      };
    } catch (e) {
      info.note = `starting a private dockerd failed: ${(e as Error).message}`;
      console.warn(`global-setup: ${info.note}`);
      await stopAndRemove(dir);
    }
  }
  provide();
  return undefined;
}
