// A module (or anything) loaded on first use instead of at start-up: omnid's cold start pays only
// for what it runs (issue 13). The load happens once; a failed one is tried again by the next call.
// Call sites keep their own `import('…')` so the bundler still sees (and bundles) the module.

export function loadOnce<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= load().catch((err: unknown) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}
