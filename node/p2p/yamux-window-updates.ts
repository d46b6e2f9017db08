// Yamux window updates sent the way Go's yamux (and the spec's reference implementation) sends
// them: once half of a stream's receive window has been used, not after every data frame.
//
// @chainsafe/libp2p-yamux 8.0.1 answers every data frame it receives with a window-update frame
// as soon as any of the window is used. For Omni's traffic — many small messages on long-lived
// streams (Raft appends and their answers, RPCs) — that doubles the frames: each update is its
// own muxer frame, its own noise encryption and its own socket write, on both nodes. Measured on
// a 3-node loopback cluster at one write at a time: a third of the leader's socket writes were
// these 30-byte frames (`test/bench/write-latency-diag.ts`, README: Benchmarks).
//
// The sender may send until its window is spent, so updating at half the window never stalls
// it (the remote still has the other half to send while the update travels); a stream that is
// opening (SYN/ACK flags to send) or paused by backpressure keeps the library's behaviour. The
// library's window auto-tuning still runs at every update it sends. Peers of any yamux version
// interoperate with this: when updates come is the receiver's choice.
import { YamuxStream, StreamState } from '@chainsafe/libp2p-yamux/stream';

/** The fields of a stream the rule reads (public on the class; typed here to keep the patch narrow). */
interface WindowFields {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

/** Whether a window update can wait: the stream is open both ways and less than half its receive window is used. */
export function windowUpdateCanWait(s: WindowFields): boolean {
  const opening = s.state === StreamState.Init || s.state === StreamState.SYNReceived;
  if (opening || s.state === StreamState.Paused) return false;
  return s.recvWindowCapacity > s.recvWindow / 2;
}

let installed = false;

/** Installs the rule on every yamux stream of this process (once; the host calls it before creating libp2p). */
export function installLazyWindowUpdates(): void {
  if (installed) return;
  installed = true;
  const proto = YamuxStream.prototype as unknown as WindowFields & { sendWindowUpdate(): void };
  const send = proto.sendWindowUpdate;
  if (typeof send !== 'function') throw new Error('@chainsafe/libp2p-yamux: YamuxStream.sendWindowUpdate is gone (a new major version?): review node/p2p/yamux-window-updates.ts');
  proto.sendWindowUpdate = function (this: WindowFields & { sendWindowUpdate(): void }) {
    if (windowUpdateCanWait(this)) return;
    send.call(this);
  };
}
