// Where a command is found, as execvp would find it (shared by the process driver and the resource
// report, which looks for nvidia-smi without starting a process on hosts that have none).
import { accessSync, constants, statSync } from 'node:fs';
import { resolve } from 'node:path';

/** execvp's lookup, done before launch so that a missing command fails start() and argv[0] cannot name a shell builtin. */
export function resolveCommand(cmd: string, pathVar: string, cwd: string): string | undefined {
  const runnable = (p: string) => {
    try {
      if (!statSync(p).isFile()) return false;
      accessSync(p, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (cmd === '') return undefined;
  if (cmd.includes('/')) {
    const p = resolve(cwd, cmd);
    return runnable(p) ? p : undefined;
  }
  for (const d of pathVar.split(':')) {
    const p = resolve(cwd, d || '.', cmd);
    if (runnable(p)) return p;
  }
  return undefined;
}
