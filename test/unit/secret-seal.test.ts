// Secrets sealed before they enter the replicated state (node/apps/secret-seal.ts).
import { describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { fileContent, seal, sealSecrets, secretKey, unseal } from '../../node/apps/secret-seal.js';
import { specDigest, validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';

const key = secretKey(randomBytes(32));
const otherKey = secretKey(randomBytes(32));
const b64 = (s: string) => Buffer.from(s).toString('base64');

function spec(secret: string, config = 'level=info'): AppSpec {
  const v = validateAppSpec({
    name: 'api',
    command: ['sleep', '600'],
    files: [
      { kind: 'secret', name: 'token', target: '/run/secrets/token', data: b64(secret) },
      { kind: 'config', name: 'app.conf', target: '/etc/app.conf', data: b64(config) },
    ],
  });
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return v.spec;
}

describe('sealed secrets', () => {
  it('opens with the cluster key only, and an altered value not at all', () => {
    const sealed = seal(key, Buffer.from('s3cret'));
    expect(sealed).toMatch(/^v1\.[A-Za-z0-9_-]{16}\.[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain(b64('s3cret'));
    expect(unseal(key, sealed).toString()).toBe('s3cret');
    expect(() => unseal(otherKey, sealed)).toThrow(expect.objectContaining({ code: 'SECRET_SEALED_ELSEWHERE' }));
    const parts = sealed.split('.');
    const altered = `${parts[0]}.${parts[1]}.${parts[2].startsWith('A') ? 'B' : 'A'}${parts[2].slice(1)}`;
    expect(() => unseal(key, altered)).toThrow(expect.objectContaining({ code: 'SECRET_SEALED_ELSEWHERE' }));
    expect(() => unseal(key, 'v2.x.y')).toThrow(/not a sealed secret/);
  });

  it('seals a spec\'s secrets (not its configs); the same content keeps its sealed value, a new one is sealed anew', () => {
    const first = sealSecrets(spec('s3cret'), key);
    const [secret, config] = first.files!;
    expect(secret).toMatchObject({ kind: 'secret', name: 'token', data: '', sha256: expect.stringMatching(/^[0-9a-f]{64}$/) });
    expect(JSON.stringify(first)).not.toContain(b64('s3cret'));
    expect(config).toEqual(spec('s3cret').files![1]);
    expect(fileContent(secret, key).toString()).toBe('s3cret');
    expect(fileContent(config, key).toString()).toBe('level=info');
    // submitted again unchanged (compose up again): the same spec, so no new version and no roll
    expect(specDigest(sealSecrets(spec('s3cret'), key, first))).toBe(specDigest(first));
    // without the previous spec the nonce differs; with a changed secret the value changes
    expect(specDigest(sealSecrets(spec('s3cret'), key))).not.toBe(specDigest(first));
    expect(sealSecrets(spec('other'), key, first).files![0].sealed).not.toBe(secret.sealed);
  });

  it('takes a spec back as the API shows it (sealed), and refuses one sealed by another cluster', () => {
    const shown = JSON.parse(JSON.stringify(sealSecrets(spec('s3cret'), key))) as Record<string, unknown>;
    const again = validateAppSpec(shown);
    expect(again.ok).toBe(true);
    if (!again.ok) return;
    expect(specDigest(sealSecrets(again.spec, key, again.spec))).toBe(specDigest(again.spec));
    expect(() => sealSecrets(again.spec, otherKey)).toThrow(expect.objectContaining({ code: 'SECRET_SEALED_ELSEWHERE' }));
    // a sealed value whose sha256 does not match its content
    const lying = { ...again.spec, files: [{ ...again.spec.files![0], sha256: '0'.repeat(64) }] };
    expect(() => sealSecrets(lying, key)).toThrow(/does not match/);
    expect(() => fileContent(lying.files[0], key)).toThrow(/does not match/);
    expect(() => fileContent(again.spec.files![0], undefined)).toThrow(/no key/);
  });

  it('validates the sealed form: secrets only, not with data, bounded', () => {
    const base = { name: 'api', command: ['true'] };
    const sealed = seal(key, Buffer.from('x'));
    const bad = (files: unknown[]) => {
      const v = validateAppSpec({ ...base, files });
      return v.ok ? [] : v.errors.map((e) => `${e.field}: ${e.message}`);
    };
    expect(bad([{ kind: 'secret', name: 't', target: '/t', sealed }])).toEqual([]);
    expect(bad([{ kind: 'config', name: 't', target: '/t', sealed }])).toEqual(['files[0].sealed: only a secret is sealed']);
    expect(bad([{ kind: 'secret', name: 't', target: '/t', sealed: 'plain text' }])).toEqual(['files[0].sealed: must be a sealed secret v1.<nonce>.<ciphertext>']);
    expect(bad([{ kind: 'secret', name: 't', target: '/t', data: b64('x'), sealed }])).toEqual(['files[0]: give either data or sealed (with sha256), not both']);
    expect(bad([{ kind: 'secret', name: 't', target: '/t', sealed: seal(key, randomBytes(70 * 1024)) }])[0]).toMatch(/files\[0\]\.sealed: (larger than|must be a sealed)/);
  });
});
