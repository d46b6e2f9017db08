// Secrets of app specs (compose secrets: `files` of kind secret) are sealed before they enter the
// replicated state: AES-256-GCM under a key derived (HKDF-SHA256) from the cluster's network key,
// which every member holds in its data dir and which never enters the replicated state. So the
// Raft log, snapshots, the KV and the API's answers carry only ciphertext; the node that runs a
// task opens its secrets when it writes the task's files. Like Swarm's managers, every member can
// open them: this protects against a copy of the state or of an API answer, not against a member.
// A sealed value: `v1.<12-byte nonce>.<ciphertext and 16-byte tag>` (base64url), with the
// plaintext's sha256 beside it in the spec, so an unchanged secret keeps its sealed value (the
// app does not roll) and the opened content is checked.
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import type { AppSpec, TaskFileSpec } from '../../protocol/apps/spec.js';
import { OmniError } from '../errors.js';

const VERSION = 'v1';
const NONCE_BYTES = 12;
const TAG_BYTES = 16;

/** The key secrets are sealed with, from the cluster's network key. */
export function secretKey(networkKey: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', networkKey, 'omni', 'omni task secrets v1', 32));
}

export function seal(key: Buffer, plaintext: Buffer): string {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
  return `${VERSION}.${nonce.toString('base64url')}.${ct.toString('base64url')}`;
}

/** Opens a sealed value; throws SECRET_SEALED_ELSEWHERE when it was not sealed with this key (or was altered). */
export function unseal(key: Buffer, sealed: string): Buffer {
  const [version, nonceText, ctText] = sealed.split('.');
  const nonce = Buffer.from(nonceText ?? '', 'base64url');
  const ct = Buffer.from(ctText ?? '', 'base64url');
  if (version !== VERSION || nonce.length !== NONCE_BYTES || ct.length < TAG_BYTES) throw new OmniError('INVALID_SPEC', 'not a sealed secret (v1.<nonce>.<ciphertext>)');
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, nonce);
    decipher.setAuthTag(ct.subarray(ct.length - TAG_BYTES));
    return Buffer.concat([decipher.update(ct.subarray(0, ct.length - TAG_BYTES)), decipher.final()]);
  } catch {
    throw new OmniError('SECRET_SEALED_ELSEWHERE', 'a secret sealed by another cluster (or altered) cannot be opened here: deploy it again with its content');
  }
}

export function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/**
 * The spec with each secret's content sealed (configs stay as they are). A secret whose content
 * is unchanged from `prev` (same name, kind and sha256) keeps prev's sealed value, so that an
 * unchanged spec stays equal (no new version, no roll). A secret given already sealed must open
 * with this key (a spec from another cluster's API is refused here, not at the task's start).
 */
export function sealSecrets(spec: AppSpec, key: Buffer, prev?: AppSpec): AppSpec {
  if (!spec.files?.some((f) => f.kind === 'secret')) return spec;
  const files = spec.files.map((f): TaskFileSpec => {
    if (f.kind !== 'secret') return f;
    const plain = f.sealed !== undefined ? unseal(key, f.sealed) : Buffer.from(f.data, 'base64');
    const sha256 = sha256Hex(plain);
    if (f.sealed !== undefined && f.sha256 !== undefined && f.sha256 !== sha256) throw new OmniError('INVALID_SPEC', `files: secret ${f.name}: its sha256 does not match its sealed content`);
    const same = prev?.files?.find((p) => p.kind === 'secret' && p.name === f.name && p.sha256 === sha256 && p.sealed !== undefined);
    return { kind: f.kind, name: f.name, target: f.target, data: '', mode: f.mode, sealed: same?.sealed ?? f.sealed ?? seal(key, plain), sha256 };
  });
  return { ...spec, files };
}

/** A task file's content: opened (and checked) when sealed, else its base64 data. */
export function fileContent(f: TaskFileSpec, key: Buffer | undefined): Buffer {
  if (f.sealed === undefined) return Buffer.from(f.data, 'base64');
  if (!key) throw new OmniError('UNAVAILABLE', `secret ${f.name} is sealed and this node has no key to open it`);
  const plain = unseal(key, f.sealed);
  if (f.sha256 !== undefined && sha256Hex(plain) !== f.sha256) throw new OmniError('INVALID_SPEC', `secret ${f.name}: its content does not match its sha256`);
  return plain;
}
