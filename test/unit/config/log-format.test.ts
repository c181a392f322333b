import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { promisify } from 'node:util';
import { POSTERN_BIN, REPO_ROOT } from '../../helpers/processes.js';

// The connector with the example config logs config.loaded, then stops (exit 1) because the
// example's pki/ files do not exist: enough to see the format of a log line. `script` gives the
// process a terminal. Runs the built CLI (dist/).
const run = promisify(execFile);
const config = resolve(REPO_ROOT, 'deployments/examples/connector.yaml');
const script = ['/usr/bin/script', '/bin/script'].find((p) => existsSync(p));

/** stdout+stderr of the connector, under a pseudo-terminal or piped. */
async function firstLine(opts: { tty: boolean; args?: string[]; env?: Record<string, string> }): Promise<string> {
  const argv = [process.execPath, POSTERN_BIN, 'connector', '--config', config, ...(opts.args ?? [])];
  const env = { ...process.env, NO_COLOR: '1', ...opts.env };
  const [cmd, args] = opts.tty ? [script!, ['-qec', argv.map((a) => `'${a}'`).join(' '), '/dev/null']] : [argv[0]!, argv.slice(1)];
  const out = await run(cmd, args, { env, timeout: 60_000 }).then(
    (r) => r.stdout + r.stderr,
    (err: { stdout: string; stderr: string }) => err.stdout + err.stderr,
  );
  const line = out.split(/\r?\n/).find((l) => l.includes('config.loaded') || l.includes('configuration loaded'));
  expect(line, out).toBeDefined();
  return line!;
}

const isJson = (line: string): boolean => {
  try {
    return (JSON.parse(line) as { event?: string }).event === 'config.loaded';
  } catch {
    return false;
  }
};

describe('log format: the config when a layer sets it, else pretty on a terminal and JSON otherwise', () => {
  it('piped (systemd, containers): JSON; --log-format pretty: pretty', async () => {
    expect(isJson(await firstLine({ tty: false }))).toBe(true);
    const pretty = await firstLine({ tty: false, args: ['--log-format', 'pretty'] });
    expect(isJson(pretty)).toBe(false);
    expect(pretty).toContain('configuration loaded');
  });

  it.skipIf(script === undefined)('on a terminal: pretty; POSTERN_CONNECTOR_LOG__FORMAT=json: JSON', async () => {
    const pretty = await firstLine({ tty: true });
    expect(isJson(pretty)).toBe(false);
    expect(pretty).toContain('configuration loaded');
    expect(isJson(await firstLine({ tty: true, env: { POSTERN_CONNECTOR_LOG__FORMAT: 'json' } }))).toBe(true);
  });
});
