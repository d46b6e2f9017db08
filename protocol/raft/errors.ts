/** A broken Raft invariant: the core refuses to continue rather than corrupt state. */
export class RaftInvariantError extends Error {
  readonly code = 'RAFT_INVARIANT';
  constructor(message: string) {
    super(message);
    this.name = 'RaftInvariantError';
  }
}

export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new RaftInvariantError(message);
}

/** A persisted state handed to the core that does not hold together: damaged storage, not a core bug. */
export class RaftRestoreError extends RaftInvariantError {
  constructor(message: string) {
    super(message);
    this.name = 'RaftRestoreError';
  }
}

export function restoreInvariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new RaftRestoreError(message);
}
