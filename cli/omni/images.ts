// omni images: the images in the cluster's registry (pushed with docker/skopeo to any node's
// /v2/); ls, inspect REF (manifest, blobs, pieces, which nodes hold each blob), rm REF (a tag,
// or a manifest by digest), gc (garbage collection), and registry (this node's /v2/ address and
// recent transfers).
import { parse, printJson, table, formatBytes, UsageError, parseDurationMs } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { exportImage, importImages, importRootfsCommand, pullImage, pushImage } from './images-transfer.js';
import { formatDuration } from './progress.js';
import { MAX_REPLICAS } from '../../protocol/registry/durability.js';

const USAGE = `usage: omni images [ls] [flags]
       omni images inspect REPOSITORY[:TAG|@DIGEST] [flags]
       omni images tag SOURCE TARGET [flags]
       omni images rm REPOSITORY[:TAG|@DIGEST] [flags]
       omni images import FILE|DIR [flags]
       omni images import-rootfs DIR|TAR REPOSITORY:TAG [--cmd CMD] [flags]
       omni images export REPOSITORY[:TAG|@DIGEST] -o FILE [--platform OS/ARCH] [flags]
       omni images push REPOSITORY[:TAG|@DIGEST] FILE|DIR [--select NAME] [flags]
       omni images pull REPOSITORY[:TAG|@DIGEST] -o PATH [--platform OS/ARCH] [flags]
       omni images gc [--dry-run] [--grace DURATION] [--keep-last N|all] [--save] [flags]
       omni images replicas [REPOSITORY [N|default]] [flags]
       omni images registry [flags]

The cluster's image registry: push with docker or skopeo to any node's /v2/ (docker login
ADDRESS with an admin token, or a pull token to only pull; omni images registry prints the
address of the node you talk to), pull from any node — or move images as files with import,
export, push and pull, no Docker needed.

  ls                list every tag: repository, tag, digest, size
  inspect REF       the manifest, its blobs with their size, pieces and the nodes holding them
  tag SRC DST       point DST (REPO[:TAG]) at the image SRC names (REPO:TAG or REPO@DIGEST);
                    another repository gets the image too, nothing is copied
  rm REF            remove a tag (REPO:TAG), or a manifest and the tags pointing to it
                    (REPO@sha256:…); the blobs stay until garbage collection
  import FILE|DIR   push every image of a docker save tarball (gzip too) or an OCI image layout
                    (a directory or a tar) under the names it gives them
  import-rootfs DIR|TAR REPO:TAG
                    a runtime base image from a root filesystem (a directory, or a tar of one):
                    one layer, no Docker or registry needed (scripts/forge-base.sh makes Forge's
                    bases this way). A directory gives a reproducible layer (sorted, fixed
                    times, root-owned, normalised modes; device files left out); a tar is kept
                    as it is. --cmd CMD: the image's default command (run with sh -c)
  export REF -o FILE
                    write the image as a tarball docker load reads (also an OCI layout that
                    skopeo reads as oci-archive:FILE); of a multi-platform image, this machine's
                    platform or --platform's
  push REF FILE|DIR push the image of a file (as for import; --select NAME when it holds several)
                    under REF
  pull REF -o PATH  write the image as an OCI layout: a tar, or a directory when PATH ends with /
                    or is one; every platform unless --platform
      --platform OS/ARCH[/VARIANT]  e.g. linux/arm64
      --registry URL    the /v2/ registry to use (default: the one of the node the CLI talks
                        to, from omni images registry; with the default loopback registry, run
                        these on that node's host)
  gc                garbage collection: removes manifests and blobs nothing references (no
                    tag, no app version the cluster keeps, no running task) and deletes their
                    copies on every node that is up. The leader also runs it on a schedule
                    (omnid --registry-gc-every, default 6h) with the saved policy
      --dry-run         list what would be removed, remove nothing
      --grace DURATION  keep anything pushed more recently than this (default: the saved
                        policy's, else 1h; 0 for none; e.g. 30s, 10m, 2h, 7d)
      --keep-last N     retention: keep only the N most recently pushed tags of each repository
                        (tags an app names stay; an app's pinned image stays whatever its tags);
                        all: keep every tag (default: the saved policy's, else all)
      --save            save --grace and --keep-last as the policy of every run (scheduled
                        ones too), then run (with --dry-run: show what it would remove)
  replicas [REPO [N|default]]
                    copies each blob of REPO must have (a push completes, and re-replication
                    restores them, at N); default: back to the node-wide omnid
                    --registry-replicas; without N, show the settings
  registry          this node's registry address, blobs held here, recent transfers from peers,
                    and on the leader the blobs being re-replicated and the GC schedule
${CONNECTION_HELP}
`;

