// What the forge task driver needs on a node, made from the node's registry and its proposal path
// (daemon.ts only calls this): the in-process registry (writes as the node itself, SELF), the step
// runners (this node's runtimes; its Docker engine, which pulls runtime bases from the node's own
// loopback /v2/ with the node's pull credential), Dockerfile builds by that engine and the build
// record writer. The Docker side (dockerode, docker-modem, ssh2: ~25 ms of every start) is loaded
// when a build first needs the engine, not when omnid starts.
import { existsSync } from 'node:fs';
import type Docker from 'dockerode';
import { OmniError } from '../errors.js';
import { SELF, type Caller } from '../cluster/caller.js';
import type { Command } from '../../protocol/cluster/state.js';
import type { Registry } from '../registry/registry.js';
import type { ForgeBuildParts } from '../apps/drivers/forge.js';
import { dockerSocketPath, loadDockerode } from '../apps/drivers/docker.js';
import { NodeBuildRegistry } from './node-registry.js';
import { HostRunner } from './runner.js';
import type { BaseResolver } from './docker-runner.js';

export interface NodeBuildDeps {
  registry: Registry;
  proposeOk(cmd: Command, caller: Caller): Promise<unknown>;
}

export function nodeBuildParts(d: NodeBuildDeps): ForgeBuildParts {
  const reg = d.registry;
  /** This node's engine (UNAVAILABLE naming `what` without one) and the registry's images for it to pull. */
  const engine = async (what: string): Promise<{ docker: Docker; bases?: BaseResolver }> => {
    let socketPath: string;
    try {
      socketPath = dockerSocketPath();
    } catch (err) {
      throw new OmniError('UNAVAILABLE', `${what}: ${(err as Error).message}`);
    }
    if (!existsSync(socketPath)) throw new OmniError('UNAVAILABLE', `${what}: this node has no Docker engine (${socketPath})`);
    const [Dockerode, { registryBases }] = await Promise.all([loadDockerode(), import('./docker-runner.js')]);
    const docker = new Dockerode({ socketPath });
    const access = reg.engineAccess();
    return { docker, ...(access ? { bases: registryBases(docker, access.hostPort, access.password, (r, t) => reg.catalog.resolveTag(r, t)) } : {}) };
  };
  return {
    registry: (signal) =>
      new NodeBuildRegistry({
        catalog: reg.catalog,
        store: reg.store,
        ensureLocal: (rec, s) => reg.ensureLocal(rec, s),
        replicate: (digest, s, repo, offer) => reg.replicate(digest, s, repo, offer),
        caller: SELF,
        signal,
      }),
    runner: async (kind, limits) => {
      if (kind === 'host') return new HostRunner();
      const e = await engine('--runner docker');
      const { DockerRunner } = await import('./docker-runner.js');
      if (!e.bases) throw new OmniError('UNAVAILABLE', "--runner docker: this node's registry is not on a plain-HTTP loopback address its engine can pull runtime bases from");
      return new DockerRunner(e.docker, e.bases, limits);
    },
    // A Dockerfile project: this node's engine builds it, its FROM images from the registry or the engine.
    // (The engine is looked for when such a build runs, not for every build.)
    dockerfileBuild: (registry, limits) => async (input) => {
      const e = await engine('a Dockerfile build');
      const { engineDockerfileBuild } = await import('./dockerfile-build.js');
      return engineDockerfileBuild({ docker: e.docker, registry, ...(e.bases ? { bases: e.bases } : {}) })({ ...input, ...(limits ? { limits } : {}) });
    },
    writeRecord: async (key, value) => {
      await d.proposeOk({ type: 'kv.put', key, value }, SELF);
    },
  };
}
