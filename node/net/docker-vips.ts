// The addresses docker containers reach services on: a bridge container cannot reach the host's
// loopback (127.77.x.y), but it reaches any address of the host through its default gateway. So
// the node keeps an interface of its own (omv<hash of the range and data dir>, a bridge without ports) holding one /32 per
// service alias of the networks its docker tasks are on, and the mesh proxy listens on those
// addresses with the service's own ports (`http://api:8080` needs an address per service: the
// gateway with a port per service would not do). Needs root (CAP_NET_ADMIN) and iproute2.
//
// The host would also accept connections to these addresses from any machine that routes them
// here, so the proxy serves only sources on the host's docker bridges (and loopback).
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import type { Logger } from '../logger.js';
import { fnv1a, ipToNumber, type VipRange } from '../../protocol/net/vip.js';

const run = promisify(execFile);
const IP = ['/usr/sbin/ip', '/sbin/ip', '/usr/bin/ip', '/bin/ip'].find((p) => existsSync(p));
const CMD_TIMEOUT_MS = 5000;
/** Docker bridges are re-read at most this often (a new compose network adds a br-… bridge). */
const BRIDGES_TTL_MS = 5000;

export function dockerVipsAvailable(): { ok: true } | { ok: false; reason: string } {
  if (process.platform !== 'linux') return { ok: false, reason: 'docker service names need Linux' };
  if (process.getuid?.() !== 0) return { ok: false, reason: 'docker service names need root (omnid adds addresses on an interface of its own)' };
  if (!IP) return { ok: false, reason: 'docker service names need iproute2 (ip)' };
  return { ok: true };
}

/** The interface name (at most 15 characters): omv + a hash of the range and the owner. */
export function dockerVipInterface(range: VipRange, owner: string): string {
  return `omv${fnv1a(`${range.cidr} ${owner}`).toString(16).padStart(8, '0')}`;
}

interface AddrInfo {
  ifname: string;
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

export class DockerVips {
  readonly ifname: string;
  private current = new Set<string>();
  private linkReady = false;
  private bridges: { base: number; mask: number }[] = [];
  private bridgesAtMs = 0;

  /** `owner` (the node's data dir) keeps two nodes on one host off each other's interface. */
  constructor(
    range: VipRange,
    owner: string,
    private readonly log: Logger,
  ) {
    this.ifname = dockerVipInterface(range, owner);
  }

  private ip(args: string[]): Promise<{ stdout: string }> {
    return run(IP!, args, { timeout: CMD_TIMEOUT_MS });
  }

  /** Puts exactly `addrs` on the interface (created on first use). */
  async sync(addrs: ReadonlySet<string>): Promise<void> {
    if (addrs.size === 0 && !this.linkReady) return;
    if (!this.linkReady) {
      // A bridge with no ports rather than a dummy interface: every kernel has bridges (the one
      // this was tested on has no dummy module); local delivery is the same.
      await this.ip(['link', 'add', this.ifname, 'type', 'bridge']).catch((err: Error) => {
        if (!/exists/i.test(err.message)) throw new Error(`cannot create interface ${this.ifname}: ${err.message}`);
      });
      await this.ip(['link', 'set', this.ifname, 'up']);
      const { stdout } = await this.ip(['-j', '-4', 'addr', 'show', 'dev', this.ifname]);
      const info = JSON.parse(stdout) as AddrInfo[];
      this.current = new Set((info[0]?.addr_info ?? []).map((a) => a.local));
      this.linkReady = true;
    }
    for (const a of addrs) {
      if (this.current.has(a)) continue;
      await this.ip(['addr', 'add', `${a}/32`, 'dev', this.ifname]).catch((err: Error) => {
        if (!/exists/i.test(err.message)) throw err;
      });
      this.current.add(a);
    }
    for (const a of [...this.current]) {
      if (addrs.has(a)) continue;
      await this.ip(['addr', 'del', `${a}/32`, 'dev', this.ifname]).catch(() => undefined);
      this.current.delete(a);
    }
  }

  /** Removes the interface and its addresses (omnid stopping). */
  async remove(): Promise<void> {
    if (!this.linkReady) return;
    this.linkReady = false;
    this.current.clear();
    await this.ip(['link', 'del', this.ifname]).catch((err: Error) => this.log.debug(`mesh: removing ${this.ifname}: ${err.message}`));
  }

  /** Whether a connection from `remote` may use a docker VIP: loopback or a docker bridge's subnet. */
  async sourceAllowed(remote: string | undefined): Promise<boolean> {
    const n = remote ? ipToNumber(remote.replace(/^::ffff:/, '')) : undefined;
    if (n === undefined) return false;
    if (n >>> 24 === 127) return true;
    if (Date.now() - this.bridgesAtMs > BRIDGES_TTL_MS) await this.readBridges();
    return this.bridges.some((b) => ((n & b.mask) >>> 0) === b.base);
  }

  private async readBridges(): Promise<void> {
    try {
      const { stdout } = await this.ip(['-j', '-4', 'addr', 'show']);
      const out: { base: number; mask: number }[] = [];
      for (const i of JSON.parse(stdout) as AddrInfo[]) {
        if (!/^(docker\d*|br-[0-9a-f]+)$/.test(i.ifname)) continue;
        for (const a of i.addr_info ?? []) {
          const ip = ipToNumber(a.local);
          if (ip === undefined || !(a.prefixlen >= 8 && a.prefixlen <= 32)) continue;
          const mask = a.prefixlen === 32 ? 0xffffffff : (~(2 ** (32 - a.prefixlen) - 1)) >>> 0;
          out.push({ base: (ip & mask) >>> 0, mask });
        }
      }
      this.bridges = out;
      this.bridgesAtMs = Date.now();
    } catch (err) {
      this.log.warn(`mesh: cannot read the docker bridges: ${(err as Error).message}`);
    }
  }
}
