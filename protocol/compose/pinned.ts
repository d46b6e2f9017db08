// The derived compose file of `omni compose config --pinned`: the interpolated document with
// every build block stripped and every service's image pinned to REPOSITORY@sha256:…, so the
// same stack deploys anywhere without building (and a redeploy never runs another image).
import { stringify } from 'yaml';
import type { Stack } from './parse.js';

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
