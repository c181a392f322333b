import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT } from '../helpers/processes.js';

const run = promisify(execFile);
const BENCH = resolve(REPO_ROOT, 'dist/bench/mux.js');

/**
 * bench/mux in smoke mode, so the benchmark never rots (CONVENTIONS habit 10). Only that it
 * runs to the end and reports every measurement is asserted: its figures are not thresholds
 * on a shared machine. Its own checks (every idle stream open on both ends) fail the run.
 */
describe('bench/mux --smoke', () => {
  it('runs every path and prints every table', async () => {
    expect(existsSync(BENCH), `${BENCH} is missing: build first`).toBe(true);
    const { stdout } = await run(process.execPath, [BENCH, '--smoke', '--reps', '1'], { timeout: 120_000 });
    for (const heading of [
      '## One stream, 16 MiB, client → server',
      '## One stream, 16 MiB, server → client',
      '## 100 streams in parallel on one session',
      '## 1,000 idle streams on one session',
    ]) {
      expect(stdout).toContain(heading);
    }
    for (const row of ['wss + mux session (one stream)', 'stream window 4 MiB', 'wss, raw binary messages (no mux)', 'plain TLS 1.3 socket (reference)']) {
      expect(stdout.split(row).length - 1).toBe(2);
    }
    expect(stdout).toMatch(/mux \/ raw ws = \*\*\d+\.\d\d\*\*/);
  });
});