interface ImageRow {
  repository: string;
  tag: string;
  digest: string;
  sizeBytes: number | null;
  updatedAtMs: number;
}

interface Inspect {
  repository: string;
  digest: string;
  mediaType: string;
  tags: string[];
  sizeBytes: number;
  blobs: { digest: string; sizeBytes: number | null; pieces: number | null; nodes: string[] }[];
  manifests: string[];
  platforms?: { digest: string; os?: string; architecture?: string; variant?: string }[];
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  if (s < 172800) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}


interface GcView {
  dryRun: boolean;
  saved?: boolean;
  policy?: { graceMs?: number; keepLast?: number } | null;
  graceMs: number;
  keepLast: number | null;
  removed: { tags: { repository: string; tag: string; digest: string }[]; manifests: string[]; blobs: { digest: string; sizeBytes: number }[]; links: number };
  reclaimBytes: number;
  live: { manifests: number; blobs: number };
  keptYoung: { manifests: number; blobs: number };
  nodes: { node: string; deleted: { digest: string; sizeBytes: number }[]; deletedCount: number; deletedBytes: number; kept: { live: number; recorded: number; young: number }; error?: string }[];
}

interface GcState {
  policy: { graceMs?: number; keepLast?: number; updatedAtMs: number } | null;
  lastRun: { run: number; atMs: number; node: string; scheduled: boolean; removed: { tags: number; manifests: number; blobs: number; bytes: number } } | null;
  schedule: { everyMs: number; nextAtMs?: number; lastError?: string } | null;
}

interface RegistryView {
  address: string;
  url: string;
  blobs: { count: number; bytes: number };
  replication: { replicas: number; under: number; lost: number; copying: number; copied: number; failed: number } | null;
  transfers: { digest: string; sizeBytes: number; ok: boolean; error?: string; servedBy: Record<string, number> }[];
  gc?: GcState;
}

/** The GC policy, the last run and (on the leader) the schedule, as lines. */
function gcLines(gc: GcState | undefined): string[] {
  if (!gc) return [];
  const p = gc.policy;
  const out = [`gc policy: grace ${formatDuration(p?.graceMs ?? 3_600_000)}, ${p?.keepLast !== undefined ? `keep the last ${p.keepLast} tags of each repository` : 'keep every tag'}${p ? ` (saved ${ago(p.updatedAtMs)})` : ' (defaults; omni images gc --save sets it)'}`];
  const l = gc.lastRun;
  out.push(l ? `gc last run: #${l.run} ${ago(l.atMs)} on ${l.node}${l.scheduled ? ' (scheduled)' : ''}: removed ${l.removed.tags} tags, ${l.removed.manifests} manifests, ${l.removed.blobs} blobs (${formatBytes(l.removed.bytes)})` : 'gc last run: none recorded');
  const s = gc.schedule;
  if (s) out.push(s.everyMs > 0 ? `gc schedule (this node leads): every ${formatDuration(s.everyMs)}${s.nextAtMs !== undefined ? `, next in ${formatDuration(s.nextAtMs - Date.now())}` : ''}${s.lastError ? `; last attempt failed: ${s.lastError}` : ''}` : 'gc schedule (this node leads): off (omnid --registry-gc-every)');
  return out;
}

