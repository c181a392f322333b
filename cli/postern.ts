#!/usr/bin/env node
import { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { registerPki } from './pki.js';
import { registerPolicy } from './policy.js';
import { registerRelay } from '../relay/cli.js';
import { registerConnectorCommand } from '../connector/cli.js';
import { registerAgentCommand } from '../agent-lib/cli.js';
import { registerUp } from './up.js';

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command('postern')
  .description('Zero-trust reverse tunnel: connectors dial out, the relay authorizes, agents and connectors speak TLS 1.3 end to end.')
  .version(pkg.version)
  .showHelpAfterError()
  .enablePositionalOptions();

// Subcommand modules register themselves here; each is a leaf that reads argv/env.
const registrars: Array<(program: Command) => void> = [registerPki, registerPolicy, registerRelay, registerConnectorCommand, registerAgentCommand, registerUp];
for (const register of registrars) register(program);

await program.parseAsync(process.argv);
