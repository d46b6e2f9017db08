// The registry's garbage collection, pure part (protocol/registry/gc.ts): marking from tags, app
// pins and young manifests; what the sweep removes; retention; the per-node sweep decision.
import { describe, expect, it } from 'vitest';
import { appImageRefs, planGc, retentionRemovals, sweepDecision, type GcInput } from '../../protocol/registry/gc.js';

const d = (c: string) => 'sha256:' + c.repeat(64);
const HOUR = 3_600_000;
const NOW = 100 * HOUR;
const OLD = NOW - 2 * HOUR;

// Blobs: a base layer shared by two images, one layer and one config per image.
const BASE = d('0');
const [CFG_A, LAYER_A, CFG_B, LAYER_B, CFG_C, LAYER_C] = ['1', '2', '3', '4', '5', '6'].map(d);
const [MAN_A, MAN_B, INDEX, SIG_A, SIG_B] = ['a', 'b', 'd', 'e', 'f'].map(d);

function input(over: Partial<GcInput> = {}): GcInput {
  const blob = (digest: string, sizeBytes = 100) => ({ digest, sizeBytes, createdAtMs: OLD });
  const link = (repo: string, digest: string) => ({ repo, digest, createdAtMs: OLD });
  return {
    nowMs: NOW,
    graceMs: HOUR,
    tags: [{ repo: 'team/a', tag: '1', digest: MAN_A, updatedAtMs: OLD }],
    manifests: [
      { digest: MAN_A, blobs: [CFG_A, BASE, LAYER_A], manifests: [], createdAtMs: OLD },
      { digest: MAN_B, blobs: [CFG_B, BASE, LAYER_B], manifests: [], createdAtMs: OLD },
      { digest: SIG_A, blobs: [CFG_C], manifests: [], subject: MAN_A, createdAtMs: OLD },
      { digest: SIG_B, blobs: [LAYER_C], manifests: [], subject: MAN_B, createdAtMs: OLD },
    ],
    manifestLinks: [link('team/a', MAN_A), link('team/b', MAN_B), link('team/a', SIG_A), link('team/b', SIG_B)],
    blobs: [blob(BASE), blob(CFG_A), blob(LAYER_A, 1000), blob(CFG_B, 10), blob(LAYER_B, 2000), blob(CFG_C), blob(LAYER_C, 300)],
    blobLinks: [BASE, CFG_A, LAYER_A, CFG_C].map((x) => link('team/a', x)).concat([BASE, CFG_B, LAYER_B, LAYER_C].map((x) => link('team/b', x))),
    appImages: [],
    ...over,
  };
}

