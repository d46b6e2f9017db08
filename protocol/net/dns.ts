// The service-name DNS of one network (pure; node/net/dns-server.ts serves it). Each network has
// a DNS address of its own (a VIP allocated like a service's, for the reserved alias `_dns`, which
// no service can take), so a query needs no source to tell which network asks: the answer is the
// names of the network whose DNS address was asked. A name is a service's alias, bare (`api`), or
// with the network (`api.shop`) or the cluster domain (`api.shop.omni`); A answers its VIP (TTL
// 5 s, as the hosts files follow moves within a second); a name of the network that is not a
// service is NXDOMAIN; AAAA and other types of a service's name are empty (NOERROR, no IPv6
// VIPs). Every other name is forwarded to the host's resolvers (the caller does that).
import type { Packet, Question } from 'dns-packet';

/** The reserved alias whose VIP is a network's DNS address (aliases are [a-z0-9-]: never this). */
export const DNS_ALIAS = '_dns';
/** The cluster's DNS domain: `alias.network.omni`. */
export const DNS_DOMAIN = 'omni';
export const DNS_TTL_S = 5;
/** A query this large or larger is not read (a stub resolver's is a few dozen bytes). */
export const MAX_DNS_QUERY_BYTES = 4096;

export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;

export type DnsDecision = { kind: 'answer'; response: Packet } | { kind: 'forward' } | { kind: 'drop' };

/** The alias a query name stands for on `network` (undefined: not a name of this network's domain). */
export function aliasOf(name: string, network: string): string | undefined {
  const n = name.toLowerCase().replace(/\.$/, '');
  for (const suffix of [`.${network}.${DNS_DOMAIN}`, `.${network}`, '']) {
    if (suffix !== '' && !n.endsWith(suffix)) continue;
    const alias = suffix === '' ? n : n.slice(0, -suffix.length);
    if (alias !== '' && !alias.includes('.')) return alias;
  }
  return undefined;
}

/** One network of a task's view: its name and its services (alias → VIP). */
export interface ViewNetwork {
  network: string;
  names: ReadonlyMap<string, string>;
}

/**
 * What to do with a query to `network`'s DNS address, whose services are `names` (alias → VIP):
 * answer it (one question, all of this network's names), forward it (a name of no service here
 * and outside the network's domain), or drop it (not a standard query).
 */
export function decide(query: Packet, network: string, names: ReadonlyMap<string, string>): DnsDecision {
  return decideView(query, [{ network, names }]);
}

/**
 * The same for the DNS address of a task on several networks (its view, in order): `api.back`
 * and `api.back.omni` are the service of that network; a bare `api` is the first network's that
 * has it; a name in any of the networks' domains that is no service there is NXDOMAIN.
 */
export function decideView(query: Packet, view: readonly ViewNetwork[]): DnsDecision {
  if (query.type !== 'query' || (query.flags ?? 0) & 0x7800 || (query.questions?.length ?? 0) !== 1) return { kind: 'drop' };
  const q = query.questions![0] as Question;
  const n = q.name.toLowerCase().replace(/\.$/, '');
  let vip: string | undefined;
  let inDomain = false;
  for (const { network, names } of view) {
    if (!n.endsWith(`.${network}.${DNS_DOMAIN}`) && !n.endsWith(`.${network}`)) continue;
    inDomain = true;
    const alias = aliasOf(n, network);
    vip = alias === undefined ? undefined : names.get(alias);
    if (vip !== undefined) break;
  }
  if (!inDomain && !n.includes('.')) {
    for (const { names } of view) {
      vip = names.get(n);
      if (vip !== undefined) break;
    }
  }
  if (vip === undefined && !inDomain) return { kind: 'forward' };
  const base: Packet = {
    type: 'response',
    id: query.id ?? 0,
    // QR, AA (authoritative), RD copied, RA (we recurse by forwarding)
    flags: 0x8000 | 0x0400 | ((query.flags ?? 0) & 0x0100) | 0x0080,
    questions: [q],
  };
  // (dns-packet takes the response code from the low 4 bits of the flags: 3 is NXDOMAIN.)
  if (vip === undefined) return { kind: 'answer', response: { ...base, flags: (base.flags ?? 0) | RCODE_NXDOMAIN } };
  const answers = q.type === 'A' || (q.type as string) === 'ANY' ? [{ type: 'A' as const, name: q.name, ttl: DNS_TTL_S, class: 'IN' as const, data: vip }] : [];
  return { kind: 'answer', response: { ...base, answers } };
}

/** The nameservers of a resolv.conf text (IPv4 only, at most 3, as glibc reads), without `exclude`d ones. */
export function nameservers(resolvConf: string, exclude: (ip: string) => boolean): string[] {
  const out: string[] = [];
  for (const line of resolvConf.split('\n')) {
    const m = /^\s*nameserver\s+(\d{1,3}(?:\.\d{1,3}){3})\s*(?:#.*)?$/.exec(line);
    if (m && !exclude(m[1]) && !out.includes(m[1])) out.push(m[1]);
  }
  return out.slice(0, 3);
}

/** The resolv.conf a task of `network` (or of several, in order) sees: its DNS address first, then the host's resolvers, the networks' domains searched. */
export function resolvConf(network: string | readonly string[], dnsVip: string, hostServers: readonly string[]): string {
  const nets = typeof network === 'string' ? [network] : network;
  // glibc searches at most 6 domains: each network's two forms while they fit
  const search = nets.flatMap((n) => [`${n}.${DNS_DOMAIN}`, n]).slice(0, 6);
  return [`# written by omnid: service names of network ${nets.join(', ')} (see README, Service networking)`, `nameserver ${dnsVip}`, ...hostServers.slice(0, 2).map((s) => `nameserver ${s}`), `search ${search.join(' ')}`, 'options timeout:2 attempts:2', ''].join('\n');
}
