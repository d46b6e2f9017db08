import { describe, expect, it } from 'vitest';
import { dockerfileFromImages } from '../../protocol/forge/dockerfile.js';

describe('dockerfileFromImages', () => {
  it('lists the images a Dockerfile builds from, not its stages, scratch or comments', () => {
    const text = [
      '# syntax comment',
      'ARG BASE=omni/node:24',
      'FROM --platform=linux/amd64 omni/node:24 AS deps',
      'RUN npm ci',
      'from deps as build',
      '# FROM commented/out:1',
      'FROM scratch AS empty',
      'FROM omni/static:1',
      'COPY --from=build /app /app',
      'FROM omni/node:24',
      'FROM Build',
    ].join('\n');
    expect(dockerfileFromImages(text)).toEqual({ images: ['omni/node:24', 'omni/static:1'], variable: [] });
  });

  it('follows line continuations and leaves build-argument names to the engine', () => {
    const text = 'ARG BASE\nFROM \\\n  $BASE AS one\nFROM ${BASE}\nFROM one\n';
    expect(dockerfileFromImages(text)).toEqual({ images: [], variable: ['$BASE', '${BASE}'] });
  });

  it('an image may share its name with the stage it starts', () => {
    expect(dockerfileFromImages('FROM base AS base\nFROM base\n').images).toEqual(['base']);
  });

  it('a Dockerfile without FROM names nothing', () => {
    expect(dockerfileFromImages('RUN true\n')).toEqual({ images: [], variable: [] });
  });
});
