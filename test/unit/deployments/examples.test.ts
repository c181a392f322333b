import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { z } from 'zod';
import { parseYamlWithSchema } from '../../../src/config/yaml.js';
import { parsePolicy } from '../../../src/policy/index.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { agentOptionsSchema } from '../../../agent-lib/options.js';
import { agentCliConfigSchema } from '../../../agent-lib/cli.js';

const dir = resolve(import.meta.dirname, '../../../deployments/examples');
const read = (name: string): string => readFileSync(resolve(dir, name), 'utf8');
const examples: Array<[string, z.ZodType]> = [
  ['relay.yaml', relayConfigSchema],
  ['connector.yaml', connectorConfigSchema],
  // As `postern agent --config` reads it, and as `new Agent(…)` takes it (no CLI-only key in it).
  ['agent.yaml', agentCliConfigSchema],
  ['agent.yaml', agentOptionsSchema],
];

describe('deployments/examples', () => {
  it.each(examples)('%s is valid against its schema', (name, schema) => {
    const path = resolve(dir, name);
    expect(existsSync(path), `${name} exists`).toBe(true);
    expect(() => parseYamlWithSchema(read(name), path, schema)).not.toThrow();
  });

  it('policy.yaml compiles as `postern policy check` reads it, and declares the connector the example connector is', () => {
    const policy = parsePolicy(read('policy.yaml'), 'policy.yaml');
    expect(policy.trustDomain).toBe('hospital.example');
    const connector = parseYamlWithSchema(read('connector.yaml'), 'connector.yaml', connectorConfigSchema);
    const relay = parseYamlWithSchema(read('relay.yaml'), 'relay.yaml', relayConfigSchema);
    expect(connector.trustDomain).toBe(policy.trustDomain);
    expect(relay.trustDomain).toBe(policy.trustDomain);
    expect(relay.policy.file).toBe('policy.yaml');
  });
});