/** PUT /v1/images/replicas from `REPO N|default`. */
function replicasRequest(repo: string, n: string): { repository: string; replicas: number | null } {
  if (n === 'default') return { repository: repo, replicas: null };
  if (!/^\d{1,2}$/.test(n) || Number(n) < 1 || Number(n) > MAX_REPLICAS) throw new UsageError(`the number of replicas must be from 1 to ${MAX_REPLICAS} (or default), got ${n}`);
  return { repository: repo, replicas: Number(n) };
}

function printGc(r: GcView): void {
  const would = r.dryRun ? 'would remove' : 'removed';
  const out: string[] = [];
  if (r.saved) out.push(`policy saved: grace ${formatDuration(r.policy?.graceMs ?? 3_600_000)}, ${r.policy?.keepLast !== undefined ? `keep the last ${r.policy.keepLast} tags` : 'keep every tag'} (scheduled runs use it too)`);
  out.push(`${r.dryRun ? 'dry run: ' : ''}grace ${formatDuration(r.graceMs)}, ${r.keepLast !== null ? `keep the last ${r.keepLast} tags` : 'every tag kept'}; live: ${r.live.manifests} manifests, ${r.live.blobs} blobs; kept as younger than the grace period: ${r.keptYoung.manifests} manifests, ${r.keptYoung.blobs} blobs`);
  for (const t of r.removed.tags) out.push(`${would} tag       ${t.repository}:${t.tag} (${t.digest.slice(0, 19)})`);
  for (const m of r.removed.manifests) out.push(`${would} manifest  ${m}`);
  for (const b of r.removed.blobs) out.push(`${would} blob      ${b.digest} ${formatBytes(b.sizeBytes)}`);
  out.push(`catalog: ${would} ${r.removed.tags.length} tags, ${r.removed.manifests.length} manifests, ${r.removed.blobs.length} blobs (${formatBytes(r.reclaimBytes)})`);
  const rows = [['NODE', r.dryRun ? 'WOULD DELETE' : 'DELETED', 'BYTES', 'KEPT LIVE', 'KEPT RECORDED', 'KEPT YOUNG', 'ERROR']];
  for (const n of r.nodes) rows.push([n.node, String(n.deletedCount), formatBytes(n.deletedBytes), String(n.kept.live), String(n.kept.recorded), String(n.kept.young), n.error ?? '']);
  process.stdout.write(out.join('\n') + '\n' + table(rows));
}

/** The body of POST /v1/images/gc from the flags (checked before any connection is made). */
function gcRequest(values: Record<string, unknown>): { dryRun: boolean; graceMs?: number; keepLast?: number | null; save?: boolean } {
  const keepLastRaw = values['keep-last'] as string | undefined;
  if (keepLastRaw !== undefined && keepLastRaw !== 'all' && !/^\d{1,6}$/.test(keepLastRaw)) throw new UsageError(`--keep-last must be a whole number (or all), got ${keepLastRaw}`);
  if (values.save && values.grace === undefined && keepLastRaw === undefined) throw new UsageError('--save saves --grace and --keep-last: give at least one');
  return {
    dryRun: values['dry-run'] === true,
    ...(values.grace !== undefined ? { graceMs: parseDurationMs(values.grace as string, '--grace') } : {}),
    ...(keepLastRaw !== undefined ? { keepLast: keepLastRaw === 'all' ? null : Number(keepLastRaw) } : {}),
    ...(values.save ? { save: true } : {}),
  };
}

const FLAGS = {
  ...CONNECTION_FLAGS,
  'dry-run': { type: 'boolean' as const },
  grace: { type: 'string' as const },
  'keep-last': { type: 'string' as const },
  save: { type: 'boolean' as const },
  output: { type: 'string' as const, short: 'o' },
  registry: { type: 'string' as const },
  platform: { type: 'string' as const },
  select: { type: 'string' as const },
  cmd: { type: 'string' as const },
};

