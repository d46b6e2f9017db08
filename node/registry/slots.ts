// A counting semaphore: at most `max` holders at once; take() waits in FIFO order (or until its
// signal aborts) and returns a release function that may be called more than once.
import { OmniError } from '../errors.js';

export class Slots {
  private n = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly max: number) {}

  async take(signal?: AbortSignal): Promise<() => void> {
    if (this.n < this.max) this.n++;
    else
      await new Promise<void>((resolve, reject) => {
        const w = () => resolve();
        this.waiting.push(w);
        signal?.addEventListener(
          'abort',
          () => {
            const i = this.waiting.indexOf(w);
            if (i >= 0) this.waiting.splice(i, 1);
            reject(new OmniError('ABORTED', 'stopping'));
          },
          { once: true },
        );
      });
    let done = false;
    return () => {
      if (done) return;
      done = true;
      // the slot passes straight to the next waiter, or frees up
      const next = this.waiting.shift();
      if (next) next();
      else this.n--;
    };
  }
}
