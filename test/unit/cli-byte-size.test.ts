// parseByteSize (cli/common.ts): the sizes `omni quota set` takes — binary units as Docker reads
// 512m and 1g (a fraction of a unit rounded down to whole bytes), a bare number is bytes, anything
// else a usage error naming the flag.
import { describe, expect, it } from 'vitest';
import { parseByteSize, UsageError } from '../../cli/common.js';

describe('parseByteSize', () => {
  it('reads binary units with or without i/B, any case, and bare bytes', () => {
    const cases: [string, number][] = [
      ['2000000', 2_000_000],
      ['64KiB', 64 * 1024],
      ['64k', 64 * 1024],
      ['512MiB', 512 * 2 ** 20],
      ['512m', 512 * 2 ** 20],
      ['512 MB', 512 * 2 ** 20],
      ['4GiB', 4 * 2 ** 30],
      ['4G', 4 * 2 ** 30],
      ['1.5GiB', 1.5 * 2 ** 30],
      ['1.3GiB', Math.floor(1.3 * 2 ** 30)],
      ['0.1m', Math.floor(0.1 * 2 ** 20)],
      ['1t', 2 ** 40],
      ['100B', 100],
      [' 3g ', 3 * 2 ** 30],
    ];
    for (const [text, bytes] of cases) expect(parseByteSize(text, 'SIZE'), text).toBe(bytes);
  });

  it('refuses what is not a whole number of bytes, or not a size', () => {
    for (const bad of ['', 'GiB', '-1G', '1.5', '1.5B', '4 GB extra', '4PB', '4iB', '1e9', '0x10', '9999999999999999T']) {
      expect(() => parseByteSize(bad, 'SIZE'), bad).toThrow(UsageError);
      expect(() => parseByteSize(bad, 'SIZE'), bad).toThrow(/SIZE must be a size such as 4GiB/);
    }
  });
});
