// Settings bin/omnid exports for omnid's runtime only (glibc's malloc reads MALLOC_* when the
// process starts; LD_PRELOAD loads jemalloc into it with OMNI_MALLOC=jemalloc; see bin/omnid): once running, omnid removes them from its environment, so the
// processes it starts (tasks, helpers) do not inherit them. OMNI_RUNTIME_ENV names those the
// launcher set itself; a variable the user had set is not in it and stays.
export function dropLauncherEnv(env: NodeJS.ProcessEnv): void {
  for (const name of (env.OMNI_RUNTIME_ENV ?? '').split(' ')) if (/^MALLOC_[A-Z_]+$/.test(name) || name === 'LD_PRELOAD') delete env[name];
  delete env.OMNI_RUNTIME_ENV;
}
