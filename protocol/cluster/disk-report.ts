// When a node reports its disk again (pure). A node's `diskBytes` is what the scheduler reserves
// apps' disk sizes against: the free space of its data dir's file system plus what its tasks'
// workspaces already hold there (those bytes belong to reservations already made, so counting
// them as used would reserve them twice). It is measured again every --disk-check-ms; the record
// is rewritten (a Raft proposal) only when the figure moved by enough to matter.

/** A change smaller than this is never reported. */
export const DISK_REPORT_MIN_BYTES = 256 * 1024 * 1024;
/** ...nor one smaller than this fraction of the recorded figure. */
export const DISK_REPORT_FRACTION = 0.05;
export const DEFAULT_DISK_CHECK_MS = 30_000;

/** Whether a node whose record says `recordedBytes` and which measures `measuredBytes` now re-registers. */
export function diskMoved(recordedBytes: number, measuredBytes: number): boolean {
  if (recordedBytes === measuredBytes) return false;
  // 0 means "could not measure": any real figure replaces it, and a failed measurement replaces a real one
  if (recordedBytes === 0 || measuredBytes === 0) return true;
  return Math.abs(measuredBytes - recordedBytes) >= Math.max(DISK_REPORT_MIN_BYTES, recordedBytes * DISK_REPORT_FRACTION);
}
