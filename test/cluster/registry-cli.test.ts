// Images as files with the real clients, on a 3-node loopback cluster: `docker save` (the legacy
// format of the engine here, Docker 20.10) → `omni images import` on one node → `docker pull` from
// another runs it, same image ID; `omni images export` → `docker load` runs it; `omni images pull`
// into a layout directory → `omni images push` under another name, same digest; `omni images tag`;
// skopeo reads an export as an oci-archive; a hostile tar is refused; a progress line on a
// terminal only. And `omni registry ca`: with it, skopeo verifies a registry served over HTTPS
// (omnid --registry-tls); without it, skopeo refuses the registry's certificate.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { LocalCluster } from '../../node/local-cluster.js';
import { dockerForTests } from '../support/docker.js';
import { formCluster, TEST_FLAGS, waitFor } from './helpers.js';

const run = promisify(execFile);
const sha = (b: Uint8Array) => 'sha256:' + createHash('sha256').update(b).digest('hex');
const docker = await dockerForTests();
const skip = 'skip' in docker ? docker.skip : undefined;
if (skip) console.warn(`!!! SKIPPING the image file tests with docker: ${skip}`);
const skopeoMissing = !['/usr/bin/skopeo', '/usr/local/bin/skopeo'].some((p) => existsSync(p));
const scriptMissing = !existsSync('/usr/bin/script');
if (skopeoMissing || scriptMissing) {
  if (process.env.OMNI_REQUIRE_DOCKER === '1') throw new Error('OMNI_REQUIRE_DOCKER=1 but skopeo or script (util-linux) is not installed');
  console.warn('!!! SKIPPING parts of the image file tests: skopeo or script (util-linux) is not installed');
}