describe('registry gc: mark', () => {
  it('keeps what a tag reaches (and its referrers); removes an untagged manifest, its own blobs and links, not a shared one', () => {
    const p = planGc(input());
    expect([...p.liveManifests].sort()).toEqual([MAN_A, SIG_A].sort());
    expect([...p.liveBlobs].sort()).toEqual([BASE, CFG_A, LAYER_A, CFG_C].sort());
    expect(p.removeManifests).toEqual([MAN_B, SIG_B].sort());
    expect(p.removeManifestLinks).toEqual([{ repo: 'team/b', digest: MAN_B }, { repo: 'team/b', digest: SIG_B }].sort((x, y) => (x.digest < y.digest ? -1 : 1)));
    expect(p.removeBlobs).toEqual([CFG_B, LAYER_B, LAYER_C].sort());
    expect(p.removeBlobLinks).toEqual([CFG_B, LAYER_B, LAYER_C].sort().map((x) => ({ repo: 'team/b', digest: x })));
    expect(p.reclaimBytes).toBe(10 + 2000 + 300);
    expect(p.removeTags).toEqual([]);
  });

  it('an app version pinned to an untagged manifest keeps it and its blobs, whatever the host or repository written', () => {
    for (const image of [`team/b@${MAN_B}`, `127.0.0.1:5000/team/b@${MAN_B}`, `team/b:old@${MAN_B}`, `elsewhere/x@${MAN_B}`]) {
      const p = planGc(input({ appImages: ['busybox:1', image] }));
      expect(p.liveManifests.has(MAN_B), image).toBe(true);
      expect(p.removeBlobs, image).toEqual([]);
      expect(p.removeManifests, image).toEqual([]);
    }
  });

  it('an index keeps the manifests it lists and their blobs', () => {
    const p = planGc(
      input({
        tags: [{ repo: 'team/a', tag: 'multi', digest: INDEX, updatedAtMs: OLD }],
        manifests: [...input().manifests, { digest: INDEX, blobs: [], manifests: [MAN_A, MAN_B], createdAtMs: OLD }],
      }),
    );
    expect(p.liveManifests).toEqual(new Set([INDEX, MAN_A, MAN_B, SIG_A, SIG_B]));
    expect(p.removeBlobs).toEqual([]);
  });

  it('nothing younger than the grace period goes: an untagged manifest, a blob whose manifest is not pushed yet, a blob pushed again', () => {
    const base = input();
    const p = planGc(
      input({
        manifests: base.manifests.map((m) => (m.digest === MAN_B ? { ...m, createdAtMs: NOW - 1000 } : m)),
        blobs: [...base.blobs, { digest: d('7'), sizeBytes: 5, createdAtMs: NOW - 1000 }, { digest: d('8'), sizeBytes: 5, createdAtMs: OLD }],
        // d('8')'s record is old, but it was uploaded again a minute ago (its link was refreshed)
        blobLinks: [...base.blobLinks, { repo: 'team/c', digest: d('8'), createdAtMs: NOW - 60_000 }],
      }),
    );
    expect(p.liveManifests.has(MAN_B)).toBe(true); // young: kept, with what it references and its referrers
    expect(p.liveManifests.has(SIG_B)).toBe(true);
    expect(p.removeManifests).toEqual([]);
    expect(p.removeBlobs).toEqual([]);
    expect(p.keptYoung).toEqual({ manifests: 1, blobs: 2 });
    // the same records an hour later are collected
    const later = planGc({ ...input({ manifests: base.manifests.map((m) => (m.digest === MAN_B ? { ...m, createdAtMs: NOW - 1000 } : m)) }), nowMs: NOW + HOUR });
    expect(later.removeManifests).toEqual([MAN_B, SIG_B].sort());
  });

  it('grace 0 collects everything unreferenced; links to records that do not exist go', () => {
    const p = planGc(input({ graceMs: 0, blobLinks: [...input().blobLinks, { repo: 'team/z', digest: d('9'), createdAtMs: OLD }], manifestLinks: [...input().manifestLinks, { repo: 'team/z', digest: d('8'), createdAtMs: OLD }] }));
    expect(p.removeBlobLinks).toContainEqual({ repo: 'team/z', digest: d('9') });
    expect(p.removeManifestLinks).toContainEqual({ repo: 'team/z', digest: d('8') });
    expect(p.removeBlobs).toEqual([CFG_B, LAYER_B, LAYER_C].sort());
  });

  it('the plan does not depend on the order of its inputs', () => {
    const a = input({ keepLast: 1, tags: [{ repo: 'team/a', tag: '1', digest: MAN_A, updatedAtMs: OLD }, { repo: 'team/a', tag: '2', digest: MAN_B, updatedAtMs: OLD }] });
    const rev = { ...a, tags: [...a.tags].reverse(), manifests: [...a.manifests].reverse(), blobs: [...a.blobs].reverse(), blobLinks: [...a.blobLinks].reverse(), manifestLinks: [...a.manifestLinks].reverse() };
    const norm = (p: ReturnType<typeof planGc>) => JSON.stringify({ ...p, liveManifests: [...p.liveManifests].sort(), liveBlobs: [...p.liveBlobs].sort() });
    expect(norm(planGc(rev))).toBe(norm(planGc(a)));
  });
});

