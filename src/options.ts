import { z } from 'zod';
import { ConfigError } from './errors.js';

/**
 * Validate `input` with a zod schema once, at the edge. Every issue is reported with the
 * dotted path of the field it concerns, prefixed by `where` (a file name or "options").
 * Unknown keys (zod strictObject) become POSTERN_ERR_CONFIG_UNKNOWN_KEY. The result is
 * deep-frozen so nobody can change validated options afterwards.
 */
export function validateOptions<S extends z.ZodType>(schema: S, input: unknown, where: string): Readonly<z.output<S>> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((issue) => describeIssue(issue));
    const unknown = parsed.error.issues.find((issue) => issue.code === 'unrecognized_keys');
    throw new ConfigError(
      unknown ? 'POSTERN_ERR_CONFIG_UNKNOWN_KEY' : 'POSTERN_ERR_CONFIG_INVALID',
      `${where}: ${issues.join('; ')}`,
      { details: { where, issues } },
    );
  }
  return deepFreeze(parsed.data);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String).join('.');
  if (issue.code === 'unrecognized_keys') {
    const keys = issue.keys.map((k) => (path ? `${path}.${k}` : k));
    return `unknown key${keys.length > 1 ? 's' : ''} ${keys.map((k) => `"${k}"`).join(', ')}`;
  }
  return `${path ? `field "${path}"` : 'value'}: ${issue.message}`;
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value) && !Buffer.isBuffer(value)) {
    Object.freeze(value);
    for (const key of Object.keys(value as object)) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
