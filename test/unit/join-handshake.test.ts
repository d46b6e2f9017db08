// What a failed connection to the join address says about the cluster key (node/cluster/membership.ts):
// the messages are the ones omnid's RPC layer gives for each case on a real host.
import { describe, expect, it } from 'vitest';
import { joinHandshakeFailure } from '../../node/cluster/membership.js';

const ADDR = '/ip4/127.0.0.1/tcp/34163/p2p/12D3KooWGybnBTbVULUWq2XCwTkanbwR1CNrdeqZL5abXvptzEZ1';

describe('joinHandshakeFailure', () => {
  it('a reset after the nonce exchange (the listener could not read our handshake) is a wrong key', () => {
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: read ECONNRESET`)).toBe('wrong-key');
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: EncryptionFailedError: handshake failed`)).toBe('wrong-key');
  });

  it('a reset before the nonce exchange (the listener turned the connection away unread) is not', () => {
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: pnet: nonce exchange with ${ADDR} failed: read ECONNRESET`)).toBe('turned-away');
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: pnet: nonce exchange with ${ADDR} failed: stream ended`)).toBe('turned-away');
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: connection error 127.0.0.1:34163: connect ECONNRESET 127.0.0.1:34163`)).toBe('turned-away');
  });

  it('other failures say nothing about the key', () => {
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: connect ECONNREFUSED 127.0.0.1:34163`)).toBeUndefined();
    expect(joinHandshakeFailure(`cannot reach ${ADDR}: pnet: no nonce from ${ADDR} within 10000 ms`)).toBeUndefined();
    expect(joinHandshakeFailure('join failed: The operation was aborted due to timeout')).toBeUndefined();
  });
});
