import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { validateOptions } from '../../src/options.js';
import { ConfigError } from '../../src/errors.js';

const schema = z.strictObject({ listen: z.string(), limits: z.strictObject({ maxStreams: z.number().int().positive() }) });

describe('validateOptions', () => {
  it('returns frozen, validated options', () => {
    const opts = validateOptions(schema, { listen: ':443', limits: { maxStreams: 5 } }, 'relay.yaml');
    expect(Object.isFrozen(opts)).toBe(true);
    expect(Object.isFrozen(opts.limits)).toBe(true);
  });

  it('names the unknown key with its path', () => {
    const run = () => validateOptions(schema, { listen: ':443', limits: { maxStream: 5 } }, 'relay.yaml');
    expect(run).toThrow(ConfigError);
    expect(run).toThrow(/relay\.yaml: .*"limits\.maxStream"/);
    try { run(); } catch (err) { expect((err as ConfigError).code).toBe('POSTERN_ERR_CONFIG_UNKNOWN_KEY'); }
  });

  it('names the invalid field', () => {
    try {
      validateOptions(schema, { listen: ':443', limits: { maxStreams: -1 } }, 'relay.yaml');
      expect.unreachable();
    } catch (err) {
      expect((err as ConfigError).code).toBe('POSTERN_ERR_CONFIG_INVALID');
      expect((err as Error).message).toMatch(/field "limits\.maxStreams"/);
    }
  });
});