/** Which subcommands take which of the flags above (connection flags go everywhere). */
const SUB_FLAGS: Record<string, string[]> = {
  gc: ['dry-run', 'grace', 'keep-last', 'save'],
  import: ['registry'],
  'import-rootfs': ['registry', 'cmd'],
  push: ['registry', 'select'],
  export: ['registry', 'output', 'platform'],
  pull: ['registry', 'output', 'platform'],
};

/** Positional arguments each subcommand takes: [least, most]. */
const ARITY: Record<string, [number, number, string]> = {
  ls: [0, 0, ''],
  list: [0, 0, ''],
  registry: [0, 0, ''],
  gc: [0, 0, ''],
  inspect: [1, 1, 'an image reference (REPOSITORY[:TAG|@DIGEST])'],
  rm: [1, 1, 'an image reference (REPOSITORY[:TAG|@DIGEST])'],
  remove: [1, 1, 'an image reference (REPOSITORY[:TAG|@DIGEST])'],
  tag: [2, 2, 'SOURCE and TARGET (omni images tag team/api:1.4 team/api:stable)'],
  import: [1, 1, 'one FILE or DIR (a docker save tarball or an OCI layout)'],
  export: [1, 1, 'an image reference and -o FILE'],
  'import-rootfs': [2, 2, 'DIR|TAR and REPOSITORY:TAG (omni images import-rootfs ./rootfs omni/node:24)'],
  pull: [1, 1, 'an image reference and -o PATH'],
  push: [2, 2, 'REF and FILE|DIR (omni images push team/api:1.4 api.tar)'],
  replicas: [0, 2, 'REPOSITORY [N|default]'],
};

