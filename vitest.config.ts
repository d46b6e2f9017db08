import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    // one private dockerd for the whole run when DOCKER_HOST is unset (see test/support/docker.ts)
    globalSetup: ['test/support/global-setup.ts'],
  },
});
