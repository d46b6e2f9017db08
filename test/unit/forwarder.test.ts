// Forwarded proposals: the version-3 frame (commands as bytes after a JSON head), and the
// forwarder between real libp2p hosts — a member of this version and a leader of this version,
// a leader that speaks only version 2 (a rolling upgrade), and a member of version 2.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { generateKeyPair } from '@libp2p/crypto/keys';
import { createHost, type OmniHost } from '../../node/p2p/host.js';
import { FORWARD_PROTOCOL, FORWARD_PROTOCOL_V2, Forwarder } from '../../node/p2p/forwarder.js';
import { readFrames, sendFrame } from '../../node/p2p/framed-stream.js';
import { silentLogger } from '../../node/logger.js';
import { ForwardWireError, decodeForwardBatch, encodeForwardBatch, type ForwardRequest } from '../../protocol/cluster/forward-wire.js';
import { MAX_COMMAND_BYTES } from '../../protocol/cluster/state.js';
import type { WireCaller } from '../../node/cluster/caller.js';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('forward frame (version 3)', () => {
  it('round-trips batches of commands of every size, with their callers', () => {
    const sizes = [0, 1, 127, 128, 4095, 4096, 70_000, MAX_COMMAND_BYTES];
    for (const n of [1, 2, 5]) {
      const reqs: ForwardRequest[] = Array.from({ length: n }, (_, i) => ({ id: 1000 * n + i, caller: i % 2 ? { kind: 'self' } : { kind: 'admin', token: `t${i}` }, data: randomBytes(sizes[(n + i) % sizes.length]) }));
      const back = decodeForwardBatch(encodeForwardBatch(reqs), 256, MAX_COMMAND_BYTES);
      expect(back.map((r) => [r.id, r.caller, hex(r.data)])).toEqual(reqs.map((r) => [r.id, r.caller, hex(r.data)]));
      for (const r of back) expect(Object.getPrototypeOf(r.data)).toBe(Uint8Array.prototype);
    }
    // a head longer than 127 bytes (a varint of two bytes)
    const many = Array.from({ length: 40 }, (_, i) => ({ id: i, caller: { kind: 'self' }, data: new Uint8Array([i]) }));
    expect(decodeForwardBatch(encodeForwardBatch(many), 256, MAX_COMMAND_BYTES).map((r) => r.data[0])).toEqual(many.map((r) => r.data[0]));
  });

  it('a large command alone is a view of its frame; commands that share a frame are copies', () => {
    const big = randomBytes(10_000);
    const frame = encodeForwardBatch([{ id: 1, caller: null, data: big }]);
    const [alone] = decodeForwardBatch(frame, 256, MAX_COMMAND_BYTES);
    expect(alone.data.buffer).toBe(frame.buffer);
    const shared = encodeForwardBatch([{ id: 1, caller: null, data: big }, { id: 2, caller: null, data: big }]);
    for (const r of decodeForwardBatch(shared, 256, MAX_COMMAND_BYTES)) expect(r.data.buffer).not.toBe(shared.buffer);
    // a small one alone is copied too (a small frame may be a view into Buffer's shared pool)
    const small = encodeForwardBatch([{ id: 1, caller: null, data: new Uint8Array([1, 2, 3]) }]);
    expect(decodeForwardBatch(small, 256, MAX_COMMAND_BYTES)[0].data.buffer).not.toBe(small.buffer);
  });

  it('refuses malformed frames', () => {
    const ok = encodeForwardBatch([{ id: 7, caller: { kind: 'self' }, data: new Uint8Array([1, 2, 3]) }]);
    const head = (v: unknown, tail: number[] = []) => {
      const h = new TextEncoder().encode(JSON.stringify(v));
      return new Uint8Array([h.length, ...h, ...tail]);
    };
    const bad: [Uint8Array, RegExp][] = [
      [new Uint8Array(0), /bad head length/],
      [new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01]), /bad head length/],
      [new Uint8Array([50, 1, 2]), /past the end/],
      [head(['x']), /a request is/],
      [new Uint8Array([2, 0x7b, 0x7b]), /not JSON/],
      [new Uint8Array([2, 0xc3, 0x28]), /not JSON/],
      [head([]), /1 to 2 requests/],
      [head([[1, null, 0], [2, null, 0], [3, null, 0]]), /1 to 2 requests/],
      [head([[1.5, null, 0]]), /bad request id/],
      [head([['1', null, 0]]), /bad request id/],
      [head([[1, null, -1]]), /0 to 100 bytes/],
      [head([[1, null, 101]]), /0 to 100 bytes/],
      [head([[1, null, 4]], [1, 2, 3]), /past the end/],
      [head([[1, null, 2]], [1, 2, 3]), /after the last command/],
      [ok.subarray(0, ok.length - 1), /past the end/],
      [new Uint8Array([...ok, 0]), /after the last command/],
    ];
    for (const [frame, message] of bad) {
      expect(() => decodeForwardBatch(frame, 2, 100), hex(frame).slice(0, 40)).toThrow(ForwardWireError);
      expect(() => decodeForwardBatch(frame, 2, 100), hex(frame).slice(0, 40)).toThrow(message);
    }
  });
});

/** `d` with a first byte the test leader does not refuse (random bytes start with 0xff 1 time in 256: a CI failure). */
function notRefused(d: Buffer): Buffer {
  d[0] &= 0x7f;
  return d;
}

