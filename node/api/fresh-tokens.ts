// A token created a moment ago on another node may not have reached this node's replica yet
// (`omni token create`, then `docker login` or an API call against another member). A token that
// matches nothing here is looked up once more after a linearizable read barrier before it is
// refused; concurrent misses share one barrier, so bad tokens cannot multiply ReadIndex rounds.

export class FreshTokens {
  private inFlight: Promise<void> | undefined;

  constructor(private readonly readBarrier: () => Promise<void>) {}

  /**
   * Runs `check` against the local replica; when it finds nothing (undefined) or throws, waits
   * for the replica to catch up with the leader and runs it once more (its result or error stands).
   */
  async check<T>(check: () => T | undefined): Promise<T | undefined> {
    try {
      const first = check();
      if (first !== undefined) return first;
    } catch {
      // judged again below, on a replica that has caught up
    }
    await this.barrier().catch(() => undefined); // no quorum: judge on what this node has
    return check();
  }

  private barrier(): Promise<void> {
    this.inFlight ??= this.readBarrier().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }
}
