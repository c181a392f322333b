import { describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { z } from 'zod';
import { configEnvName, layerConfig } from '../../../src/config/layers.js';
import { ConfigError } from '../../../src/errors.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { agentCliConfigSchema } from '../../../agent-lib/cli.js';

// Every POSTERN_<PROGRAM>_* variable the documentation and the deployment files mention must
// name a setting: an operator copies them as they are, and a wrong one stops the program.
const root = resolve(import.meta.dirname, '../../..');
const schemas: Record<string, z.ZodType> = { RELAY: relayConfigSchema, CONNECTOR: connectorConfigSchema, AGENT: agentCliConfigSchema };
const examples: Record<string, string> = { RELAY: 'relay.yaml', CONNECTOR: 'connector.yaml', AGENT: 'agent.yaml' };

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : [join(dir, e.name)]));
}

const sources = [join(root, 'docs/operations.md'), join(root, 'docs/errors.md'), join(root, 'README.md'), ...files(join(root, 'deployments'))];
const mentioned = new Map<string, string>();
/** Variables the docs show being refused, with the start of the error they print. */
const refused = new Map<string, string>();
for (const file of sources) {
  const text = readFileSync(file, 'utf8');
  for (const m of text.matchAll(/^error (POSTERN_ERR_CONFIG_UNKNOWN_KEY: env (POSTERN_[A-Z0-9_]+): [^(…]*)/gm)) refused.set(m[2]!, m[1]!);
  for (const m of text.matchAll(/\bPOSTERN_(RELAY|CONNECTOR|AGENT)_[A-Z0-9_]*[A-Z0-9]\b/g)) {
    if (!mentioned.has(m[0])) mentioned.set(m[0], file.slice(root.length + 1));
  }
}

describe('POSTERN_* variables in docs and deployments', () => {
  it('there are some', () => {
    expect(mentioned.size).toBeGreaterThan(10);
  });

  it('the refusals the docs show are the ones the programs print', () => {
    expect(refused.size).toBeGreaterThan(0);
    for (const [name, shown] of refused) {
      const program = /^POSTERN_([A-Z]+)_/.exec(name)![1]!;
      let message = '';
      try {
        layerConfig(schemas[program]!, program.toLowerCase(), undefined, { [name]: 'x' });
      } catch (err) {
        message = `${(err as ConfigError).code}: ${(err as Error).message}`;
      }
      expect(message).toContain(shown.trim());
    }
  });

  it.each([...mentioned].filter(([name]) => !refused.has(name)).map(([name, file]) => [name, file]))('%s (%s) names a setting', (name) => {
    const program = /^POSTERN_([A-Z]+)_/.exec(name)![1]!;
    if (name === configEnvName(program.toLowerCase())) return;
    const file = { name: examples[program]!, text: readFileSync(join(root, 'deployments/examples', examples[program]!), 'utf8') };
    try {
      // "true" is a value of no type but boolean: only the name is on trial here.
      layerConfig(schemas[program]!, program.toLowerCase(), file, { [name]: 'true' });
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).code, (err as Error).message).not.toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    }
  });
});
