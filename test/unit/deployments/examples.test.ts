import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { z } from 'zod';
import { parseYamlWithSchema } from '../../../src/config/yaml.js';
import { relayConfigSchema } from '../../../relay/options.js';
import { connectorConfigSchema } from '../../../connector/options.js';
import { agentOptionsSchema } from '../../../agent-lib/options.js';

const dir = resolve(import.meta.dirname, '../../../deployments/examples');
const examples: Array<[string, z.ZodType]> = [
  ['relay.yaml', relayConfigSchema],
  ['connector.yaml', connectorConfigSchema],
  ['agent.yaml', agentOptionsSchema],
];

describe('deployments/examples', () => {
  it.each(examples)('%s is valid against its schema', (name, schema) => {
    const path = resolve(dir, name);
    expect(existsSync(path), `${name} exists`).toBe(true);
    expect(() => parseYamlWithSchema(readFileSync(path, 'utf8'), path, schema)).not.toThrow();
  });
});
