import { describe, expect, it } from 'vitest';
import { DISK_REPORT_MIN_BYTES, diskMoved } from '../../protocol/cluster/disk-report.js';

const GIB = 1024 ** 3;

describe('diskMoved: when a node reports its disk again', () => {
  it('ignores small moves, reports moves of at least max(256 MiB, 5 %), and any change to or from 0 (not measurable)', () => {
    expect(diskMoved(10 * GIB, 10 * GIB)).toBe(false);
    expect(diskMoved(10 * GIB, 10 * GIB - 100 * 1024 * 1024)).toBe(false); // under 256 MiB
    expect(diskMoved(10 * GIB, 10 * GIB - 400 * 1024 * 1024)).toBe(false); // 400 MiB is under 5 % of 10 GiB
    expect(diskMoved(10 * GIB, 9 * GIB)).toBe(true);
    expect(diskMoved(10 * GIB, 11 * GIB)).toBe(true);
    expect(diskMoved(GIB, GIB - DISK_REPORT_MIN_BYTES)).toBe(true); // small disks: the 256 MiB floor
    expect(diskMoved(GIB, GIB - DISK_REPORT_MIN_BYTES + 1)).toBe(false);
    expect(diskMoved(0, 1)).toBe(true);
    expect(diskMoved(5 * GIB, 0)).toBe(true);
  });
});
