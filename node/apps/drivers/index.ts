// The drivers of one node, by name. The agent picks one per task from the app spec.
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';
import { DockerDriver, type LocalRegistry } from './docker.js';
import { MockDriver } from './mock.js';
import { ForgeDriver, type ForgeBuildParts } from './forge.js';
import type { Logger } from '../../logger.js';
import { ProcessDriver } from './process.js';
import type { DriverSet } from './types.js';

export type { DriverName, DriverSet, LogOptions, PortMapping, TaskConfig, TaskDriver, TaskRunState, TaskStatus, VolumeMount } from './types.js';
export { DockerDriver, dockerSocketPath, type LocalRegistry } from './docker.js';
export { MockDriver } from './mock.js';
export { ForgeDriver, type ForgeBuildParts } from './forge.js';
export { ProcessDriver } from './process.js';

/**
 * Owner key of a node's containers (label omni.owner): derived from its data dir, so several omnid
 * on one host (npm start's local cluster) share a Docker engine without touching each other's tasks.
 */
export function driverOwner(dataDir: string): string {
  return createHash('sha256').update(resolve(dataDir)).digest('hex').slice(0, 16);
}

/**
 * Docker (engine from DOCKER_HOST or /var/run/docker.sock), process (under dataDir/tasks), mock,
 * and forge (builds, under dataDir/forge-tasks) when `forge` says how this node builds.
 */
export function createDrivers(dataDir: string, opts: { registry?: () => LocalRegistry | undefined; forge?: { parts: () => ForgeBuildParts | undefined; log: Logger } } = {}): DriverSet {
  return {
    docker: new DockerDriver({ owner: driverOwner(dataDir), registry: opts.registry, leaseDir: dataDir }),
    process: new ProcessDriver(dataDir),
    mock: new MockDriver(),
    ...(opts.forge ? { forge: new ForgeDriver({ dataDir, log: opts.forge.log, parts: opts.forge.parts }) } : {}),
  };
}
