import { describe, expect, it } from 'vitest';
import { buildCacheNodes } from '../../protocol/forge/cache-placement.js';
import { buildCommand, depsHintTag, DEPS_CACHE_REPO_NAME, parseBuildCommand, type BuildTaskRequest } from '../../protocol/forge/build-request.js';
import { manifestKey, tagKey } from '../../protocol/registry/records.js';
import { validateAppSpec, type AppSpec } from '../../protocol/apps/spec.js';

const d = (c: string) => 'sha256:' + c.repeat(64);
const req = (over: Partial<BuildTaskRequest> = {}): BuildTaskRequest => ({ repo: 'team/app', sourceBlob: d('a'), sourceDigest: d('b'), tags: [], rebuild: false, runner: 'host', maxSourceBytes: 1000, depsHint: d('c'), ...over });
function buildSpec(r: BuildTaskRequest): AppSpec {
  const v = validateAppSpec({ name: 'build-1', type: 'job', driver: 'forge', command: buildCommand(r), retries: 0, exclusive: true });
  if (!v.ok) throw new Error(JSON.stringify(v.errors));
  return v.spec;
}

describe('forge: soft placement for a warm dependency cache', () => {
  const manifest = d('e');
  const config = d('1');
  const layer = d('2');
  const kv = new Map<string, string>([
    [tagKey(DEPS_CACHE_REPO_NAME, depsHintTag(d('c'))), JSON.stringify({ digest: manifest, updatedAtMs: 1 })],
    [manifestKey(manifest), JSON.stringify({ digest: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json', sizeBytes: 10, content: JSON.stringify({ schemaVersion: 2, config: { digest: config }, layers: [{ digest: layer }] }), blobs: [config, layer], manifests: [], createdAtMs: 1 })],
  ]);
  const holders: Record<string, string[]> = { [config]: ['n1', 'n2', 'n3'], [layer]: ['n3', 'n2'] };
  const get = (k: string) => kv.get(k);
  const hold = (digest: string) => holders[digest] ?? [];

  it('the deps hint round-trips through the build command and is checked', () => {
    const p = parseBuildCommand(buildCommand(req()));
    expect(p.ok && p.request.depsHint).toBe(d('c'));
    const bad = parseBuildCommand([...buildCommand(req({ depsHint: undefined })), '--deps-hint', 'nope']);
    expect(bad.ok).toBe(false);
    expect(!bad.ok && bad.message).toMatch(/--deps-hint/);
  });

  it('prefers the nodes holding the layer tagged for the hint (not those holding only its config)', () => {
    expect([...(buildCacheNodes(buildSpec(req()), get, hold) ?? [])]).toEqual(['n2', 'n3']);
    expect([...(buildCacheNodes(buildSpec(req()), get, (dg) => (dg === layer ? ['n1'] : ['n2'])) ?? [])]).toEqual(['n1']);
  });

  it('no preference without a hint, an unknown hint, a damaged record or another driver', () => {
    expect(buildCacheNodes(buildSpec(req({ depsHint: undefined })), get, hold)).toBeUndefined();
    expect(buildCacheNodes(buildSpec(req({ depsHint: d('f') })), get, hold)).toBeUndefined();
    expect(buildCacheNodes(buildSpec(req()), (k) => (k.startsWith('registry/manifest/') ? '{bad' : get(k)), hold)).toBeUndefined();
    expect(buildCacheNodes(buildSpec(req()), get, () => [])).toBeUndefined();
    const proc = validateAppSpec({ name: 'p', command: buildCommand(req()) });
    if (!proc.ok) throw new Error('spec');
    expect(buildCacheNodes(proc.spec, get, hold)).toBeUndefined();
  });
});
