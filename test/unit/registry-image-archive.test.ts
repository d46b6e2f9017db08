// Image files, the pure part (protocol/registry/image-archive.ts): paths inside an archive, links,
// docker save's manifest.json, an OCI layout's index.json and the names it gives, the manifest
// made for a docker-save image, docker load's manifest.json, platforms; and the progress line.
import { describe, expect, it } from 'vitest';
import {
  archivePath,
  archiveEntryKind,
  checkLayoutVersion,
  choosePlatform,
  clusterRef,
  dockerImageManifest,
  dockerLoadManifest,
  layoutIndex,
  linkTarget,
  parsePlatform,
  readDockerArchiveManifest,
  readImageConfig,
  readLayoutIndex,
  registryName,
} from '../../protocol/registry/image-archive.js';
import { parseManifest } from '../../protocol/registry/manifest.js';
import { DOCKER_MANIFEST } from '../../protocol/registry/media-types.js';
import { Progress, formatDuration, progressLine } from '../../cli/omni/progress.js';

const D = (c: string) => 'sha256:' + c.repeat(64);

describe('paths inside an archive', () => {
  it('normalises plain relative paths and refuses anything that could leave the directory', () => {
    expect(archivePath('./blobs/sha256/abc')).toEqual({ ok: true, value: 'blobs/sha256/abc' });
    expect(archivePath('abc/')).toEqual({ ok: true, value: 'abc' });
    expect(archivePath('./')).toEqual({ ok: true, value: '' });
    for (const p of ['../x', 'a/../../x', 'a/./b', '/etc/passwd', 'a//b', 'a\\b', 'a\u0000b', '', 'x/'.repeat(20) + 'y', 'a'.repeat(2000)]) {
      expect(archivePath(p).ok, JSON.stringify(p.slice(0, 40))).toBe(false);
    }
  });

  it('resolves a link relative to its directory, never outside the archive or to an absolute path', () => {
    expect(linkTarget('bbb/layer.tar', '../aaa/layer.tar')).toEqual({ ok: true, value: 'aaa/layer.tar' });
    expect(linkTarget('layer.tar', 'aaa/./layer.tar')).toEqual({ ok: true, value: 'aaa/layer.tar' });
    expect(linkTarget('bbb/layer.tar', '../../etc/passwd')).toMatchObject({ ok: false, message: expect.stringContaining('outside') });
    expect(linkTarget('bbb/layer.tar', '/etc/passwd')).toMatchObject({ ok: false, message: expect.stringContaining('absolute') });
    expect(linkTarget('x', '')).toMatchObject({ ok: false });
  });

  it('reads only files, directories and symbolic links', () => {
    expect(archiveEntryKind('File')).toBe('file');
    expect(archiveEntryKind('Directory')).toBe('dir');
    expect(archiveEntryKind('SymbolicLink')).toBe('link');
    for (const t of ['Link', 'CharacterDevice', 'BlockDevice', 'FIFO', 'GNUDumpDir']) expect(archiveEntryKind(t), t).toBeUndefined();
  });
});

