// What the forge task driver needs on a node, made from the node's registry and its proposal path
// (daemon.ts only calls this): the in-process registry (writes as the node itself, SELF), the step
// runners (this node's runtimes; its Docker engine, which pulls runtime bases from the node's own
// loopback /v2/ with the node's pull credential) and the build record writer.
import { existsSync } from 'node:fs';
import Docker from 'dockerode';
import { OmniError } from '../errors.js';
import { SELF, type Caller } from '../cluster/caller.js';
import type { Command } from '../../protocol/cluster/state.js';
import type { Registry } from '../registry/registry.js';
import type { ForgeBuildParts } from '../apps/drivers/forge.js';
import { dockerSocketPath } from '../apps/drivers/docker.js';
import { NodeBuildRegistry } from './node-registry.js';
import { HostRunner } from './runner.js';
import { DockerRunner, registryBases } from './docker-runner.js';

export interface NodeBuildDeps {
  registry: Registry;
  proposeOk(cmd: Command, caller: Caller): Promise<unknown>;
}

export function nodeBuildParts(d: NodeBuildDeps): ForgeBuildParts {
  const reg = d.registry;
  return {
    registry: (signal) =>
      new NodeBuildRegistry({
        catalog: reg.catalog,
        store: reg.store,
        ensureLocal: (rec, s) => reg.ensureLocal(rec, s),
        replicate: (digest, s, repo) => reg.replicate(digest, s, repo),
        caller: SELF,
        signal,
      }),
    runner: (kind) => {
      if (kind === 'host') return new HostRunner();
      let socketPath: string;
      try {
        socketPath = dockerSocketPath();
      } catch (err) {
        throw new OmniError('UNAVAILABLE', `--runner docker: ${(err as Error).message}`);
      }
      if (!existsSync(socketPath)) throw new OmniError('UNAVAILABLE', `--runner docker: this node has no Docker engine (${socketPath})`);
      const access = reg.engineAccess();
      if (!access) throw new OmniError('UNAVAILABLE', "--runner docker: this node's registry is not on a plain-HTTP loopback address its engine can pull runtime bases from");
      const docker = new Docker({ socketPath });
      return new DockerRunner(docker, registryBases(docker, access.hostPort, access.password, (r, t) => reg.catalog.resolveTag(r, t)));
    },
    writeRecord: async (key, value) => {
      await d.proposeOk({ type: 'kv.put', key, value }, SELF);
    },
  };
}
