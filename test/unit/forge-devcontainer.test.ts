// .devcontainer/devcontainer.json as Forge reads it: JSONC (comments, trailing commas), the fields
// Forge uses, and clear refusals (features, images of other registries, host variables).
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { devcontainerPath, isRemoteImage, parseDevcontainer, stripJsonc } from '../../protocol/forge/devcontainer.js';

const fixture = (name: string) => readFileSync(fileURLToPath(new URL(`../fixtures/forge/devcontainer/${name}/.devcontainer/devcontainer.json`, import.meta.url)), 'utf8');
const parse = (text: string) => {
  const r = parseDevcontainer(text);
  if (!r.ok) throw new Error(r.message);
  return r.config;
};
const refusal = (text: string) => {
  const r = parseDevcontainer(text);
  if (r.ok) throw new Error('accepted');
  return r.message;
};

describe('devcontainer.json', () => {
  it('JSONC: comments and trailing commas go, strings (with // and /* inside) stay', () => {
    expect(JSON.parse(stripJsonc('{"a": "x // y", /* c */ "b": [1, 2,], // end\n "c": "/*z*/",}'))).toEqual({ a: 'x // y', b: [1, 2], c: '/*z*/' });
    expect(JSON.parse(stripJsonc('{"q": "a \\" // b",\n}'))).toEqual({ q: 'a " // b' });
    expect(JSON.parse(stripJsonc('[1, /* x */ ]'))).toEqual([1]);
    expect(() => stripJsonc('{ /* open')).toThrow(/not closed/);
  });

  it('a fixture with comments: image, containerEnv, remoteUser, postCreateCommand (argv quoted); other keys warned about', () => {
    expect(parse(fixture('jsonc'))).toEqual({
      image: 'omni/node:24',
      containerEnv: { GREETING: 'hello // not a comment', URL: 'http://x/*y*/' },
      user: 'node',
      postCreateCommand: `'echo' 'it'\\''s ready'`,
      warnings: ['.devcontainer/devcontainer.json: customizations, forwardPorts not used by Forge'],
    });
  });

  it('build.dockerfile with context and args; the object form of postCreateCommand runs its commands in turn', () => {
    expect(parse(fixture('dockerfile'))).toEqual({
      build: { dockerfile: 'Dockerfile', context: '..', args: { VARIANT: '24' } },
      containerEnv: {},
      postCreateCommand: `(echo tools) && ('echo' 'more')`,
      warnings: [],
    });
    expect(devcontainerPath('Dockerfile')).toBe('.devcontainer/Dockerfile');
    expect(devcontainerPath('..')).toBe('');
    expect(devcontainerPath('../docker/Dockerfile')).toBe('docker/Dockerfile');
    expect(devcontainerPath('../../x')).toBeUndefined();
  });

  it('refuses features, images of other registries, host variables, and files without image or build', () => {
    expect(refusal(fixture('features'))).toMatch(/features \(ghcr\.io\/devcontainers\/features\/git:1\) are not supported: they are downloaded from the internet/);
    expect(refusal(fixture('remote'))).toMatch(/image mcr\.microsoft\.com\/devcontainers\/typescript-node:1-20-bullseye is in another registry and Forge cannot pull from the internet/);
    expect(refusal('{"image": "x", "containerEnv": {"P": "${localEnv:PATH}"}}')).toMatch(/\$\{localEnv:PATH\}: variables of the local host are not supported/);
    expect(refusal('{"containerEnv": {}}')).toMatch(/give image .* or build\.dockerfile/);
    expect(refusal('{"image": "a", "build": {"dockerfile": "D"}}')).toMatch(/not both/);
    expect(refusal('{"image": "a", "containerEnv": {"1X": "y"}}')).toMatch(/containerEnv\.1X/);
    expect(refusal('{"image": "a", "remoteUser": "a b"}')).toMatch(/remoteUser/);
    expect(refusal('{"image": "a",, }')).toMatch(/not valid JSON/);
    expect(refusal('x'.repeat(300 * 1024))).toMatch(/larger than/);
    // an empty features object is fine
    expect(parse('{"image": "a", "features": {}}').image).toBe('a');
  });

  it('remote images: a first component with a dot or a port, not a loopback one', () => {
    expect(isRemoteImage('mcr.microsoft.com/devcontainers/base:1')).toBe(true);
    expect(isRemoteImage('ghcr.io/x/y')).toBe(true);
    expect(isRemoteImage('registry:5000/x')).toBe(true);
    expect(isRemoteImage('omni/node:24')).toBe(false);
    expect(isRemoteImage('node:20')).toBe(false);
    expect(isRemoteImage('localhost:5000/x')).toBe(false);
    expect(isRemoteImage('127.0.0.1:41234/omni/node:24')).toBe(false);
  });
});
