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

  it('follows line continuations and leaves build arguments without a value to the engine', () => {
    const text = 'ARG BASE\nFROM \\\n  $BASE AS one\nFROM ${BASE}\nFROM one\n';
    expect(dockerfileFromImages(text)).toEqual({ images: [], variable: ['$BASE', '${BASE}'] });
  });

  it('resolves FROM names made of build arguments as the engine does: global ARG defaults, --build-arg values, ${X:-default}, ${X:+alt}', () => {
    const text = [
      'ARG REPO=omni/node',
      'ARG TAG="24"',
      'ARG BASE=${REPO}:${TAG}',
      'ARG RUNTIME STATIC=omni/static:1',
      'FROM $BASE AS build',
      'ARG AFTER=not/global:1', // an ARG after the first FROM is not visible to FROM lines
      'FROM ${RUNTIME:-omni/python:3}',
      'FROM ${STATIC}',
      'FROM ${AFTER}',
      'FROM build',
    ].join('\n');
    expect(dockerfileFromImages(text)).toEqual({ images: ['omni/node:24', 'omni/python:3', 'omni/static:1'], variable: ['${AFTER}'] });
    // --build-arg overrides a declared ARG (and only a declared one)
    expect(dockerfileFromImages(text, { TAG: '22', RUNTIME: 'omni/node:22-slim', AFTER: 'x:1' })).toEqual({ images: ['omni/node:22', 'omni/node:22-slim', 'omni/static:1'], variable: ['${AFTER}'] });
    expect(dockerfileFromImages('ARG V=1\nFROM img:${V:+v}${V}\n').images).toEqual(['img:v1']);
    expect(dockerfileFromImages('ARG V\nFROM img:${V:+v}latest\n').images).toEqual(['img:latest']);
  });

  it('an image may share its name with the stage it starts', () => {
    expect(dockerfileFromImages('FROM base AS base\nFROM base\n').images).toEqual(['base']);
  });

  it('a Dockerfile without FROM names nothing', () => {
    expect(dockerfileFromImages('RUN true\n')).toEqual({ images: [], variable: [] });
  });
});