/** Runs bin/omni; resolves with its exit code and output (a failure is a result, not a throw). */
async function omniCli(env: NodeJS.ProcessEnv, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return run('bin/omni', args, { env, timeout: 180_000, maxBuffer: 16 * 1024 * 1024 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );
}

describe.skipIf(skip !== undefined)('images as files with docker and skopeo', () => {
  let c: LocalCluster;
  let dir: string;
  let env: NodeJS.ProcessEnv;
  const names = ['f1', 'f2', 'f3'];
  const reg: Record<string, string> = {};
  const dk = async (...args: string[]) => (await run('docker', args, { env, timeout: 120_000, maxBuffer: 16 * 1024 * 1024 })).stdout.trim();
  const omniEnv = (node: string) => ({ ...process.env, OMNI_ADDR: c.nodes.get(node)!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' });
  const omni = async (node: string, ...args: string[]) => {
    const r = await omniCli(omniEnv(node), args);
    if (r.code !== 0) throw new Error(`omni ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  let marker: string;
  let imageId: string;
  let digest: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-images-cli-'));
    env = { ...process.env, DOCKER_HOST: `unix://${(docker as { socketPath: string }).socketPath}`, DOCKER_CONFIG: dir };
    c = await formCluster(names);
    for (const n of names) {
      const client = c.client(n);
      reg[n] = (await client.get<{ address: string }>('/v1/registry')).address;
      client.close();
      await new Promise<void>((resolve, reject) => {
        const p = execFile('docker', ['login', '-u', 'omni', '--password-stdin', reg[n]], { env, timeout: 60_000 }, (err) => (err ? reject(err) : resolve()));
        p.stdin!.end(c.adminToken);
      });
    }
  });
  afterAll(async () => {
    await c?.destroy();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('docker save → omni images import → docker pull from another node runs it; omni images export → docker load runs it; the same image ID throughout', async () => {
    marker = `files-${randomBytes(4).toString('hex')}`;
    const local = `omni-files-test/${marker}:1`;
    // two layers of our own, one of them empty (the engine writes an empty layer tar)
    const dockerfile = `FROM ${(docker as { image: string }).image}\nRUN echo ${marker} > /hello && dd if=/dev/urandom of=/data bs=1M count=4 2>/dev/null\nRUN true\n`;
    await new Promise<void>((resolve, reject) => {
      const p = execFile('docker', ['build', '-q', '-t', local, '-'], { env: { ...env, DOCKER_BUILDKIT: '0' }, timeout: 120_000 }, (err) => (err ? reject(err) : resolve()));
      p.stdin!.end(dockerfile);
    });
    await dk('tag', local, 'team/files:1');
    imageId = await dk('image', 'inspect', '--format', '{{.Id}}', local);
    const saved = join(dir, 'saved.tar');
    await dk('save', '-o', saved, 'team/files:1');
    expect((await run('tar', ['-tf', saved])).stdout).toContain('manifest.json');
    await dk('rmi', '-f', local, 'team/files:1');

    const imported = JSON.parse(await omni('f1', 'images', 'import', saved, '--json')) as { format: string; images: { repository: string; digest: string; tags: string[] }[]; blobsUploaded: number };
    expect(imported.format).toBe('docker-archive');
    expect(imported.images).toEqual([{ repository: 'team/files', digest: expect.stringMatching(/^sha256:/), tags: ['1'] }]);
    expect(imported.blobsUploaded).toBeGreaterThanOrEqual(3);
    digest = imported.images[0].digest;
    // the same tarball again: the same digest, nothing uploaded
    const again = JSON.parse(await omni('f2', 'images', 'import', saved, '--json')) as { images: { digest: string }[]; blobsUploaded: number };
    expect(again.images[0].digest).toBe(digest);
    expect(again.blobsUploaded).toBe(0);

    await dk('pull', `${reg.f3}/team/files:1`);
    expect(await dk('run', '--rm', `${reg.f3}/team/files:1`, 'cat', '/hello')).toBe(marker);
    expect(await dk('image', 'inspect', '--format', '{{.Id}}', `${reg.f3}/team/files:1`)).toBe(imageId);
    await dk('rmi', '-f', `${reg.f3}/team/files:1`);

    const exported = join(dir, 'exported.tar');
    const ex = JSON.parse(await omni('f2', 'images', 'export', 'team/files:1', '-o', exported, '--json')) as { digest: string; dockerLoad: boolean; sizeBytes: number };
    expect(ex).toMatchObject({ digest, dockerLoad: true });
    expect(ex.sizeBytes).toBeGreaterThan(1024 * 1024);
    expect((await dk('load', '-i', exported))).toContain('team/files:1');
    expect(await dk('run', '--rm', 'team/files:1', 'cat', '/hello')).toBe(marker);
    expect(await dk('image', 'inspect', '--format', '{{.Id}}', 'team/files:1')).toBe(imageId);
    await dk('rmi', '-f', 'team/files:1');
  });

  it('pull into a layout directory, push it under another name (same digest); tag; docker pulls both', async () => {
    const layout = join(dir, 'layout') + '/';
    const pulled = JSON.parse(await omni('f3', 'images', 'pull', 'team/files:1', '-o', layout, '--json')) as { format: string; digest: string };
    expect(pulled).toMatchObject({ format: 'oci-layout-dir', digest });
    expect(JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')).manifests[0].annotations['io.containerd.image.name']).toBe('team/files:1');
    const pushed = JSON.parse(await omni('f1', 'images', 'push', 'copies/files:2', layout, '--json')) as { images: { repository: string; digest: string; tags: string[] }[]; blobsUploaded: number };
    expect(pushed.images).toEqual([{ repository: 'copies/files', digest, tags: ['2'] }]);
    expect(pushed.blobsUploaded).toBe(0); // every blob is in the cluster already: mounted
    expect(await omni('f2', 'images', 'tag', 'team/files:1', 'tagged/files:stable')).toContain(`tagged tagged/files:stable → team/files:1 (${digest})`);
    const ls = JSON.parse(await omni('f3', 'images', 'ls', '--json')) as { images: { repository: string; tag: string; digest: string }[] };
    expect(ls.images.filter((i) => i.digest === digest).map((i) => `${i.repository}:${i.tag}`).sort()).toEqual(['copies/files:2', 'tagged/files:stable', 'team/files:1']);
    for (const ref of ['copies/files:2', 'tagged/files:stable']) {
      await dk('pull', `${reg.f2}/${ref}`);
      expect(await dk('run', '--rm', `${reg.f2}/${ref}`, 'cat', '/hello')).toBe(marker);
      await dk('rmi', '-f', `${reg.f2}/${ref}`);
    }
    // a reference to another registry is refused, and a missing image named
    const other = await omniCli(omniEnv('f1'), ['images', 'pull', 'docker.io/library/busybox:1', '-o', join(dir, 'x.tar')]);
    expect(other.code).toBe(2);
    expect(other.stderr).toContain('names the registry docker.io');
    const missing = await omniCli(omniEnv('f1'), ['images', 'export', 'team/nothing:1', '-o', join(dir, 'x.tar')]);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('no image team/nothing:1');
    expect(existsSync(join(dir, 'x.tar'))).toBe(false);
  });

  it.skipIf(skopeoMissing)('skopeo reads an export as an oci-archive; a layout naming only a tag is pushed with omni images push', async () => {
    const exported = join(dir, 'exported.tar');
    const inspected = JSON.parse((await run('skopeo', ['inspect', `oci-archive:${exported}`], { timeout: 60_000 })).stdout) as { Digest: string };
    expect(inspected.Digest).toBe(digest);
    const sk = join(dir, 'sk');
    await run('skopeo', ['copy', `oci-archive:${exported}`, `oci:${sk}:latest`], { timeout: 120_000 });
    const refused = await omniCli(omniEnv('f1'), ['images', 'import', sk]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('no repository name for tag latest');
    expect(refused.stderr).toContain('omni images push');
    const pushed = JSON.parse(await omni('f1', 'images', 'push', 'viaskopeo/files', sk, '--json')) as { images: { repository: string; tags: string[] }[] };
    expect(pushed.images).toEqual([{ repository: 'viaskopeo/files', digest: expect.stringMatching(/^sha256:/), tags: ['latest'] }]);
  });

  it('a hostile tar is refused before anything is written outside; nothing is pushed', async () => {
    const evil = join(dir, 'evil.tar');
    const src = join(dir, 'evil-src');
    await mkdir(join(src, 'a'), { recursive: true });
    await writeFile(join(src, 'manifest.json'), '[]');
    await writeFile(join(src, 'a', 'x'), 'x');
    // tar --transform writes a member named ../escaped-by-omni-test
    await run('tar', ['-C', src, '-cf', evil, '--transform', 's,^a/x$,../escaped-by-omni-test,', 'manifest.json', 'a/x']);
    expect((await run('tar', ['-tf', evil])).stdout).toContain('../escaped-by-omni-test');
    const before = await omni('f2', 'images', 'ls', '--json');
    const r = await omniCli(omniEnv('f1'), ['images', 'import', evil]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/refused: it holds .*leaves its directory/);
    expect(existsSync(join(tmpdir(), 'escaped-by-omni-test'))).toBe(false);
    expect(await omni('f2', 'images', 'ls', '--json')).toBe(before);
  });

  it.skipIf(scriptMissing)('a progress line on a terminal (bytes, rate, time left), nothing when piped; --json is the result only', async () => {
    const out = join(dir, 'progress.tar');
    const e = omniEnv('f1');
    const cmd = `bin/omni images pull team/files:1 -o ${out}`;
    const tty = await run('script', ['-qfec', cmd, '/dev/null'], { env: e, timeout: 120_000 });
    expect(tty.stdout).toContain('\r\x1b[K');
    expect(tty.stdout).toMatch(/pulling team\/files:1 {2}[\d.]+[KM]iB \/ [\d.]+MiB \(\d+%\)/);
    expect(tty.stdout).toContain(`pulled team/files:1 ${digest}`);
    const piped = await omniCli(e, ['images', 'pull', 'team/files:1', '-o', out]);
    expect(piped.code).toBe(0);
    expect(piped.stderr).toBe('');
    expect(piped.stdout).not.toContain('\x1b');
    const json = await omniCli(e, ['images', 'pull', 'team/files:1', '-o', out, '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ digest, output: out, format: 'oci-archive' });
    expect(json.stderr).toBe('');
  });
});

describe.skipIf(skopeoMissing)('omni registry ca: skopeo trusts a registry served over HTTPS with the cluster CA', () => {
  let c: LocalCluster | undefined;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'omni-registry-ca-'));
  });
  afterAll(async () => {
    await c?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  it('prints the CA that signs the registry certificate and says where docker wants it', async () => {
    c = await LocalCluster.create({ flags: [...TEST_FLAGS, '--registry-tls'] });
    await c.init('t1');
    const env = { ...process.env, OMNI_ADDR: c.nodes.get('t1')!.apiUrl, OMNI_TOKEN: c.adminToken, OMNI_CONFIG: '/nonexistent/omni.json' };
    const client = c.client('t1');
    const url = await waitFor('the registry', async () => (await client.get<{ url: string }>('/v1/registry')).url, 30_000);
    client.close();
    expect(url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const address = url.slice('https://'.length);
    const text = await omniCli(env, ['registry', 'ca']);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
    expect(text.stdout).toBe(await readFile(join(c.dataDir('t1'), 'tls', 'ca.crt'), 'utf8').then((s) => (s.endsWith('\n') ? s : s + '\n')));
    expect(text.stderr).toContain(`/etc/docker/certs.d/${address}/ca.crt`);
    const json = JSON.parse((await omniCli(env, ['registry', 'ca', '--json'])).stdout) as { dockerPath: string; registry: { tls: boolean }; fingerprintSha256: string };
    expect(json).toMatchObject({ dockerPath: `/etc/docker/certs.d/${address}/ca.crt`, registry: { tls: true } });
    const certs = join(dir, 'certs');
    await mkdir(certs);
    expect((await omniCli(env, ['registry', 'ca', '-o', join(certs, 'ca.crt')])).code).toBe(0);

    // an image to copy: a small OCI layout
    const layout = join(dir, 'layout');
    await mkdir(join(layout, 'blobs', 'sha256'), { recursive: true });
    const put = async (b: Buffer) => {
      await writeFile(join(layout, 'blobs', 'sha256', sha(b).slice(7)), b);
      return sha(b);
    };
    const config = Buffer.from(JSON.stringify({ os: 'linux', architecture: 'amd64', rootfs: { type: 'layers', diff_ids: [] } }));
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: await put(config), size: config.length }, layers: [] }));
    await writeFile(join(layout, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: await put(manifest), size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': '1' } }] }));
    await writeFile(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    const creds = `x:${c.adminToken}`;
    // without the CA: skopeo refuses the certificate
    const untrusted = await run('skopeo', ['copy', '--dest-creds', creds, `oci:${layout}:1`, `docker://${address}/ca/test:1`], { timeout: 60_000 }).then(() => 'copied', (e: Error) => e.message);
    expect(untrusted).toMatch(/x509|certificate/);
    // with it: verified, copied
    await run('skopeo', ['copy', '--dest-creds', creds, '--dest-cert-dir', certs, `oci:${layout}:1`, `docker://${address}/ca/test:1`], { timeout: 60_000 });
    const listed = await omniCli(env, ['images', 'ls', '--json']);
    expect((JSON.parse(listed.stdout) as { images: { repository: string; digest: string }[] }).images).toContainEqual(expect.objectContaining({ repository: 'ca/test', digest: sha(manifest) }));
  });
});
