// Why a task failed, in a few words a person can act on, classified from what the driver
// reports (start error, exit code, engine reason such as OOMKilled) and the last lines of the
// task's own output (EADDRINUSE, "command not found"). Pure: the agent gathers the inputs.

/** Lines of the task's output the agent reads after an exit. */
export const FAILURE_LOG_TAIL_LINES = 30;
/** Longest output line quoted in a cause. */
const MAX_QUOTED_OUTPUT_CHARS = 120;

export interface FailureCause {
  /** The output lines the cause was read from (the newest, non-empty), for humans. */
  lastOutput?: string[];
  /** e.g. "command not found: redis-server", "port 20001 is already in use on this host". */
  cause: string;
  /**
   * Restarting on this node cannot help (the command is missing here, its port is taken by
   * another process): the agent marks the task failed at once so the orchestrator moves it.
   */
  permanent: boolean;
  /** Host ports found bound by another process (the scheduler must not hand them out again here). */
  portsInUse: number[];
}

const PORT_IN_USE = /EADDRINUSE|address already in use|address in use|port is already allocated|Only one usage of each socket address/i;
const SPAWN_ENOENT = /cannot start "([^"]*)": (?:spawn \S* ?ENOENT|not found in PATH|no such executable file)|spawn (\S+) ENOENT/;
const SPAWN_EACCES = /cannot start "([^"]*)": spawn \S* ?EACCES|spawn (\S+) EACCES/;
/** sh: "sh: 1: foo: not found"; bash: "bash: foo: command not found"; zsh: "zsh: command not found: foo". */
const SHELL_NOT_FOUND = /^(?:\S+: )?(?:line )?(?:\d+: )?([^\s:]+): (?:command )?not found$|command not found: (\S+)$/;
const EXEC_NOT_FOUND = /executable file not found in \$PATH|exec: "?([^":]+)"?: (?:executable file not found|no such file or directory)/;
const IMAGE_MISSING = /no such image|pull access denied|manifest unknown|repository does not exist/i;
const OUT_OF_MEMORY = /JavaScript heap out of memory|\bOut of memory\b|\bMemoryError\b|OutOfMemoryError|Cannot allocate memory/;

/** Ports among `hostPorts` that `text` names; all of them when it names none. */
function portsNamed(text: string, hostPorts: readonly number[]): number[] {
  const named = hostPorts.filter((p) => new RegExp(`(?<!\\d)${p}(?!\\d)`).test(text));
  return named.length > 0 ? named : [...hostPorts];
}

function portInUse(line: string, hostPorts: readonly number[]): FailureCause {
  const ports = portsNamed(line, hostPorts);
  const what = ports.length === 0 ? 'its port is' : ports.length === 1 ? `port ${ports[0]} is` : `ports ${ports.join(', ')} are`;
  return { cause: `${what} already in use on this host`, permanent: true, portsInUse: ports };
}

function quoted(line: string): string {
  const t = line.trim();
  return t.length > MAX_QUOTED_OUTPUT_CHARS ? `${t.slice(0, MAX_QUOTED_OUTPUT_CHARS)}…` : t;
}

/** A driver refused to start the task (driver.start threw). */
export function classifyStartError(message: string, hostPorts: readonly number[] = []): FailureCause {
  const msg = message.replace(/^task [a-z0-9-]+: /, '');
  let m: RegExpExecArray | null;
  if ((m = SPAWN_ENOENT.exec(msg))) return { cause: `command not found: ${m[1] ?? m[2]}`, permanent: true, portsInUse: [] };
  if ((m = SPAWN_EACCES.exec(msg))) return { cause: `permission denied: ${m[1] ?? m[2]} is not executable`, permanent: true, portsInUse: [] };
  if (PORT_IN_USE.test(msg)) return portInUse(msg, hostPorts);
  if ((m = EXEC_NOT_FOUND.exec(msg))) return { cause: m[1] ? `command not found in the image: ${m[1]}` : 'command not found in the image', permanent: true, portsInUse: [] };
  if (IMAGE_MISSING.test(msg)) return { cause: `image not found on this node (${quoted(msg)})`, permanent: true, portsInUse: [] };
  return { cause: `could not start: ${quoted(msg)}`, permanent: false, portsInUse: [] };
}

export interface ExitFacts {
  exitCode: number | null;
  /** The driver's reason ("signal SIGKILL", "OOMKilled", ...). */
  reason?: string;
  /** The last lines of the task's output, oldest first. */
  logTail: readonly string[];
  hostPorts: readonly number[];
}

/** A task's process ended: what most likely made it end. */
export function classifyExit(f: ExitFacts): FailureCause {
  const lines = f.logTail.map((l) => l.trim()).filter((l) => l !== '');
  const reason = f.reason ?? '';
  // The newest matching line wins: it is closest to the exit. The driver's reason (docker's
  // State.Error: "... port is already allocated") counts as the newest line.
  const searched = reason ? [...lines, reason] : lines;
  const find = (re: RegExp) => [...searched].reverse().find((l) => re.test(l));
  if (/OOMKilled/i.test(reason)) return { cause: 'out of memory (OOMKilled)', permanent: false, portsInUse: [] };
  const start = find(SPAWN_ENOENT) ?? find(SPAWN_EACCES);
  if (start) return classifyStartError(start, f.hostPorts);
  if (f.exitCode !== 0) {
    const inUse = find(PORT_IN_USE);
    if (inUse) return portInUse(inUse, f.hostPorts);
    const notFound = find(SHELL_NOT_FOUND);
    if (notFound && (f.exitCode === 127 || f.exitCode === null)) {
      const m = SHELL_NOT_FOUND.exec(notFound)!;
      return { cause: `command not found: ${m[1] ?? m[2]}`, permanent: true, portsInUse: [] };
    }
    if (find(OUT_OF_MEMORY)) return { cause: `out of memory (${quoted(find(OUT_OF_MEMORY)!)})`, permanent: false, portsInUse: [] };
    if (f.exitCode === 127) return { cause: 'command not found (exit code 127)', permanent: true, portsInUse: [] };
    if (f.exitCode === 126) return { cause: 'command not executable (exit code 126)', permanent: true, portsInUse: [] };
  }
  const what = f.exitCode !== null ? `exited with code ${f.exitCode}` : /^signal /.test(reason) ? `killed by ${reason.slice('signal '.length)}` : `ended (${reason || 'killed'})`;
  const last = lines.at(-1);
  return { cause: last && f.exitCode !== 0 ? `${what}: ${quoted(last)}` : what, permanent: false, portsInUse: [] };
}

/**
 * One line naming each cause and the nodes it happened on, most frequent first:
 * "command not found: foo on n1, n2, n3; exited with code 1 on n4".
 */
export function summarizeFailures(failures: readonly { node: string; cause: string }[]): string {
  const byCause = new Map<string, string[]>();
  for (const f of failures) {
    const cause = f.cause || 'failed';
    const nodes = byCause.get(cause) ?? [];
    if (!nodes.includes(f.node)) nodes.push(f.node);
    byCause.set(cause, nodes);
  }
  return [...byCause]
    .sort((a, b) => b[1].length - a[1].length)
    .map(([cause, nodes]) => `${cause} on ${[...nodes].sort().join(', ')}`)
    .join('; ');
}
