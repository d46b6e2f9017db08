// The replicated key-value state machine the simulator runs on top of Raft.
// Commands carry (client, seq) so a retried command is applied at most once (Raft thesis §6.3):
// a duplicate gets the cached answer, an older one is ignored.

import type { KvOp, KvResult } from './linearizability.js';

export interface KvCommand {
  client: number;
  seq: number;
  op: KvOp;
}

export type KvApplyResult = { kind: 'result'; result: KvResult } | { kind: 'stale' };

interface Session {
  seq: number;
  result: KvResult;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export function encodeCommand(cmd: KvCommand): Uint8Array {
  return encoder.encode(JSON.stringify(cmd));
}

export function decodeCommand(data: Uint8Array): KvCommand {
  return JSON.parse(decoder.decode(data)) as KvCommand;
}

export class KvStateMachine {
  private data = new Map<string, string>();
  private sessions = new Map<number, Session>();

  get(key: string): string | null {
    return this.data.get(key) ?? null;
  }

  apply(cmd: KvCommand): KvApplyResult {
    const session = this.sessions.get(cmd.client);
    if (session && cmd.seq === session.seq) return { kind: 'result', result: session.result };
    if (session && cmd.seq < session.seq) return { kind: 'stale' };
    const result = this.execute(cmd.op);
    this.sessions.set(cmd.client, { seq: cmd.seq, result });
    return { kind: 'result', result };
  }

  private execute(op: KvOp): KvResult {
    switch (op.kind) {
      case 'put':
        this.data.set(op.key, op.value);
        return { kind: 'put-ok' };
      case 'get':
        return { kind: 'get-ok', value: this.get(op.key) };
      case 'cas': {
        const current = this.get(op.key);
        if (current !== op.expected) return { kind: 'cas-ok', swapped: false };
        this.data.set(op.key, op.value);
        return { kind: 'cas-ok', swapped: true };
      }
    }
  }

  snapshot(): Uint8Array {
    return encoder.encode(JSON.stringify({ data: [...this.data], sessions: [...this.sessions] }));
  }

  restore(bytes: Uint8Array): void {
    if (bytes.byteLength === 0) {
      this.data = new Map();
      this.sessions = new Map();
      return;
    }
    const parsed = JSON.parse(decoder.decode(bytes)) as { data: [string, string][]; sessions: [number, Session][] };
    this.data = new Map(parsed.data);
    this.sessions = new Map(parsed.sessions);
  }
}