describe('docker save', () => {
  it('reads manifest.json with its paths checked, and refuses malformed ones with a reason', () => {
    const ok = readDockerArchiveManifest(JSON.stringify([{ Config: `${'a'.repeat(64)}.json`, RepoTags: ['busybox:latest'], Layers: ['x/layer.tar', './y/layer.tar'] }]));
    expect(ok).toEqual({ ok: true, value: [{ config: `${'a'.repeat(64)}.json`, repoTags: ['busybox:latest'], layers: ['x/layer.tar', 'y/layer.tar'] }] });
    expect(readDockerArchiveManifest(JSON.stringify([{ Config: 'c.json', RepoTags: null, Layers: [] }]))).toMatchObject({ ok: true, value: [{ repoTags: [] }] });
    const bad = (v: unknown) => readDockerArchiveManifest(JSON.stringify(v));
    expect(bad([{ Config: '../c.json', Layers: [] }])).toMatchObject({ ok: false, message: expect.stringContaining('Config') });
    expect(bad([{ Config: 'c.json', Layers: ['/etc/shadow'] }])).toMatchObject({ ok: false, message: expect.stringContaining('Layers[0]') });
    expect(bad([{ Config: 'c.json', Layers: 'x' }])).toMatchObject({ ok: false });
    expect(bad([{ Config: 'c.json', Layers: [], RepoTags: [5] }])).toMatchObject({ ok: false, message: expect.stringContaining('RepoTags') });
    expect(bad([])).toMatchObject({ ok: false, message: expect.stringContaining('no image') });
    expect(bad({})).toMatchObject({ ok: false });
    expect(readDockerArchiveManifest('not json')).toMatchObject({ ok: false, message: expect.stringContaining('not JSON') });
  });

  it('reads the diff_ids and platform of an image config', () => {
    const cfg = { architecture: 'arm64', os: 'linux', variant: 'v8', rootfs: { type: 'layers', diff_ids: [D('1'), D('2')] } };
    expect(readImageConfig(Buffer.from(JSON.stringify(cfg)))).toEqual({ ok: true, value: { diffIds: [D('1'), D('2')], os: 'linux', architecture: 'arm64', variant: 'v8' } });
    expect(readImageConfig(Buffer.from(JSON.stringify({ rootfs: { type: 'layers', diff_ids: ['sha256:12'] } })))).toMatchObject({ ok: false });
    expect(readImageConfig(Buffer.from('[1]'))).toMatchObject({ ok: false });
    expect(readImageConfig(Buffer.from([0xff, 0xfe]))).toMatchObject({ ok: false, message: expect.stringContaining('UTF-8') });
  });

  it('makes a Docker schema 2 manifest the registry accepts, the same bytes for the same input', () => {
    const a = dockerImageManifest({ digest: D('c'), sizeBytes: 10 }, [{ digest: D('1'), sizeBytes: 5 }]);
    expect(dockerImageManifest({ digest: D('c'), sizeBytes: 10 }, [{ digest: D('1'), sizeBytes: 5 }])).toBe(a);
    const parsed = parseManifest(Buffer.from(a), DOCKER_MANIFEST);
    expect(parsed.ok && parsed.manifest.blobs.map((b) => b.digest)).toEqual([D('c'), D('1')]);
  });

  it("writes docker load's manifest.json naming layout blobs", () => {
    expect(JSON.parse(dockerLoadManifest([{ config: D('c'), layers: [D('1'), D('2')], repoTags: ['team/api:1'] }]))).toEqual([
      { Config: `blobs/sha256/${'c'.repeat(64)}`, RepoTags: ['team/api:1'], Layers: [`blobs/sha256/${'1'.repeat(64)}`, `blobs/sha256/${'2'.repeat(64)}`] },
    ]);
  });
});

describe('OCI layout', () => {
  it('reads index.json: each image with the names its annotations give (a full name, or only a tag)', () => {
    const idx = {
      schemaVersion: 2,
      manifests: [
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D('1'), size: 10, annotations: { 'io.containerd.image.name': 'docker.io/library/busybox:1.36', 'org.opencontainers.image.ref.name': '1.36' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D('2'), size: 11, annotations: { 'org.opencontainers.image.ref.name': 'latest' } },
        { mediaType: 'application/vnd.oci.image.index.v1+json', digest: D('3'), size: 12, annotations: { 'org.opencontainers.image.ref.name': 'team/api:1.4' } },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D('4'), size: 13 },
        { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: D('5'), size: 14, annotations: { 'io.containerd.image.name': 'Not Valid' } },
      ],
    };
    const r = readLayoutIndex(JSON.stringify(idx));
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.value.map((e) => e.names)).toEqual([[{ repository: 'busybox', tag: '1.36' }], [{ tag: 'latest' }], [{ repository: 'team/api', tag: '1.4' }], [], []]);
    expect(r.value[4].nameProblems[0]).toContain('Not Valid');
    expect(r.value[2]).toMatchObject({ digest: D('3'), sizeBytes: 12 });
    expect(readLayoutIndex(JSON.stringify({ schemaVersion: 2, manifests: [{ digest: 'sha256:x', size: 1, mediaType: 'a/b' }] }))).toMatchObject({ ok: false, message: expect.stringContaining('digest') });
    expect(readLayoutIndex(JSON.stringify({ schemaVersion: 2, manifests: [] }))).toMatchObject({ ok: false, message: expect.stringContaining('no image') });
    expect(checkLayoutVersion('{"imageLayoutVersion":"1.0.0"}').ok).toBe(true);
    expect(checkLayoutVersion('{"imageLayoutVersion":"2.0.0"}')).toMatchObject({ ok: false });
  });

  it('writes index.json with the names containerd and skopeo read back', () => {
    const text = layoutIndex([{ mediaType: DOCKER_MANIFEST, digest: D('1'), sizeBytes: 5, name: { repository: 'team/api', tag: '1.4' } }, { mediaType: DOCKER_MANIFEST, digest: D('2'), sizeBytes: 6, name: { repository: 'x', digest: D('2') } }]);
    const back = readLayoutIndex(text);
    expect(back.ok && back.value.map((e) => e.names)).toEqual([[{ repository: 'team/api', tag: '1.4' }], []]);
  });
});

