// node/process-guard.ts: which uncaught errors omnid survives, what it logs, and that the guard,
// installed in a real process, keeps it alive or stops it with exit code 1.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import {
  ProcessGuard,
  UNCAUGHT_STORM_MAX,
  UNCAUGHT_STORM_WINDOW_MS,
  UncaughtPolicy,
  classifyUncaught,
  describeUncaught,
} from '../../node/process-guard.js';
import type { Logger } from '../../node/logger.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

function errorAt(frames: string[], message = 'boom', ctor: ErrorConstructor = Error): Error {
  const e = new ctor(message);
  e.stack = [`${e.name}: ${message}`, ...frames.map((f) => `    at ${f}`)].join('\n');
  return e;
}

// The stack of the issue 9 crash: the xsalsa20 cipher inside a libp2p socket callback.
const WASM_CRASH = errorAt(
  [
    'WASM.realloc (/srv/omni/node_modules/xsalsa20/index.js:56:19)',
    'WASM.update (/srv/omni/node_modules/xsalsa20/index.js:65:37)',
    'XSalsa20.update (/srv/omni/node_modules/xsalsa20/index.js:26:30)',
    'EventTarget.<anonymous> (file:///srv/omni/node_modules/@libp2p/pnet/dist/src/crypto.js:19:46)',
    'EventTarget.dispatchEvent (node:internal/event_target:762:26)',
    'TCPSocketMultiaddrConnection.dispatchReadBuffer (file:///srv/omni/node_modules/@libp2p/utils/dist/src/abstract-message-stream.js:514:18)',
  ],
  'WebAssembly.Memory.grow(): Maximum memory size exceeded',
  RangeError,
);

const silent = (): Logger & { lines: string[] } => {
  const lines: string[] = [];
  const push = (m: string) => lines.push(m);
  return { lines, debug: push, info: push, warn: push, error: push };
};

describe('classifyUncaught', () => {
  it('survives an error thrown in a libp2p connection callback (the issue 9 RangeError)', () => {
    expect(classifyUncaught(WASM_CRASH)).toMatchObject({ survivable: true });
    expect(classifyUncaught(errorAt(['Yamux.onData (file:///srv/omni/node_modules/@chainsafe/libp2p-yamux/dist/src/muxer.js:1:1)']))).toMatchObject({ survivable: true });
    // our own non-Raft code (API handler, agent) too
    expect(classifyUncaught(errorAt(['ApiServer.route (/srv/omni/node/api/server.ts:120:11)']))).toMatchObject({ survivable: true });
  });

  it('treats anything from the Raft/storage path as unsafe', () => {
    for (const frame of [
      'RaftNode.tick (/srv/omni/node/raft/raft-node.ts:99:21)',
      'RaftStorage.append (file:///srv/omni/node/raft/raft-storage.ts:40:5)',
      'RaftStorage.append (C:\\omni\\node\\raft\\raft-storage.js:40:5)',
      'Raft.step (/srv/omni/protocol/raft/raft.ts:300:9)',
      'ClusterState.apply (/srv/omni/protocol/cluster/state.ts:80:7)',
      'ClassicLevel._batch (/srv/omni/node_modules/classic-level/index.js:80:7)',
      'AbstractLevel.batch (/srv/omni/node_modules/abstract-level/abstract-level.js:1:1)',
    ]) {
      // below a libp2p frame too: the Raft transport calls into the driver from a stream callback
      const v = classifyUncaught(errorAt([frame, 'EventTarget.<anonymous> (file:///srv/omni/node_modules/@libp2p/utils/dist/src/x.js:1:1)']));
      expect(v, frame).toMatchObject({ survivable: false });
      expect(v.why).toMatch(/thrown from/);
    }
  });

  it('follows the cause chain', () => {
    const wrapped = new Error('request failed', { cause: errorAt(['RaftNode.propose (/srv/omni/node/raft/raft-node.ts:150:3)']) });
    wrapped.stack = 'Error: request failed\n    at handler (/srv/omni/node/api/server.ts:1:1)';
    expect(classifyUncaught(wrapped).survivable).toBe(false);
  });

  it('does not mistake other files for the Raft path', () => {
    expect(classifyUncaught(errorAt(['RaftTransport.onStream (/srv/omni/node/raft/raft-transport.ts:50:1)'])).survivable).toBe(true);
    expect(classifyUncaught(errorAt(['x (/srv/omni/node_modules/level-not-storage/index.js:1:1)'])).survivable).toBe(true);
    expect(classifyUncaught('a string').survivable).toBe(true);
    expect(classifyUncaught(undefined).survivable).toBe(true);
  });
});

describe('UncaughtPolicy storm limit', () => {
  it(`turns unsafe past ${UNCAUGHT_STORM_MAX} survivable errors in ${UNCAUGHT_STORM_WINDOW_MS} ms, and forgets old ones`, () => {
    const p = new UncaughtPolicy(3, 1000);
    expect(p.judge(WASM_CRASH, 0).survivable).toBe(true);
    expect(p.judge(WASM_CRASH, 100).survivable).toBe(true);
    expect(p.judge(WASM_CRASH, 200).survivable).toBe(true);
    expect(p.judge(WASM_CRASH, 1050).survivable).toBe(true); // the one at 0 left the window
    const v = p.judge(WASM_CRASH, 1060);
    expect(v.survivable).toBe(false);
    expect(v.why).toMatch(/4 uncaught errors within 1 s/);
  });
});

