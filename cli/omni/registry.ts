// omni registry ca: the cluster CA certificate (PEM) on stdout, so docker and skopeo can trust a
// node's registry served over HTTPS (any address off loopback, or omnid --registry-tls) — instead
// of declaring it insecure. The PEM comes from the node the CLI talks to (GET /v1/registry/ca);
// where docker and skopeo look for it goes to stderr (and into --json).
import { writeFile } from 'node:fs/promises';
import { parse, printJson, UsageError } from '../common.js';
import { CONNECTION_FLAGS, CONNECTION_HELP, connect } from './connection.js';
import { images } from './images.js';

const USAGE = `usage: omni registry ca [-o FILE] [flags]
       omni registry [flags]          (the same as omni images registry)

  ca   print the cluster CA certificate (PEM), which signs every node's registry certificate.
       Docker trusts it for one registry as /etc/docker/certs.d/HOST:PORT/ca.crt (no restart
       needed), skopeo and podman as /etc/containers/certs.d/HOST:PORT/ca.crt (or
       --src-cert-dir/--dest-cert-dir DIR with DIR/ca.crt):
         omni registry ca | sudo tee /etc/docker/certs.d/10.0.0.5:5000/ca.crt
       A registry on loopback (the default 127.0.0.1:5000) is plain HTTP, which Docker accepts
       without configuration; it needs no certificate.
    -o FILE   write the PEM to FILE instead of stdout
${CONNECTION_HELP}
`;

interface CaView {
  pem: string;
  subject: string;
  fingerprintSha256: string;
  notAfter: string;
  registry: { url: string; address: string; tls: boolean } | null;
  dockerPath?: string;
  containersPath?: string;
}

export async function registry(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { ...CONNECTION_FLAGS, output: { type: 'string', short: 'o' } }, USAGE);
  const [sub, ...extra] = positionals;
  if (sub === undefined || sub === 'status') {
    if (values.output) throw new UsageError('-o is a flag of omni registry ca');
    return images(['registry', ...argv.filter((a) => a !== 'status')]);
  }
  if (sub !== 'ca') throw new UsageError(`unknown subcommand ${sub}\n\n${USAGE}`);
  if (extra.length > 0) throw new UsageError(`unexpected argument ${extra[0]}\n\n${USAGE}`);
  const client = connect(values);
  try {
    const r = await client.get<CaView>('/v1/registry/ca');
    if (values.output) await writeFile(values.output as string, r.pem, { mode: 0o644 });
    if (values.json) return printJson({ ...r, ...(values.output ? { file: values.output } : {}) }), 0;
    if (!values.output) process.stdout.write(r.pem.endsWith('\n') ? r.pem : r.pem + '\n');
    const reg = r.registry;
    const hint = !reg
      ? 'this node serves no registry (omnid --registry off)'
      : reg.tls
        ? `the registry ${reg.address} serves HTTPS with a certificate this CA signed: save the PEM as ${r.dockerPath} for docker, ${r.containersPath} for skopeo/podman`
        : `the registry ${reg.address} is plain HTTP on loopback (docker needs no certificate for it); registries on other addresses (or with omnid --registry-tls) serve HTTPS: docker wants the PEM as /etc/docker/certs.d/HOST:PORT/ca.crt`;
    process.stderr.write(`${values.output ? `wrote the cluster CA to ${values.output as string}; ` : ''}${r.subject.replace(/\n/g, ', ')}, SHA-256 ${r.fingerprintSha256}\n${hint}\n`);
    return 0;
  } finally {
    client.close();
  }
}