describe('names and platforms', () => {
  it('maps names from files to this registry, and user references to it (a loopback host only)', () => {
    expect(registryName('busybox:latest')).toEqual({ ok: true, value: { repository: 'busybox', tag: 'latest' } });
    expect(registryName('docker.io/library/busybox:1')).toEqual({ ok: true, value: { repository: 'busybox', tag: '1' } });
    expect(registryName('ghcr.io/org/app:2')).toEqual({ ok: true, value: { repository: 'org/app', tag: '2' } });
    expect(registryName('127.0.0.1:5000/team/api:1.4')).toEqual({ ok: true, value: { repository: 'team/api', tag: '1.4' } });
    expect(registryName('Upper/Case:1')).toMatchObject({ ok: false });
    expect(clusterRef('127.0.0.1:5000/team/api:1.4')).toEqual({ ok: true, value: { repository: 'team/api', tag: '1.4' } });
    expect(clusterRef(`team/api@${D('a')}`)).toEqual({ ok: true, value: { repository: 'team/api', digest: D('a') } });
    expect(clusterRef('registry.example.com/team/api:1')).toMatchObject({ ok: false, message: expect.stringContaining('registry.example.com') });
  });

  it('picks the platform asked for from an index, and says which it has otherwise', () => {
    const entries = [
      { digest: D('1'), platform: { os: 'linux', architecture: 'amd64' } },
      { digest: D('2'), platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { digest: D('3') },
    ];
    const p = (s: string) => {
      const r = parsePlatform(s);
      if (!r.ok) throw new Error(r.message);
      return r.value;
    };
    expect(choosePlatform(entries, p('linux/arm64'))).toMatchObject({ ok: true, value: { digest: D('2') } });
    expect(choosePlatform(entries, p('linux/arm64/v8'))).toMatchObject({ ok: true, value: { digest: D('2') } });
    expect(choosePlatform(entries, p('linux/arm64/v7'))).toMatchObject({ ok: false });
    expect(choosePlatform(entries, p('linux/s390x'))).toMatchObject({ ok: false, message: expect.stringContaining('linux/amd64, linux/arm64/v8') });
    expect(parsePlatform('linux')).toMatchObject({ ok: false });
  });
});

describe('progress line', () => {
  const tty = () => {
    const out: string[] = [];
    return { out, stream: { isTTY: true, columns: 200, write: (s: string) => out.push(s) } };
  };

  it('shows bytes, percentage, rate and time left', () => {
    expect(progressLine('pushing', 50 * 1048576, 100 * 1048576, 10_000)).toBe('pushing  50.0MiB / 100.0MiB (50%)  5.0MiB/s  ETA 10s');
    expect(progressLine('pulling', 1024, 0, 100)).toBe('pulling  1.0KiB');
    expect(formatDuration(65_000)).toBe('1m05s');
    expect(formatDuration(2 * 3_600_000 + 3 * 60_000)).toBe('2h03m');
  });

  it('redraws one line on a terminal at most every interval, clears it at the end; writes nothing elsewhere', () => {
    let now = 0;
    const t = tty();
    const p = new Progress('pulling x', { stream: t.stream, now: () => now, intervalMs: 200 });
    p.addTotal(1000);
    p.advance(100);
    now = 100;
    p.advance(100); // too soon: not drawn
    now = 1000;
    p.advance(300);
    p.end();
    expect(t.out).toHaveLength(3);
    expect(t.out[0]).toMatch(/^\r\x1b\[Kpulling x {2}100B \/ 1000B \(10%\)$/);
    expect(t.out[1]).toMatch(/^\r\x1b\[Kpulling x {2}500B \/ 1000B \(50%\) {2}500B\/s {2}ETA 1s$/);
    expect(t.out[2]).toBe('\r\x1b[K');
    const pipe: string[] = [];
    const q = new Progress('pulling x', { stream: { isTTY: false, write: (s: string) => pipe.push(s) }, now: () => now });
    q.addTotal(10);
    q.advance(10);
    q.setLabel('y');
    q.end();
    expect(pipe).toEqual([]);
    expect(q.done).toBe(10);
  });
});
