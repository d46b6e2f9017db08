// Failure detection input: every node publishes a small heartbeat with its load on a gossipsub
// topic; every node records when it last heard from each peer. The leader's autopilot turns
// long silences into "down" (protocol/cluster/autopilot.ts).
import type { OmniHost } from '../p2p/host.js';
import { currentLoad } from '../apps/resources.js';
import type { Logger } from '../logger.js';
import { COMMAND_SCHEMA, readSchema } from '../../protocol/cluster/schema.js';

export const DEFAULT_HEARTBEAT_INTERVAL_MS = 1000;
const MAX_HEARTBEAT_BYTES = 4096;

export interface Heartbeat {
  id: string;
  sentAtMs: number;
  load1: number;
  memFreeBytes: number;
  applied: number;
  term: number;
  /** The command schema this node speaks (protocol/cluster/schema.ts); absent from older nodes: 1. */
  schema?: number;
}

export interface PeerLiveness {
  lastSeenMs: number;
  load1: number;
  memFreeBytes: number;
  applied: number;
  /** Its command schema, once heard (undefined: not heard from). */
  schema?: number;
}

export class Heartbeats {
  readonly seen = new Map<string, PeerLiveness>();
  private timer: NodeJS.Timeout | undefined;
  private readonly topic: string;

  constructor(
    private readonly host: OmniHost,
    clusterId: string,
    private readonly intervalMs: number,
    private readonly progress: () => { applied: number; term: number },
    private readonly log: Logger,
  ) {
    this.topic = `/omni/heartbeat/1/${clusterId}`;
  }

  start(): void {
    const pubsub = this.host.services.pubsub;
    pubsub.subscribe(this.topic);
    pubsub.addEventListener('message', (evt) => {
      const msg = evt.detail;
      if (msg.topic !== this.topic || msg.data.length > MAX_HEARTBEAT_BYTES) return;
      const from = msg.type === 'signed' ? msg.from.toString() : undefined;
      try {
        const hb = JSON.parse(new TextDecoder().decode(msg.data)) as Heartbeat;
        // Signed messages prove the sender; a heartbeat may only speak for its own node.
        if (typeof hb.id !== 'string' || hb.id !== from) return;
        this.seen.set(hb.id, { lastSeenMs: Date.now(), load1: Number(hb.load1) || 0, memFreeBytes: Number(hb.memFreeBytes) || 0, applied: Number(hb.applied) || 0, schema: readSchema(hb.schema) });
      } catch {
        this.log.debug(`heartbeat: ignored a malformed message from ${from}`);
      }
    });
    this.timer = setInterval(() => this.publish(), this.intervalMs);
    this.publish();
  }

  stop(): void {
    clearInterval(this.timer);
    try {
      this.host.services.pubsub.unsubscribe(this.topic);
    } catch {
      // already stopped
    }
  }

  /** Treat a peer as just heard from (e.g. when this node becomes leader, to give grace). */
  touch(id: string): void {
    const prev = this.seen.get(id);
    this.seen.set(id, { lastSeenMs: Date.now(), load1: prev?.load1 ?? 0, memFreeBytes: prev?.memFreeBytes ?? 0, applied: prev?.applied ?? 0, ...(prev?.schema !== undefined ? { schema: prev.schema } : {}) });
  }

  private publish(): void {
    const { applied, term } = this.progress();
    const hb: Heartbeat = { id: this.host.peerId.toString(), sentAtMs: Date.now(), ...currentLoad(), applied, term, schema: COMMAND_SCHEMA };
    this.host.services.pubsub.publish(this.topic, new TextEncoder().encode(JSON.stringify(hb))).catch((err: Error) => {
      this.log.debug(`heartbeat: publish failed: ${err.message}`);
    });
  }
}
