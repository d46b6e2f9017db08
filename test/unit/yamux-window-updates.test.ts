// Yamux window updates at half the window (node/p2p/yamux-window-updates.ts): the rule, and the
// library's own sendWindowUpdate running under it (what it sends, and when it stays quiet).
import { describe, expect, it } from 'vitest';
import { YamuxStream, StreamState } from '@chainsafe/libp2p-yamux/stream';
import { installLazyWindowUpdates, windowUpdateCanWait } from '../../node/p2p/yamux-window-updates.js';

const WINDOW = 256 * 1024;

describe('yamux window updates', () => {
  it('wait while less than half the window is used, on an open stream only', () => {
    expect(windowUpdateCanWait({ state: StreamState.Established, recvWindow: WINDOW, recvWindowCapacity: WINDOW - 100 })).toBe(true);
    expect(windowUpdateCanWait({ state: StreamState.SYNSent, recvWindow: WINDOW, recvWindowCapacity: WINDOW / 2 + 1 })).toBe(true);
    expect(windowUpdateCanWait({ state: StreamState.Established, recvWindow: WINDOW, recvWindowCapacity: WINDOW / 2 })).toBe(false);
    // a stream being opened still answers with its flags; a paused one keeps the library's way
    expect(windowUpdateCanWait({ state: StreamState.SYNReceived, recvWindow: WINDOW, recvWindowCapacity: WINDOW - 1 })).toBe(false);
    expect(windowUpdateCanWait({ state: StreamState.Init, recvWindow: WINDOW, recvWindowCapacity: WINDOW - 1 })).toBe(false);
    expect(windowUpdateCanWait({ state: StreamState.Paused, recvWindow: WINDOW, recvWindowCapacity: 0 })).toBe(false);
  });

  it('the library sends one update for the used half instead of one per data frame', () => {
    installLazyWindowUpdates();
    const frames: { type: number; length: number }[] = [];
    // the library's method on a stand-in stream: the fields it reads, and its frame sender
    const s = {
      state: StreamState.Established,
      recvWindow: WINDOW,
      recvWindowCapacity: WINDOW,
      maxStreamWindowSize: 16 * 1024 * 1024,
      epochStart: Date.now(),
      streamId: 1,
      getSendFlags: () => 0,
      getRTT: () => -1,
      sendFrame: (f: { type: number; header?: unknown; length: number }) => frames.push({ type: f.type, length: f.length }),
    };
    const update = (YamuxStream.prototype as unknown as { sendWindowUpdate(this: typeof s): void }).sendWindowUpdate;
    // 1,000 data frames of 200 bytes (Raft messages, say): each takes from the window, as handleData does
    for (let i = 0; i < 1000; i++) {
      s.recvWindowCapacity -= 200;
      update.call(s);
    }
    // 200,000 bytes used: updates only when more than half was used, each for what was used
    expect(frames.length).toBe(1);
    expect(frames[0].length).toBeGreaterThanOrEqual(WINDOW / 2);
    expect(s.recvWindowCapacity).toBeGreaterThan(WINDOW / 2);
  });
});
