import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/processes.js';

const run = promisify(execFile);
const BENCH = resolve(REPO_ROOT, 'dist/bench/run.js');

/**
 * `npm run bench -- --smoke`, so the harness never rots (CONVENTIONS habit 10, issue 6). Only
 * that it runs to the end and prints every section is asserted: its figures are not thresholds
 * on a shared machine. The peer (sshd + stunnel) and pgbench may be skipped where they cannot
 * run, but then the output must say so.
 */
describe('npm run bench -- --smoke', () => {
  it('runs every measurement and prints every table', { timeout: 240_000 }, async () => {
    expect(existsSync(BENCH), `${BENCH} is missing: build first`).toBe(true);
    const { stdout, stderr } = await run('npm', ['run', '--silent', 'bench', '--', '--smoke'], {
      cwd: REPO_ROOT,
      timeout: 220_000,
      maxBuffer: 16 * 1024 * 1024,
    });
    for (const heading of [
      '## Targets (issue 6)',
      '## 1. Bulk: 8 MiB through one stream',
      '## 1b. Bulk: 16 streams in parallel',
      '## 2. PostgreSQL: pgbench',
      '## 3. Set-up latency',
      '## 4. Scale: 100 idle streams on one tunnel',
      '## 5. Fairness',
      '## 6. Reconnect',
    ]) {
      expect(stdout, stderr).toContain(heading);
    }
    for (const row of ['(a) plain TCP', '(b) one Node TLS 1.3 connection', '(c) Postern', 'direct TLS 1.3 handshake', 'Postern through `agent forward`']) {
      expect(stdout).toContain(row);
    }
    // Every figure of the Postern paths was measured (a number, not a dash).
    expect(stdout).toMatch(/\| \(c\) Postern[^|]*\| \d+/);
    expect(stdout).toMatch(/\| Postern through `agent forward` \(TCP in\) \| \d+\.\d\d \|/);
    expect(stdout).toMatch(/Busy streams keep \*\*\d+\.\d\d %\*\*/);
    expect(stdout).toMatch(/\| \d+ \| \d+ \| \d+ \| \d+ \|\n/);
    // The peer and pgbench: measured, or skipped with a line that says why.
    if (stdout.includes('**Peer skipped:**')) expect(stderr).toMatch(/peer \(ssh -R \+ stunnel\): SKIPPED — /);
    else expect(stdout).toMatch(/\| \(d\) peer: stunnel[^|]*\| \d+/);
    if (stdout.includes('**pgbench skipped:**')) expect(stderr).toMatch(/pgbench: SKIPPED — /);
    else expect(stdout).toMatch(/\| `-S`, 1 client \| \d+/);
  });
});
