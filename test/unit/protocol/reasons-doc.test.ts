import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ERROR_CATALOGUE } from '../../../src/errors.js';
import { REASON_TABLES } from '../../../src/protocol/reasons.js';

// docs/protocol.md §7 is what a second implementation reads: its tables must match the code.
const doc = readFileSync(resolve(import.meta.dirname, '../../../docs/protocol.md'), 'utf8');

function section(heading: string): string {
  const start = doc.indexOf(heading);
  expect(start, heading).toBeGreaterThan(-1);
  const end = doc.indexOf('\n### ', start + heading.length);
  return doc.slice(start, end === -1 ? undefined : end);
}

/** Rows `| n | NAME | …` of a table: number → the whole row. */
function rows(text: string): Map<number, string> {
  const out = new Map<number, string>();
  for (const m of text.matchAll(/^\| (\d+) \| (.*)$/gm)) out.set(Number(m[1]), m[0]);
  return out;
}

describe('docs/protocol.md reason tables match src/protocol/reasons.ts', () => {
  it.each([
    ['### OPEN_RESULT `result`', REASON_TABLES.openResult],
    ['### RESET `code`', REASON_TABLES.reset],
    ['### GOAWAY `reason`', REASON_TABLES.goAway],
  ] as const)('%s', (heading, table) => {
    const documented = rows(section(heading));
    const numbers = Object.keys(table).map(Number);
    for (const n of numbers) {
      const info = table[n]!;
      const row = documented.get(n);
      expect(row, `${heading}: row ${n}`).toBeDefined();
      expect(row).toContain(`| ${info.name} |`);
      const graceful = 'graceful' in info && info.graceful === true;
      if (!graceful) expect(row).toContain(`\`${info.code}\``);
      expect(Object.keys(ERROR_CATALOGUE)).toContain(info.code);
    }
    // Every documented number but OK (0) exists in the code.
    for (const n of documented.keys()) if (!(heading.includes('OPEN_RESULT') && n === 0)) expect(numbers, `${heading}: documented ${n}`).toContain(n);
  });
});
