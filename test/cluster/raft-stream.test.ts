// Hostile input on /omni/raft/1.0.0 from a peer that does hold the network key: garbage,
// oversized frames and spoofed senders are rejected and the node keeps working.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { multiaddr } from '@multiformats/multiaddr';
import { LocalCluster } from '../../node/local-cluster.js';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { networkKeyFromJoinToken } from '../../node/api/tokens.js';
import { RAFT_PROTOCOL } from '../../node/raft/raft-transport.js';
import { encodeFrame } from '../../protocol/framing.js';
import { encodeRaftMessage } from '../../protocol/codec.js';
import { MessageType, emptyMessage } from '../../protocol/raft/types.js';
import { TEST_FLAGS, put, get, waitFor } from './helpers.js';

describe('raft protocol stream hardening', () => {
  let c: LocalCluster;
  let attacker: OmniHost;
  beforeAll(async () => {
    c = await LocalCluster.create({ flags: TEST_FLAGS });
    await c.init('g1', ['--voters', '1']);
    attacker = await createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey: networkKeyFromJoinToken(c.joinToken), listen: ['/ip4/127.0.0.1/tcp/0'] });
  });
  afterAll(async () => {
    await attacker?.stop();
    await c?.destroy();
  });

  const rejections = () => c.nodes.get('g1')!.lines.filter((l) => l.includes('raft: rejected stream')).length;

  /** Sends `bytes` on a new raft stream; the node must reset that stream and log one rejection. */
  async function sendAndExpectReset(bytes: Uint8Array): Promise<void> {
    const before = rejections();
    const stream = await attacker.dialProtocol(multiaddr(c.joinAddr), RAFT_PROTOCOL);
    stream.send(bytes);
    // Nothing is ever sent back on a raft stream: reading ends only when the node aborts it.
    const outcome = await Promise.race([
      (async () => {
        for await (const _ of stream) {
          return 'data';
        }
        return 'closed';
      })().catch(() => 'reset'),
      new Promise<string>((r) => setTimeout(() => r('still open after 10 s'), 10_000)),
    ]);
    expect(['reset', 'closed']).toContain(outcome);
    await waitFor('the rejection logged', () => rejections() === before + 1);
    stream.abort(new Error('test done'));
  }

  it('rejects garbage, oversized frames and spoofed senders without crashing', async () => {
    await sendAndExpectReset(encodeFrame(new Uint8Array([0xff, 0xfe, 0x00, 0x13, 0x37, 0x99, 0x42])));
    await sendAndExpectReset(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x7f])); // claims a ~34 GB frame
    const spoofed = emptyMessage(MessageType.Vote, 'someone-else', attacker.peerId.toString(), 99);
    await sendAndExpectReset(encodeFrame(encodeRaftMessage(spoofed)));
    const self = multiaddr(c.joinAddr).getComponents().find((x) => x.name === 'p2p')!.value!;
    // Term 0 means "local" to the Raft core: from the network it would skip every term check.
    const termless = { ...emptyMessage(MessageType.App, attacker.peerId.toString(), self, 0), commit: 99 };
    await sendAndExpectReset(encodeFrame(encodeRaftMessage(termless)));
    // Well-formed, right ids, a real term — but the sender is not a member of the cluster.
    await sendAndExpectReset(encodeFrame(encodeRaftMessage(emptyMessage(MessageType.Heartbeat, attacker.peerId.toString(), self, 50))));
    await waitFor('five rejections logged', () => c.nodes.get('g1')!.lines.filter((l) => l.includes('raft: rejected stream')).length >= 5);
    const lines = c.nodes.get('g1')!.lines.filter((l) => l.includes('raft: rejected stream')).join('\n');
    expect(lines).toMatch(/exceeds the .*-byte limit/);
    expect(lines).toMatch(/claims from=someone-else/);
    expect(lines).toMatch(/App without a term/);
    expect(lines).toMatch(/not a member of this cluster/);
    const status = c.client('g1');
    expect((await status.get<{ term: number }>('/v1/status')).term).toBeLessThan(50);
    status.close();
    expect(c.nodes.get('g1')!.running).toBe(true);
    await put(c, 'g1', 'still/alive', 'yes');
    expect((await get(c, 'g1', 'still/alive')).value).toBe('yes');
  });
});
