// omni images: the images in the cluster's registry (pushed with docker/skopeo to any node's
// /v2/); ls, inspect REF (manifest, blobs, pieces, which nodes hold each blob), rm REF (a tag,
// or a manifest by digest), gc (garbage collection), and registry (this node's /v2/ address and
// recent transfers).
import { parse, printJson, table, formatBytes, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';

const USAGE = `usage: omni images [ls] [flags]
       omni images inspect REPOSITORY[:TAG|@DIGEST] [flags]
       omni images rm REPOSITORY[:TAG|@DIGEST] [flags]
       omni images gc [--dry-run] [--grace DURATION] [--keep-last N] [flags]
       omni images registry [flags]

The cluster's image registry: push with docker or skopeo to any node's /v2/ (docker login
ADDRESS with an admin token, or a pull token to only pull; omni images registry prints the
address of the node you talk to), pull from any node.

  ls                list every tag: repository, tag, digest, size
  inspect REF       the manifest, its blobs with their size, pieces and the nodes holding them
  rm REF            remove a tag (REPO:TAG), or a manifest and the tags pointing to it
                    (REPO@sha256:…); the blobs stay until garbage collection
  gc                garbage collection: removes manifests and blobs nothing references (no
                    tag, no app version the cluster keeps, no running task) and deletes their
                    copies on every node that is up
      --dry-run         list what would be removed, remove nothing
      --grace DURATION  keep anything pushed more recently than this (default 1h; 0 for none;
                        e.g. 30s, 10m, 2h, 7d)
      --keep-last N     retention: keep only the N most recently pushed tags of each repository
                        (tags an app names stay; an app's pinned image stays whatever its tags)
  registry          this node's registry address, blobs held here, recent transfers from peers,
                    and on the leader the blobs being re-replicated
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

/** "30s", "10m", "2h", "7d", "0" → ms. */
export function parseDurationMs(s: string, flag: string): number {
  const m = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(s.trim());
  if (!m || (m[2] === undefined && m[1] !== '0')) throw new UsageError(`${flag} must be a duration such as 30s, 10m, 2h or 7d (or 0), got ${s}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[(m[2] ?? 'ms') as 'ms']!;
}

interface GcView {
  dryRun: boolean;
  graceMs: number;
  keepLast: number | null;
  removed: { tags: { repository: string; tag: string; digest: string }[]; manifests: string[]; blobs: { digest: string; sizeBytes: number }[]; links: number };
  reclaimBytes: number;
  live: { manifests: number; blobs: number };
  keptYoung: { manifests: number; blobs: number };
  nodes: { node: string; deleted: { digest: string; sizeBytes: number }[]; deletedCount: number; deletedBytes: number; kept: { live: number; recorded: number; young: number }; error?: string }[];
}

function printGc(r: GcView): void {
  const would = r.dryRun ? 'would remove' : 'removed';
  const out: string[] = [];
  out.push(`${r.dryRun ? 'dry run: ' : ''}live: ${r.live.manifests} manifests, ${r.live.blobs} blobs; kept as younger than the grace period: ${r.keptYoung.manifests} manifests, ${r.keptYoung.blobs} blobs`);
  for (const t of r.removed.tags) out.push(`${would} tag       ${t.repository}:${t.tag} (${t.digest.slice(0, 19)})`);
  for (const m of r.removed.manifests) out.push(`${would} manifest  ${m}`);
  for (const b of r.removed.blobs) out.push(`${would} blob      ${b.digest} ${formatBytes(b.sizeBytes)}`);
  out.push(`catalog: ${would} ${r.removed.tags.length} tags, ${r.removed.manifests.length} manifests, ${r.removed.blobs.length} blobs (${formatBytes(r.reclaimBytes)})`);
  const rows = [['NODE', r.dryRun ? 'WOULD DELETE' : 'DELETED', 'BYTES', 'KEPT LIVE', 'KEPT RECORDED', 'KEPT YOUNG', 'ERROR']];
  for (const n of r.nodes) rows.push([n.node, String(n.deletedCount), formatBytes(n.deletedBytes), String(n.kept.live), String(n.kept.recorded), String(n.kept.young), n.error ?? '']);
  process.stdout.write(out.join('\n') + '\n' + table(rows));
}

/** The body of POST /v1/images/gc from the flags (checked before any connection is made). */
function gcRequest(values: Record<string, unknown>): { dryRun: boolean; graceMs?: number; keepLast?: number } {
  const keepLastRaw = values['keep-last'] as string | undefined;
  if (keepLastRaw !== undefined && !/^\d{1,6}$/.test(keepLastRaw)) throw new UsageError(`--keep-last must be a whole number, got ${keepLastRaw}`);
  return {
    dryRun: values['dry-run'] === true,
    ...(values.grace !== undefined ? { graceMs: parseDurationMs(values.grace as string, '--grace') } : {}),
    ...(keepLastRaw !== undefined ? { keepLast: Number(keepLastRaw) } : {}),
  };
}

export async function images(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, 'dry-run': { type: 'boolean' }, grace: { type: 'string' }, 'keep-last': { type: 'string' } }, USAGE);
  const [sub = 'ls', ref, ...extra] = positionals;
  if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}\n\n${USAGE}`);
  if (sub !== 'gc' && (values['dry-run'] || values.grace !== undefined || values['keep-last'] !== undefined)) throw new UsageError(`--dry-run, --grace and --keep-last are flags of omni images gc\n\n${USAGE}`);
  if ((sub === 'inspect' || sub === 'rm') && !ref) throw new UsageError(`omni images ${sub} needs an image reference (REPOSITORY[:TAG|@DIGEST])\n\n${USAGE}`);
  if ((sub === 'ls' || sub === 'registry' || sub === 'gc') && ref) throw new UsageError(`unexpected argument ${ref}\n\n${USAGE}`);
  const gcBody = sub === 'gc' ? gcRequest(values) : undefined;
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
      case 'registry': {
        const r = await client.get<{ address: string; url: string; blobs: { count: number; bytes: number }; replication: { replicas: number; under: number; lost: number; copying: number; copied: number; failed: number } | null; transfers: { digest: string; sizeBytes: number; ok: boolean; error?: string; servedBy: Record<string, number> }[] }>('/v1/registry');
        if (values.json) return printJson(r), 0;
        process.stdout.write(`registry ${r.address} (${r.url}); ${r.blobs.count} blobs, ${formatBytes(r.blobs.bytes)} on this node\n`);
        const rep = r.replication;
        if (rep) process.stdout.write(`re-replication (this node leads): ${rep.under} blobs below ${rep.replicas} live copies, ${rep.lost} with no live copy, ${rep.copying} copying; ${rep.copied} copies made, ${rep.failed} failed\n`);
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
