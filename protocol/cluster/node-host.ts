// The host other machines reach a node's published ports on.

/** The first non-loopback IPv4 address among `addrs` (multiaddrs), else loopback. */
export function nodeHost(addrs: string[]): string {
  const ips = addrs.map((a) => /^\/ip4\/(\d+\.\d+\.\d+\.\d+)\//.exec(a)?.[1]).filter((x): x is string => !!x && x !== '0.0.0.0');
  return ips.find((ip) => !ip.startsWith('127.')) ?? ips[0] ?? '127.0.0.1';
}
