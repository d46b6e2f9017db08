// omni: the Omni CLI; talks to any node's HTTP API. One file per command under cli/omni/
// (cli/omni-commands.json names them); a command's module is imported when it runs, so `omni
// --help` and each command load only what they use. The prebuilt bundles start from
// cli/omni-main.ts as well, each with one command module (scripts/build.mjs).
import { runOmni } from './omni-main.js';

runOmni((module) => import(`./omni/${module}.js`));