describe('the forwarder between hosts', () => {
  let member: OmniHost;
  let leader: OmniHost;
  let oldLeader: OmniHost;
  const seen: { from: string; data: string; caller: WireCaller }[] = [];
  let fwd: Forwarder;

  beforeAll(async () => {
    const networkKey = randomBytes(32);
    const host = async () => createHost({ privateKey: await generateKeyPair('Ed25519'), networkKey, listen: ['/ip4/127.0.0.1/tcp/0'] });
    [member, leader, oldLeader] = await Promise.all([host(), host(), host()]);
    await member.dial(leader.getMultiaddrs()[0]);
    await member.dial(oldLeader.getMultiaddrs()[0]);
    const serving = new Forwarder(leader, async (from, data, caller) => {
      seen.push({ from, data: hex(data), caller });
      if (data[0] === 0xff) throw Object.assign(new Error('refused'), {});
      return { ok: true, value: { bytes: data.byteLength } };
    }, silentLogger);
    await serving.start();
    // A leader of the version before: only /omni/forward/2.0.0, base64 in JSON.
    await oldLeader.handle(FORWARD_PROTOCOL_V2, async (stream) => {
      for await (const frame of readFrames(stream, 64 * 1024 * 1024)) {
        const reqs = JSON.parse(new TextDecoder().decode(frame)) as { id: number; data: string; caller: WireCaller }[];
        for (const r of reqs) seen.push({ from: 'old', data: Buffer.from(r.data, 'base64').toString('hex'), caller: r.caller });
        await sendFrame(stream, new TextEncoder().encode(JSON.stringify(reqs.map((r) => ({ id: r.id, ok: true, result: { ok: true, value: { old: Buffer.from(r.data, 'base64').length } } })))));
      }
    });
    fwd = new Forwarder(member, async () => ({ ok: true }), silentLogger);
  });

  afterAll(async () => {
    await fwd?.stop();
    await Promise.all([member, leader, oldLeader].map((h) => h?.stop()));
  });

  it('a member forwards to a leader of its version over version 3: bytes and callers arrive as sent', async () => {
    seen.length = 0;
    // the serving side refuses a command whose first byte is 0xff: random ones must not start so
    const datas = [notRefused(randomBytes(10)), notRefused(randomBytes(1024 * 1024)), notRefused(randomBytes(5000)), new Uint8Array([0xff, 1])];
    const callers: WireCaller[] = [{ kind: 'self' }, { kind: 'admin', token: 'secret' }, { kind: 'self' }, { kind: 'self' }];
    const results = await Promise.allSettled(datas.map((d, i) => fwd.propose(leader.peerId.toString(), d, callers[i])));
    expect(results.slice(0, 3).map((r) => (r.status === 'fulfilled' ? r.value : r.reason))).toEqual(datas.slice(0, 3).map((d) => ({ ok: true, value: { bytes: d.byteLength } })));
    expect(results[3]).toMatchObject({ status: 'rejected', reason: { code: 'INTERNAL', message: 'refused' } });
    expect(seen.map((s) => [s.from, s.data, s.caller])).toEqual(datas.map((d, i) => [member.peerId.toString(), hex(d), callers[i]]));
    const conns = member.getConnections(leader.peerId);
    expect(conns.flatMap((c) => c.streams.map((s) => s.protocol))).toContain(FORWARD_PROTOCOL);
  });

  it('many large proposals at once travel in frames within the frame limit', async () => {
    seen.length = 0;
    const datas = Array.from({ length: 12 }, (_, i) => new Uint8Array(MAX_COMMAND_BYTES - 1000).fill(i + 1));
    const results = await Promise.all(datas.map((d) => fwd.propose(leader.peerId.toString(), d, { kind: 'self' })));
    expect(results).toEqual(datas.map((d) => ({ ok: true, value: { bytes: d.byteLength } })));
    expect(seen.map((x) => x.data.slice(0, 2))).toEqual(datas.map((d) => hex(d.subarray(0, 1))));
  });

  it('a member speaks version 2 to a leader that has only it', async () => {
    seen.length = 0;
    const d = randomBytes(300_000);
    expect(await fwd.propose(oldLeader.peerId.toString(), d, { kind: 'self' })).toEqual({ ok: true, value: { old: d.byteLength } });
    expect(seen).toEqual([{ from: 'old', data: hex(d), caller: { kind: 'self' } }]);
  });

  it('a leader still serves a member of version 2', async () => {
    seen.length = 0;
    const stream = await member.dialProtocol(leader.peerId, FORWARD_PROTOCOL_V2);
    const d = notRefused(randomBytes(2000));
    await sendFrame(stream, new TextEncoder().encode(JSON.stringify([{ id: 9, data: d.toString('base64'), caller: { kind: 'self' } }])));
    for await (const frame of readFrames(stream, 1024 * 1024)) {
      expect(JSON.parse(new TextDecoder().decode(frame))).toEqual([{ id: 9, ok: true, result: { ok: true, value: { bytes: 2000 } } }]);
      break;
    }
    expect(seen).toEqual([{ from: member.peerId.toString(), data: hex(d), caller: { kind: 'self' } }]);
    await stream.close().catch(() => undefined);
  });
});