export async function images(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS, USAGE);
  const [sub = 'ls', ...args] = positionals;
  const arity = ARITY[sub];
  if (!arity) throw new UsageError(`unknown subcommand ${sub}\n\n${USAGE}`);
  if (args.length < arity[0]) throw new UsageError(`omni images ${sub} needs ${arity[2]}\n\n${USAGE}`);
  if (args.length > arity[1]) throw new UsageError(`unexpected argument ${args[arity[1]]}\n\n${USAGE}`);
  for (const f of Object.keys(FLAGS)) {
    if (f in CONNECTION_FLAGS || values[f] === undefined) continue;
    if (!(SUB_FLAGS[sub] ?? []).includes(f)) throw new UsageError(`--${f} is not a flag of omni images ${sub}\n\n${USAGE}`);
  }
  const [ref, second] = args;
  if (sub === 'import') return importImages(ref, values);
  if (sub === 'import-rootfs') return importRootfsCommand(ref, second, values);
  if (sub === 'push') return pushImage(ref, second, values);
  if (sub === 'export') return exportImage(ref, values);
  if (sub === 'pull') return pullImage(ref, values);
  const gcBody = sub === 'gc' ? gcRequest(values) : undefined;
  const replicasBody = sub === 'replicas' && second !== undefined ? replicasRequest(ref, second) : undefined;
  const client = connect(values);
  try {
    switch (sub) {
      case 'ls':
      case 'list': {
        const r = await client.get<{ images: ImageRow[] }>('/v1/images');
        if (values.json) return printJson(r), 0;
        const rows = [['REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'PUSHED']];
        for (const i of r.images) rows.push([i.repository, i.tag, i.digest.slice(0, 19), i.sizeBytes === null ? '?' : formatBytes(i.sizeBytes), ago(i.updatedAtMs)]);
        process.stdout.write(table(rows));
        return 0;
      }
      case 'inspect': {
        const r = await client.get<Inspect>(`/v1/images/inspect?ref=${encodeURIComponent(ref)}`);
        if (values.json) return printJson(r), 0;
        const out = [`${r.repository}@${r.digest}`, `  media type  ${r.mediaType}`, `  tags        ${r.tags.join(', ') || '(none)'}`, `  size        ${formatBytes(r.sizeBytes)}`];
        if (r.platforms?.length) out.push(`  platforms   ${r.platforms.map((p) => `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`).join(', ')}`);
        for (const m of r.manifests) out.push(`  manifest    ${m}`);
        process.stdout.write(out.join('\n') + '\n');
        if (r.blobs.length > 0) {
          const rows = [['BLOB', 'SIZE', 'PIECES', 'NODES']];
          for (const b of r.blobs) rows.push([b.digest.slice(0, 19), b.sizeBytes === null ? '?' : formatBytes(b.sizeBytes), String(b.pieces ?? '?'), b.nodes.join(',') || '(none known)']);
          process.stdout.write(table(rows));
        }
        return 0;
      }
      case 'rm':
      case 'remove': {
        const r = await client.delete<{ deleted: string }>(`/v1/images?ref=${encodeURIComponent(ref)}`);
        if (values.json) return printJson(r), 0;
        process.stdout.write(`removed ${r.deleted}\n`);
        return 0;
      }
      case 'gc': {
        const r = await client.post<GcView>('/v1/images/gc', gcBody!);
        if (values.json) return printJson(r), 0;
        printGc(r);
        return r.nodes.some((n) => n.error) ? 1 : 0;
      }
      case 'tag': {
        const r = await client.post<{ source: string; target: string; digest: string }>('/v1/images/tag', { source: ref, target: second });
        if (values.json) return printJson(r), 0;
        process.stdout.write(`tagged ${r.target} → ${r.source} (${r.digest})\n`);
        return 0;
      }
      case 'replicas': {
        if (replicasBody) {
          const r = await client.put<{ repository: string; replicas: number | null; default: number }>('/v1/images/replicas', replicasBody);
          if (values.json) return printJson(r), 0;
          process.stdout.write(r.replicas === null ? `${r.repository}: back to the node-wide target (${r.default} copies of each blob)\n` : `${r.repository}: ${r.replicas} copies of each blob (pushes wait for them; re-replication restores them)\n`);
          return 0;
        }
        const r = await client.get<{ default: number; repositories: { repository: string; replicas: number; updatedAtMs: number }[] }>('/v1/images/replicas');
        const rows = ref === undefined ? r.repositories : r.repositories.filter((x) => x.repository === ref);
        if (values.json) return printJson(ref === undefined ? r : { repository: ref, replicas: rows[0]?.replicas ?? null, default: r.default }), 0;
        if (ref !== undefined) process.stdout.write(`${ref}: ${rows[0] ? `${rows[0].replicas} copies of each blob` : `the node-wide target (${r.default} copies)`}\n`);
        else {
          process.stdout.write(`node-wide target (omnid --registry-replicas of the node a push reaches, of the leader for re-replication): ${r.default}\n`);
          if (rows.length > 0) process.stdout.write(table([['REPOSITORY', 'REPLICAS', 'SET'], ...rows.map((x) => [x.repository, String(x.replicas), ago(x.updatedAtMs)])]));
        }
        return 0;
      }
      case 'registry': {
        const r = await client.get<RegistryView>('/v1/registry');
        if (values.json) return printJson(r), 0;
        process.stdout.write(`registry ${r.address} (${r.url}); ${r.blobs.count} blobs, ${formatBytes(r.blobs.bytes)} on this node\n`);
        const rep = r.replication;
        if (rep) process.stdout.write(`re-replication (this node leads): ${rep.under} blobs below their target (${rep.replicas} live copies unless their repository sets its own), ${rep.lost} with no live copy, ${rep.copying} copying; ${rep.copied} copies made, ${rep.failed} failed\n`);
        for (const line of gcLines(r.gc)) process.stdout.write(line + '\n');
        process.stdout.write(`docker login ${r.address}   # user: anything, password: an admin or pull token\n`);
        for (const t of r.transfers.slice(-10)) process.stdout.write(`  fetched ${t.digest.slice(0, 19)} ${formatBytes(t.sizeBytes)} ${t.ok ? `from ${Object.keys(t.servedBy).length} peer(s)` : `FAILED: ${t.error}`}\n`);
        return 0;
      }
      default:
        throw new UsageError(`unknown subcommand ${sub}\n\n${USAGE}`);
    }
  } finally {
    client.close();
  }
}
