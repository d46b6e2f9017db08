// Repository names, tags and references as the OCI distribution spec defines them, plus the
// `[host[:port]/]repo[:tag][@digest]` image references users type.
import { checkDigest, isDigest } from './digest.js';

/** distribution-spec: <name> = path components of [a-z0-9]+ joined by . _ __ or -+, separated by '/'. */
const NAME_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_RE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/**
 * Longest repository name. The spec allows 255 with the host; ours is shorter so that every
 * state key (prefix + name + tag) stays within the replicated key limit of 512 bytes.
 */
export const MAX_REPOSITORY_CHARS = 200;
export const MAX_TAG_CHARS = 128;

export function isRepositoryName(s: unknown): boolean {
  return typeof s === 'string' && s.length > 0 && s.length <= MAX_REPOSITORY_CHARS && NAME_RE.test(s);
}

export function isTag(s: unknown): boolean {
  return typeof s === 'string' && TAG_RE.test(s);
}

/** A manifest reference: a tag or a digest (anything else is invalid). */
export type ManifestReference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string } | { kind: 'invalid'; message: string; code: 'MANIFEST_INVALID' | 'DIGEST_INVALID' | 'UNSUPPORTED' | 'TAG_INVALID' };

export function parseManifestReference(ref: string): ManifestReference {
  if (ref.includes(':')) {
    const d = checkDigest(ref);
    return d.ok ? { kind: 'digest', digest: d.digest } : { kind: 'invalid', code: d.code, message: d.message };
  }
  if (isTag(ref)) return { kind: 'tag', tag: ref };
  return { kind: 'invalid', code: 'TAG_INVALID', message: `${JSON.stringify(ref.slice(0, 140))} is not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})` };
}

/** A user's image reference, e.g. `127.0.0.1:5000/team/web:1.2` or `web@sha256:…`. */
export interface ImageReference {
  /** registry host[:port] when the first component names one (has '.' or ':' or is localhost). */
  host?: string;
  repository: string;
  tag?: string;
  digest?: string;
}

export type ImageReferenceResult = { ok: true; ref: ImageReference } | { ok: false; message: string };

/** Parses `[host[:port]/]repo[:tag][@digest]`; the repository must be a valid OCI name. */
export function parseImageReference(s: string): ImageReferenceResult {
  if (typeof s !== 'string' || s.length === 0 || s.length > 512) return { ok: false, message: 'an image reference must be 1 to 512 characters' };
  let rest = s;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!isDigest(digest)) return { ok: false, message: `${JSON.stringify(digest.slice(0, 80))} is not a sha256 digest` };
  }
  let host: string | undefined;
  const slash = rest.indexOf('/');
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      host = first;
      rest = rest.slice(slash + 1);
    }
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isTag(tag)) return { ok: false, message: `${JSON.stringify(tag.slice(0, 140))} is not a valid tag` };
  }
  if (!isRepositoryName(rest)) return { ok: false, message: `${JSON.stringify(rest.slice(0, 200))} is not a valid repository name (lowercase letters, digits, . _ - separated by /)` };
  return { ok: true, ref: { ...(host ? { host } : {}), repository: rest, ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) } };
}
