// Virtual IPs of services: one loopback address per (network, alias), allocated deterministically
// from the names so every process on a node agrees without coordination. Pure: no I/O.
//
// Everything in 127.0.0.0/8 is local on Linux with no configuration, so the node's mesh proxy can
// listen on 127.77.x.y:PORT for every service port and a task resolves `api` to that address
// through its hosts file. Only the node itself uses its VIPs (the tunnel between nodes names
// tasks, never addresses), so two nodes may use different ranges (several nodes on one host).

export interface VipRange {
  /** First address of the range as a 32-bit number. */
  base: number;
  /** Number of addresses in the range. */
  size: number;
  cidr: string;
}

export const DEFAULT_VIP_RANGE = '127.77.0.0/16';
const LOOPBACK_NET = 127 << 24;
const LOCALHOST = ((127 << 24) | 1) >>> 0;

export function ipToNumber(ip: string): number | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const parts = m.slice(1).map(Number);
  if (parts.some((p) => p > 255)) return undefined;
  return ((parts[0] << 24) | (parts[1] << 16) | (parts[2] << 8) | parts[3]) >>> 0;
}

export function numberToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/**
 * Docker containers on a bridge network cannot reach the host's loopback: their names point at
 * addresses of this range instead, which the node puts on an interface of its own (see
 * node/net/docker-vips.ts); a container reaches them through its default gateway (the host).
 * 198.18.0.0/15 is reserved for benchmarking (RFC 2544): no real network should use it.
 */
export const DEFAULT_DOCKER_VIP_RANGE = '198.18.0.0/16';

/**
 * "127.77.0.0/16" → range. Loopback ranges (process tasks): inside 127.0.0.0/8 and never
 * containing 127.0.0.1. Docker ranges: outside 0/8, 127/8 and multicast and above. /12 to /24.
 */
export function parseVipRange(cidr: string, kind: 'loopback' | 'docker' = 'loopback'): { ok: true; range: VipRange } | { ok: false; message: string } {
  const m = /^([\d.]+)\/(\d{1,2})$/.exec(cidr.trim());
  const ip = m ? ipToNumber(m[1]) : undefined;
  const bits = m ? Number(m[2]) : NaN;
  const example = kind === 'loopback' ? DEFAULT_VIP_RANGE : DEFAULT_DOCKER_VIP_RANGE;
  if (ip === undefined || !(bits >= 12 && bits <= 24)) return { ok: false, message: `VIP range must be a CIDR like ${example} (/12 to /24), got ${cidr}` };
  const size = 2 ** (32 - bits);
  const base = ip - (ip % size);
  const first = base >>> 24;
  if (kind === 'loopback') {
    if ((base & 0xff000000) >>> 0 !== LOOPBACK_NET) return { ok: false, message: `VIP range must be inside 127.0.0.0/8 (loopback, local without configuration), got ${cidr}` };
    if (LOCALHOST >= base && LOCALHOST < base + size) return { ok: false, message: `VIP range ${cidr} contains 127.0.0.1` };
  } else if (first === 0 || first === 127 || first >= 224) {
    return { ok: false, message: `docker VIP range must be a unicast range outside 0/8 and 127/8 (containers reach it through their gateway), got ${cidr}` };
  }
  return { ok: true, range: { base, size, cidr: `${numberToIp(base)}/${bits}` } };
}

/** FNV-1a, 32 bits: a stable spread of names over the range (not a security measure). */
export function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

export const vipKey = (network: string, alias: string) => `${network}/${alias}`;

/**
 * One address per key (`network/alias`), deterministic for a given set of keys: keys are taken
 * in sorted order, each starts at its hash and probes forward past taken addresses and past the
 * addresses ending in .0 or .255. A new key can only move another key when both hash to the
 * same slot and the new one sorts first (rare: the range has 65,000 addresses by default); a
 * node rewrites its hosts files in place when that happens. Keys past the range's capacity get
 * no address (left out of the result).
 */
export function allocateVips(keys: Iterable<string>, range: VipRange): Map<string, string> {
  const out = new Map<string, string>();
  const taken = new Set<number>();
  const usable = (i: number) => {
    const last = (range.base + i) & 255;
    return last !== 0 && last !== 255;
  };
  const sorted = [...new Set(keys)].sort();
  for (const key of sorted) {
    if (taken.size >= range.size) break;
    let i = fnv1a(key) % range.size;
    let tries = 0;
    while ((taken.has(i) || !usable(i)) && tries < range.size) {
      i = (i + 1) % range.size;
      tries++;
    }
    if (tries >= range.size) break;
    taken.add(i);
    out.set(key, numberToIp(range.base + i));
  }
  return out;
}

/** Whether `ip` is an address of `range`. */
export function inRange(ip: string, range: VipRange): boolean {
  const n = ipToNumber(ip);
  return n !== undefined && n >= range.base && n < range.base + range.size;
}
