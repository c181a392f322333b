import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { parseYamlWithSchema } from '../../../src/config/yaml.js';
import { ConfigError } from '../../../src/errors.js';

const schema = z.strictObject({
  listen: z.string(),
  relays: z.array(z.strictObject({ url: z.string().url() })).min(1),
});

function failure(text: string): ConfigError {
  try {
    parseYamlWithSchema(text, 'connector.yaml', schema);
  } catch (err) {
    return err as ConfigError;
  }
  throw new Error('expected a failure');
}

describe('parseYamlWithSchema', () => {
  it('returns frozen validated data', () => {
    const cfg = parseYamlWithSchema('listen: ":8443"\nrelays:\n  - url: wss://relay.example:443\n', 'c.yaml', schema);
    expect(cfg.relays[0]!.url).toBe('wss://relay.example:443');
    expect(Object.isFrozen(cfg.relays)).toBe(true);
  });

  it('names file, line, column and the field of a bad value', () => {
    const err = failure('listen: ":8443"\nrelays:\n  - url: not-a-url\n');
    expect(err.code).toBe('POSTERN_ERR_CONFIG_INVALID');
    expect(err.message).toMatch(/^connector\.yaml:3:10: field "relays\[0\]\.url"/);
  });

  it('names an unknown key where it stands', () => {
    const err = failure('listen: ":8443"\nrelay:\n  - url: wss://x\nrelays: [{url: "wss://y"}]\n');
    expect(err.code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY');
    expect(err.message).toMatch(/connector\.yaml:2:1: unknown key "relay"/);
  });

  it('reports YAML syntax errors with their position', () => {
    const err = failure('listen: ":8443"\n  relays: [\n');
    expect(err.code).toBe('POSTERN_ERR_CONFIG_INVALID');
    expect(err.message).toMatch(/^connector\.yaml:\d+:\d+: invalid YAML/);
  });

  it('refuses duplicate keys', () => {
    expect(failure('listen: a\nlisten: b\nrelays: [{url: "wss://y"}]\n').message).toMatch(/invalid YAML/);
  });
});
