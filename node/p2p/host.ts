// The libp2p host every omnid runs: TCP + pnet (pre-shared cluster key) + noise + yamux (window
// updates at half the window: node/p2p/yamux-window-updates.ts; noise frames split without an
// Error per read: node/p2p/noise-length-decoding.ts),
// with identify, ping and gossipsub. A peer without the cluster's network key fails the pnet
// handshake before noise even starts, so it cannot open any stream. pnet is our own protector
// (node/p2p/pnet-protector.ts, wire-compatible with @libp2p/pnet, without its WebAssembly cipher;
// libsodium's XSalsa20 through sodium-native, or JavaScript where that addon does not load).
import { createLibp2p, type Libp2p } from 'libp2p';
import { tcp } from '@libp2p/tcp';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify, type Identify } from '@libp2p/identify';
import { ping, type Ping } from '@libp2p/ping';
import { gossipsub, type GossipSub } from '@libp2p/gossipsub';
import { pnetProtector, encodeSwarmKey, PNET_KEY_BYTES } from './pnet-protector.js';
import { installLazyWindowUpdates } from './yamux-window-updates.js';
import { installQuietLengthDecoding } from './noise-length-decoding.js';
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import { readFile, mkdir } from 'node:fs/promises';
import { writeFileAtomic } from '../files.js';
import { join } from 'node:path';

export type OmniHost = Libp2p<{ identify: Identify; ping: Ping; pubsub: GossipSub }>;

export const NETWORK_KEY_BYTES = PNET_KEY_BYTES;
const IDENTITY_FILE = 'peer.key';
/** Connections per host: a cluster is at most a few hundred nodes. */
const MAX_CONNECTIONS = 512;

/** The pnet swarm key file format libp2p expects, built from the cluster's 32-byte network key. */
export function swarmKey(networkKey: Uint8Array): Uint8Array {
  return encodeSwarmKey(networkKey);
}

/** The node's libp2p identity, created once and kept in the data dir (mode 0600). */
export async function loadOrCreateIdentity(dataDir: string): Promise<PrivateKey> {
  const file = join(dataDir, IDENTITY_FILE);
  try {
    return privateKeyFromProtobuf(await readFile(file));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read node identity ${file}: ${(err as Error).message}`);
  }
  await mkdir(dataDir, { recursive: true });
  const key = await generateKeyPair('Ed25519');
  await writeFileAtomic(file, privateKeyToProtobuf(key), 0o600);
  return key;
}

export interface HostOptions {
  privateKey: PrivateKey;
  networkKey: Uint8Array;
  listen: string[];
}

export async function createHost(opts: HostOptions): Promise<OmniHost> {
  installLazyWindowUpdates();
  installQuietLengthDecoding();
  return createLibp2p({
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionProtector: pnetProtector({ key: opts.networkKey }),
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: MAX_CONNECTIONS },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false }),
    },
  });
}
