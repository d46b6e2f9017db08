// Where a followed log stream resumes after it was lost (omni watch): each line carries its time
// (`at`, epoch ms, from the node that wrote it). Per task it keeps the time of the last line
// printed and how many were printed at that very millisecond; a reconnect asks from the earliest
// of those times, and the lines the new stream sends again — before a task's last time, or the
// first n at it — are left out. So nothing is missed or printed twice at the seam, whatever the
// clocks of the client and of the nodes say. Pure.

/** Tasks remembered at most (a client following an app whose tasks keep changing). */
const MAX_TASKS = 10_000;

export class LogResume {
  private readonly printed = new Map<string, { at: number; n: number }>();
  private skip = new Map<string, { at: number; n: number }>();

  /**
   * The time to ask from on a reconnect: the earliest last-printed time of the `current` tasks
   * (undefined: none of them printed a timed line). Tasks no longer current are forgotten, so a
   * replaced or removed one does not hold the resume point back.
   */
  resumeAt(current?: ReadonlySet<string>): number | undefined {
    let min: number | undefined;
    for (const [task, p] of this.printed) {
      if (current && !current.has(task)) {
        this.printed.delete(task);
        continue;
      }
      if (min === undefined || p.at < min) min = p.at;
    }
    return min;
  }

  /** A new stream starts (asked from resumeAt()): what it will send again is left out. */
  startStream(): void {
    this.skip = new Map([...this.printed].map(([task, p]) => [task, { ...p }]));
  }

  /** Whether to print a line of `task` written at `at`; records it when so. */
  accept(task: string, at: number): boolean {
    const s = this.skip.get(task);
    if (s && (at < s.at || (at === s.at && s.n-- > 0))) return false;
    const p = this.printed.get(task);
    if (!p || at > p.at) {
      if (!p && this.printed.size >= MAX_TASKS) this.printed.clear();
      this.printed.set(task, { at, n: 1 });
    } else if (at === p.at) p.n++;
    return true;
  }
}
