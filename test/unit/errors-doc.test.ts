import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { ERROR_CATALOGUE, PosternError, isPosternError } from '../../src/errors.js';

const doc = readFileSync(resolve(import.meta.dirname, '../../docs/errors.md'), 'utf8');

describe('error catalogue', () => {
  it.each(Object.keys(ERROR_CATALOGUE))('%s is documented in docs/errors.md', (code) => {
    expect(doc).toMatch(new RegExp(`\\b${code}\\b`));
  });

  it('docs/errors.md documents no code that the catalogue lacks', () => {
    const documented = new Set(doc.match(/POSTERN_ERR_[A-Z0-9_]+/g) ?? []);
    for (const code of documented) expect(Object.keys(ERROR_CATALOGUE)).toContain(code);
  });

  it('errors carry their code, details and cause', () => {
    const cause = new Error('inner');
    const err = new PosternError('POSTERN_ERR_CONFIG_INVALID', 'bad', { cause, details: { field: 'x' } });
    expect(err.code).toBe('POSTERN_ERR_CONFIG_INVALID');
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ field: 'x' });
    expect(isPosternError(err, 'POSTERN_ERR_CONFIG_INVALID')).toBe(true);
    expect(isPosternError(err, 'POSTERN_ERR_INTERNAL')).toBe(false);
    expect(JSON.parse(JSON.stringify(err))).toMatchObject({ code: 'POSTERN_ERR_CONFIG_INVALID' });
  });
});