describe('registry gc: retention (keep the last N tags of each repository)', () => {
  const tags = [
    { repo: 'r/x', tag: 'v1', digest: MAN_A, updatedAtMs: 1 },
    { repo: 'r/x', tag: 'v2', digest: MAN_B, updatedAtMs: 2 },
    { repo: 'r/x', tag: 'v3', digest: MAN_B, updatedAtMs: 3 },
    { repo: 'r/y', tag: 'only', digest: MAN_A, updatedAtMs: 1 },
  ];

  it('removes all but the newest N by push time, in every repository; N=0 removes every tag; none without a policy', () => {
    expect(retentionRemovals(tags, 2, new Set()).map((t) => `${t.repo}:${t.tag}`)).toEqual(['r/x:v1']);
    expect(retentionRemovals(tags, 1, new Set()).map((t) => `${t.repo}:${t.tag}`)).toEqual(['r/x:v1', 'r/x:v2']);
    expect(retentionRemovals(tags, 0, new Set())).toHaveLength(4);
    expect(retentionRemovals(tags, undefined, new Set())).toEqual([]);
  });

  it('keeps a tag an app names by tag; a manifest whose tags all go is collected unless an app pins it', () => {
    expect(retentionRemovals(tags, 1, new Set(['r/x:v1'])).map((t) => t.tag)).toEqual(['v2']);
    const p = planGc(input({ keepLast: 1, tags: [{ repo: 'team/a', tag: '1', digest: MAN_A, updatedAtMs: OLD }, { repo: 'team/a', tag: '2', digest: MAN_B, updatedAtMs: OLD + 1 }] }));
    expect(p.removeTags).toEqual([{ repo: 'team/a', tag: '1', digest: MAN_A }]);
    expect(p.removeManifests).toContain(MAN_A);
    expect(p.removeBlobs).toContain(LAYER_A);
    expect(p.removeBlobs).not.toContain(BASE);
    const pinned = planGc(input({ keepLast: 1, appImages: [`team/a@${MAN_A}`], tags: [{ repo: 'team/a', tag: '1', digest: MAN_A, updatedAtMs: OLD }, { repo: 'team/a', tag: '2', digest: MAN_B, updatedAtMs: OLD + 1 }] }));
    expect(pinned.removeTags).toHaveLength(1); // the tag goes, the app's image stays
    expect(pinned.removeManifests).not.toContain(MAN_A);
    expect(pinned.liveBlobs.has(LAYER_A)).toBe(true);
  });

  it('reads app images: digests (anywhere in the reference) and repo:tag names', () => {
    const r = appImageRefs([`team/a@${MAN_A}`, 'team/b', '127.0.0.1:5000/team/c:2', 'not a ref ' + MAN_B]);
    expect([...r.digests].sort()).toEqual([MAN_A, MAN_B].sort());
    expect([...r.tags].sort()).toEqual(['team/b:latest', 'team/c:2']);
  });
});

describe('registry gc: the sweep on a node', () => {
  const base = { live: false, recorded: false, doomed: false, dryRun: false, storedAtMs: OLD, nowMs: NOW, graceMs: HOUR };
  it('deletes an unrecorded, unreferenced, old copy only', () => {
    expect(sweepDecision(base)).toBe('delete');
    expect(sweepDecision({ ...base, live: true })).toBe('live');
    expect(sweepDecision({ ...base, recorded: true })).toBe('recorded');
    expect(sweepDecision({ ...base, recorded: true, doomed: true })).toBe('recorded'); // a real run waits for the catalog
    expect(sweepDecision({ ...base, recorded: true, doomed: true, dryRun: true })).toBe('delete'); // a dry run previews it
    expect(sweepDecision({ ...base, storedAtMs: NOW - 1000 })).toBe('young');
    expect(sweepDecision({ ...base, storedAtMs: NOW - 1000, graceMs: 0 })).toBe('delete');
  });
});

describe('registry gc: options from the API (untrusted)', () => {
  it('defaults to a real run with a 1 h grace period and no retention; refuses anything else with a 400 reason', async () => {
    const { readGcOptions } = await import('../../node/registry/gc.js');
    expect(readGcOptions({})).toEqual({ dryRun: false, graceMs: HOUR });
    expect(readGcOptions(null)).toEqual({ dryRun: false, graceMs: HOUR });
    expect(readGcOptions({ dryRun: true, graceMs: 0, keepLast: 3 })).toEqual({ dryRun: true, graceMs: 0, keepLast: 3 });
    for (const bad of [[1], 'x', 5, { dryRun: 'yes' }, { graceMs: -1 }, { graceMs: 1.5 }, { graceMs: 1e300 }, { keepLast: -2 }, { keepLast: 10 ** 9 }, { other: 1 }]) {
      expect(() => readGcOptions(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'BAD_REQUEST' }));
    }
  });
});
