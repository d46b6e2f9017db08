// Which task a connection from a container comes from: its source address, looked up in the
// addresses of the node's running containers (the docker driver lists them with their task
// labels). The list is cached and read again when an address is not in it — a container that
// just started — at most once per MIN_REFRESH_GAP_MS, so a stranger's connections (a container
// Omni did not start) cannot make the node ask the engine in a loop.
const MIN_REFRESH_GAP_MS = 250;
/** A list older than this is read again before it answers (the engine gives a freed address to the next container). */
const MAX_AGE_MS = 5000;
const MAX_ADDRESSES = 65_536;

export type ListContainerAddresses = () => Promise<Map<string, string>> | undefined;

export class ContainerSources {
  private byAddress = new Map<string, string>();
  private refreshedAtMs = 0;
  private refreshing: Promise<void> | undefined;
  /** The engine is being asked now (a read that may have started before the asker's container existed). */
  private reading = false;

  constructor(
    private readonly list: ListContainerAddresses,
    private readonly now: () => number = Date.now,
    private readonly minGapMs = MIN_REFRESH_GAP_MS,
    private readonly maxAgeMs = MAX_AGE_MS,
  ) {}

  /**
   * The task behind `address`, or undefined when no running container of this node has it (after
   * a fresh read). A cached task that `isCurrent` says is not running (its container may have
   * left the address to a new one), or a list older than MAX_AGE_MS, is read again.
   */
  async taskOf(address: string, isCurrent: (taskId: string) => boolean = () => true): Promise<string | undefined> {
    const known = this.byAddress.get(address);
    if (known !== undefined && isCurrent(known) && this.now() - this.refreshedAtMs < this.maxAgeMs) return known;
    const joinedARead = this.reading;
    await this.refresh();
    // a read already under way may have asked before this container existed: one more
    if (joinedARead && this.byAddress.get(address) === known) await this.refresh();
    return this.byAddress.get(address);
  }

  /** Reads the list again, after waiting out the gap since the last read; concurrent callers share one read. */
  private refresh(): Promise<void> {
    this.refreshing ??= (async () => {
      try {
        const waitMs = this.refreshedAtMs + this.minGapMs - this.now();
        if (waitMs > 0) await new Promise((r) => setTimeout(r, waitMs));
        this.reading = true;
        const next = await this.list();
        if (next) this.byAddress = next.size > MAX_ADDRESSES ? new Map([...next].slice(0, MAX_ADDRESSES)) : next;
      } finally {
        this.reading = false;
        this.refreshedAtMs = this.now();
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }
}
