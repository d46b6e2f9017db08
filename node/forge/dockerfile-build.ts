// A Dockerfile project built by a Docker engine into the cluster's registry — the same code where
// the engine is a node's (the build runs as a task on a node that has one: node-build-parts.ts)
// and where it is the CLI host's (omni build --local). Before the build, every FROM image is made
// available to the engine (the cluster's registry, pulled and tagged under the Dockerfile's name,
// or the engine's own: nothing comes from the internet); the engine builds Forge's filtered
// context tar; its image is read back with `docker save` and pushed like `omni images import`
// (gzip layers, a Docker schema 2 manifest) through the registry it is given.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import Docker from 'dockerode';
import { x as extractTar } from 'tar';
import { OmniError } from '../errors.js';
import { sourceTag } from '../../protocol/forge/image.js';
import { newPushContext, openSource, pushSourceImage, NO_PROGRESS, type ImageRegistry, type TransferProgress } from '../registry/image-files.js';
import type { DockerfileBuild } from './builder.js';
import { dockerBuild, dockerSave } from './docker-build.js';
import { prepareFromImages, type BaseResolver } from './docker-runner.js';

/** A Dockerfile read to find its FROM images is at most this large. */
const MAX_DOCKERFILE_BYTES = 1024 * 1024;

export interface EngineBuildParts {
  docker: Docker;
  /** Where the image goes. */
  registry: ImageRegistry;
  /** FROM images of the cluster's registry (absent: only the engine's own images). */
  bases?: BaseResolver;
  progress?: TransferProgress;
}

/** The Dockerfile out of the context tar (to read its FROM lines before the engine sees it). */
async function dockerfileText(contextPath: string, dockerfile: string, work: string): Promise<string> {
  const dir = join(work, 'dockerfile');
  await mkdir(dir, { recursive: true });
  let size = 0;
  await extractTar({ file: contextPath, cwd: dir, strict: true, preserveOwner: false, filter: (p, e) => (p === dockerfile || p === `./${dockerfile}`) && (e as { type?: string }).type === 'File' && (size = (e as { size?: number }).size ?? 0) <= MAX_DOCKERFILE_BYTES });
  if (size > MAX_DOCKERFILE_BYTES) throw new OmniError('NOT_BUILDABLE', `${dockerfile} is over ${MAX_DOCKERFILE_BYTES} bytes`);
  const text = await readFile(join(dir, dockerfile), 'utf8').catch(() => undefined);
  if (text === undefined) throw new OmniError('NOT_BUILDABLE', `${dockerfile}: no such file in the build context`);
  return text;
}

export function engineDockerfileBuild(p: EngineBuildParts): DockerfileBuild {
  return async (i) => {
    const { docker } = p;
    await docker.ping().catch((err: Error) => {
      throw new OmniError('UNAVAILABLE', `the Docker engine does not answer (${err.message.slice(0, 200)})`);
    });
    i.log(`Dockerfile ${i.dockerfile}${i.target ? ` (target ${i.target})` : ''}`);
    await prepareFromImages(docker, p.bases, await dockerfileText(i.contextPath, i.dockerfile, i.work), i.dockerfile, i.buildArgs);
    i.signal?.throwIfAborted();
    const localTag = `omni-forge/${i.repo}:${sourceTag(i.sourceDigest).slice(0, 68)}`;
    await dockerBuild(docker, i.contextPath, { dockerfile: i.dockerfile, tag: localTag, ...(i.buildArgs ? { buildArgs: i.buildArgs } : {}), ...(i.target ? { target: i.target } : {}), ...(i.limits ? { limits: i.limits } : {}), ...(i.signal ? { signal: i.signal } : {}) }, i.log);
    const saved = join(i.work, 'image.tar');
    await dockerSave(docker, localTag, saved);
    const extracted = join(i.work, 'saved');
    await mkdir(extracted);
    const src = await openSource(saved, extracted);
    if (src.images.length !== 1) throw new OmniError('INTERNAL', `docker save wrote ${src.images.length} images`);
    const pushed = await pushSourceImage(newPushContext(p.registry, p.progress ?? NO_PROGRESS, i.work), src, src.images[0], i.repo);
    const doc = JSON.parse(pushed.bytes.toString('utf8')) as { layers?: { size: number }[] };
    return { digest: pushed.digest, manifest: pushed.bytes, mediaType: pushed.mediaType, imageBytes: (doc.layers ?? []).reduce((n, l) => n + l.size, 0) };
  };
}