describe('ProcessGuard.handle', () => {
  it('logs one error line with the code and the stack, and continues on a survivable error', () => {
    const log = silent();
    const exits: number[] = [];
    const g = new ProcessGuard({ log, exit: (c) => exits.push(c) });
    expect(g.handle('uncaughtException', WASM_CRASH).survivable).toBe(true);
    expect(log.lines).toHaveLength(1);
    expect(log.lines[0]).not.toContain('\n');
    expect(log.lines[0]).toMatch(/^UNCAUGHT_EXCEPTION: survivable, .*; continuing: RangeError: WebAssembly\.Memory\.grow\(\): Maximum memory size exceeded \| at WASM\.realloc/);
    expect(exits).toEqual([]);
    g.handle('unhandledRejection', 'just a string');
    expect(log.lines[1]).toMatch(/^UNHANDLED_REJECTION: survivable, .*non-Error value: just a string/);
  });

  it('shuts the daemon down once, with exit code 1, on an unsafe error', async () => {
    const log = silent();
    const reasons: string[] = [];
    const exits: number[] = [];
    const previousExitCode = process.exitCode;
    const g = new ProcessGuard({ log, exit: (c) => exits.push(c), shutdown: async (r) => void reasons.push(r) });
    try {
      const raft = errorAt(['RaftNode.tick (/srv/omni/node/raft/raft-node.ts:99:21)']);
      expect(g.handle('uncaughtException', raft).survivable).toBe(false);
      expect(g.handle('unhandledRejection', raft).survivable).toBe(false);
      await new Promise((r) => setImmediate(r));
      expect(reasons).toEqual(['UNCAUGHT_EXCEPTION: thrown from the Raft driver or its storage']);
      expect(log.lines[0]).toMatch(/^UNCAUGHT_EXCEPTION: unsafe, thrown from the Raft driver or its storage; shutting down, exit code 1: Error: boom \| at RaftNode\.tick/);
      expect(log.lines[1]).toMatch(/^UNHANDLED_REJECTION: unsafe, .*; already shutting down/);
      expect(exits).toEqual([]); // the clean shutdown finished: omnid exits with the daemon's code
    } finally {
      process.exitCode = previousExitCode;
    }
  });

  it('exits 1 itself when the clean shutdown hangs or fails, or before the daemon runs', async () => {
    const previousExitCode = process.exitCode;
    try {
      const raft = errorAt(['Raft.step (/srv/omni/protocol/raft/raft.ts:1:1)']);
      const hung: number[] = [];
      new ProcessGuard({ log: silent(), exit: (c) => hung.push(c), shutdown: () => new Promise(() => {}), shutdownTimeoutMs: 20 }).handle('uncaughtException', raft);
      const failed: number[] = [];
      new ProcessGuard({ log: silent(), exit: (c) => failed.push(c), shutdown: async () => Promise.reject(new Error('disk gone')) }).handle('uncaughtException', raft);
      const early: number[] = [];
      new ProcessGuard({ log: silent(), exit: (c) => early.push(c) }).handle('uncaughtException', raft);
      expect(early).toEqual([1]);
      await new Promise((r) => setTimeout(r, 100));
      expect(hung).toEqual([1]);
      expect(failed).toEqual([1]);
    } finally {
      process.exitCode = previousExitCode;
    }
  });

  it('caps the line length', () => {
    expect(describeUncaught(new Error('x'.repeat(10_000))).length).toBeLessThanOrEqual(4_001);
  });
});

describe('installed in a real process', () => {
  const run = (mode: string) =>
    spawnSync(join(ROOT, 'node_modules/.bin/node'), ['--import', 'tsx', join(ROOT, 'test/fixtures/process-guard-child.ts'), mode], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

  it('a survivable uncaught exception and rejection are logged and the process keeps running', () => {
    const r = run('survivable');
    expect(r.stderr).toMatch(/UNCAUGHT_EXCEPTION: survivable.*RangeError: WebAssembly\.Memory\.grow/);
    expect(r.stderr).toMatch(/UNHANDLED_REJECTION: survivable/);
    expect(r.stdout).toContain('still serving');
    expect(r.status).toBe(0);
  });

  it('an unsafe one stops the daemon cleanly and the process exits 1', () => {
    const r = run('unsafe');
    expect(r.stderr).toMatch(/UNCAUGHT_EXCEPTION: unsafe, thrown from the Raft driver or its storage; shutting down, exit code 1/);
    expect(r.stdout).toContain('clean shutdown: UNCAUGHT_EXCEPTION');
    expect(r.stdout).not.toContain('still serving');
    expect(r.status).toBe(1);
  });
});
