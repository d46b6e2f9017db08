// The derived compose file of `omni compose config --pinned`: the interpolated document with
// every build block stripped and every service's image pinned to REPOSITORY@sha256:…, so the
// same stack deploys anywhere without building (and a redeploy never runs another image).
import { stringify } from 'yaml';
import type { BuildBlock, Stack } from './parse.js';

/** `pins`: service → pinned image reference (repo@sha256:…). Services without a pin keep their image. */
export function pinnedDocument(stack: Stack, pins: Readonly<Record<string, string>>): string {
  const doc = structuredClone(stack.doc) as Record<string, unknown>;
  doc.name = stack.project;
  const services = doc.services as Record<string, Record<string, unknown>>;
  for (const [name, s] of Object.entries(services)) {
    const pin = pins[name];
    if (!s || typeof s !== 'object') continue;
    if (pin) {
      delete s.build;
      s.image = pin;
    } else if (s.build !== undefined && s.image === undefined) {
      throw new Error(`service ${name} has a build and no pinned image`);
    }
  }
  return stringify(doc, { lineWidth: 0 });
}

/** What Forge cannot honour in a build block in this version: errors naming the key. */
export function forgeLimits(service: string, b: BuildBlock): string[] {
  const out: string[] = [];
  const at = `services.${service}.build`;
  if (b.dockerfile !== 'Dockerfile') out.push(`${at}.dockerfile: ${b.dockerfile} is not supported: Forge builds the context's ./Dockerfile (or detects the project); name it Dockerfile or give the service its own context`);
  if (Object.keys(b.args).length > 0) out.push(`${at}.args: build arguments are not supported by Forge in this version (the image tag sha-<source digest> would not say which arguments built it)`);
  if (b.target !== undefined) out.push(`${at}.target: build targets are not supported by Forge in this version`);
  return out;
}

/** The registry repository a built service's image goes to: its image's repository if it names one, else PROJECT-SERVICE. */
export function buildRepository(project: string, service: string, image: string | undefined): string {
  if (image) {
    const noDigest = image.split('@')[0];
    const first = noDigest.split('/')[0];
    // another registry's image (ghcr.io/…, localhost:5000/…): the build goes to PROJECT-SERVICE
    if (noDigest.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')) return `${project}-${service}`.toLowerCase().replace(/[^a-z0-9-]+/g, '-');
    const lastColon = noDigest.lastIndexOf(':');
    const repo = lastColon > noDigest.lastIndexOf('/') ? noDigest.slice(0, lastColon) : noDigest;
    if (/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/.test(repo)) return repo;
  }
  return `${project}-${service}`.toLowerCase().replace(/[^a-z0-9-]+/g, '-');
}
