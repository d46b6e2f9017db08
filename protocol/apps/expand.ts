// $VAR expansion in a process task's argv, done by Omni (no shell is involved), so that
// `omni run --port 6379 -- redis-server --port '$PORT'` does what it reads as. Only the task's
// own environment is used (its env, PORT, OMNI_PORT_<NAME>, OMNI_TASK_ID, OMNI_VOLUME_<NAME>,
// HOME, PATH); a reference to any other name is left as written, and `$$` is a literal `$`
// (as in Compose files). Pure.

const REF = /\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g;

/** `$NAME` and `${NAME}` → env[NAME] when the task's env has NAME; `$$` → `$`; anything else unchanged. */
export function expandArg(arg: string, env: Readonly<Record<string, string>>): string {
  return arg.replace(REF, (whole, braced: string | undefined, bare: string | undefined) => {
    if (whole === '$$') return '$';
    const name = braced ?? bare!;
    return Object.hasOwn(env, name) ? env[name] : whole;
  });
}

export function expandArgv(argv: readonly string[], env: Readonly<Record<string, string>>): string[] {
  return argv.map((a) => expandArg(a, env));
}
