// A Docker engine for tests: DOCKER_HOST if it answers, else the private dockerd that
// test/support/global-setup.ts started for this run, else /var/run/docker.sock. Without an engine
// the caller gets { skip: reason } — or an error when OMNI_REQUIRE_DOCKER=1 (CI must not skip).
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { inject } from 'vitest';

/** Base image every Docker test uses (busybox, made by scripts/dockerd-private.sh with docker import). */
export const TEST_IMAGE = 'omni-test/busybox:1';
export const DOCKERD_SCRIPT = fileURLToPath(new URL('../../scripts/dockerd-private.sh', import.meta.url));
const PING_TIMEOUT_MS = 3_000;

/** What the global setup hands to the test workers. */
export interface DockerSetupInfo {
  /** DOCKER_HOST of the private dockerd it started (unset if it did not start one). */
  host?: string;
  /** Why it did not start one, or how starting failed. */
  note?: string;
}

declare module 'vitest' {
  export interface ProvidedContext {
    omniDocker: DockerSetupInfo;
  }
}

export type DockerForTests = { socketPath: string; image: string } | { skip: string };

let cached: Promise<DockerForTests> | undefined;

/** The engine for this test file (probed once per worker). */
export function dockerForTests(): Promise<DockerForTests> {
  cached ??= probe().then((r) => {
    if ('skip' in r && process.env.OMNI_REQUIRE_DOCKER === '1') {
      throw new Error(`OMNI_REQUIRE_DOCKER=1 but no Docker engine for the tests: ${r.skip}`);
    }
    return r;
  });
  return cached;
}

async function ping(socketPath: string): Promise<string | undefined> {
  try {
    await new Docker({ socketPath, timeout: PING_TIMEOUT_MS }).ping();
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

async function probe(): Promise<DockerForTests> {
  let setup: DockerSetupInfo = {};
  try {
    setup = inject('omniDocker') ?? {};
  } catch {
    // not under vitest's global setup
  }
  const host = process.env.DOCKER_HOST || setup.host;
  let socketPath: string;
  if (host) {
    if (!host.startsWith('unix://')) return { skip: `DOCKER_HOST=${host} is not a unix socket; the docker driver only talks to unix:///…/docker.sock` };
    socketPath = host.slice('unix://'.length);
    const err = await ping(socketPath);
    if (err) return { skip: `DOCKER_HOST=${host} does not answer (${err})` };
  } else {
    socketPath = '/var/run/docker.sock';
    const err = await ping(socketPath);
    if (err) {
      return {
        skip:
          `no Docker engine: DOCKER_HOST is unset, no private dockerd was started (${setup.note ?? 'no global setup'}), ` +
          `and ${socketPath} does not answer (${err}). Install docker.io + busybox-static and run as root, or set DOCKER_HOST`,
      };
    }
  }
  const docker = new Docker({ socketPath });
  const hasImage = () => docker.getImage(TEST_IMAGE).inspect().then(() => true, () => false);
  if (!(await hasImage())) {
    // make it on that engine (needs a static busybox and root for chroot)
    try {
      await promisify(execFile)('bash', [DOCKERD_SCRIPT, 'image'], { env: { ...process.env, DOCKER_HOST: `unix://${socketPath}` }, timeout: 120_000 });
    } catch (e) {
      return { skip: `the engine at unix://${socketPath} has no ${TEST_IMAGE} and it could not be made: ${(e as Error).message.split('\n').slice(-3).join(' ')}` };
    }
    if (!(await hasImage())) return { skip: `${TEST_IMAGE} is still missing on unix://${socketPath}` };
  }
  return { socketPath, image: TEST_IMAGE };
}
