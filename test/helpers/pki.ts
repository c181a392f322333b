import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Role } from '../../src/identity/index.js';
import { POSTERN_BIN } from './processes.js';

const run = promisify(execFile);

export interface IssueOpts {
  org?: string;
  dns?: string[];
  ip?: string[];
  days?: number;
  /** Overwrite an earlier certificate of the same role and name. */
  force?: boolean;
}

export interface TestPki {
  /** The CA directory (a fresh temp dir). */
  dir: string;
  trustDomain: string;
  /** Path of ca.crt (also the trust bundle: one CA). */
  ca: string;
  /** Path of crl.pem, re-signed by revoke(). */
  crl: string;
  /** Paths of a certificate issued with the default layout (it may not exist yet). */
  files(role: Role, name: string): { cert: string; key: string };
  issue(role: Role, name: string, opts?: IssueOpts): Promise<{ cert: string; key: string }>;
  revoke(certPath: string): Promise<void>;
  /** Runs any other `postern pki …` command in this directory; resolves with its stdout. */
  pki(args: string[]): Promise<string>;
  cleanup(): Promise<void>;
}

/** Runs `node dist/cli/postern.js pki …`; rejects with the command's stderr when it fails. */
export async function postern(args: string[], cwd?: string): Promise<{ stdout: string; stderr: string }> {
  if (!existsSync(POSTERN_BIN)) throw new Error(`${POSTERN_BIN} is missing: build first (npx tsc -p .)`);
  try {
    return await run(process.execPath, [POSTERN_BIN, ...args], { cwd, timeout: 60_000 });
  } catch (err) {
    const e = err as Error & { stderr?: string; code?: number };
    throw new Error(`postern ${args.join(' ')} failed (exit ${e.code}): ${e.stderr ?? e.message}`, { cause: err });
  }
}

/**
 * A throwaway PKI made by our own `postern pki` CLI in a temp dir, with the usual cast issued:
 * relay-1 (DNS localhost, IPs 127.0.0.1 and ::1), connector hq, user alice and service reports
 * (all of org `opts.org`, default st-mary). Call cleanup() in afterAll.
 */
export async function makeTestPki(opts: { trustDomain?: string; org?: string } = {}): Promise<TestPki> {
  const trustDomain = opts.trustDomain ?? 'hospital.example';
  const org = opts.org ?? 'st-mary';
  const dir = await mkdtemp(join(tmpdir(), 'postern-pki-'));
  const pki = async (args: string[]) => (await postern(['pki', ...args])).stdout;
  const files = (role: Role, name: string) => ({ cert: join(dir, `${role}-${name}.crt`), key: join(dir, `${role}-${name}.key`) });
  const issue = async (role: Role, name: string, o: IssueOpts = {}) => {
    const args = ['issue', role, name, '--dir', dir];
    if (o.org !== undefined) args.push('--org', o.org);
    for (const d of o.dns ?? []) args.push('--dns', d);
    for (const i of o.ip ?? []) args.push('--ip', i);
    if (o.days !== undefined) args.push('--days', String(o.days));
    if (o.force) args.push('--force');
    await pki(args);
    return files(role, name);
  };
  try {
    await pki(['init', '--trust-domain', trustDomain, '--dir', dir]);
    // One after another: four node start-ups at once would crowd a shared 2-core machine for no gain.
    await issue('relay', 'relay-1', { dns: ['localhost'], ip: ['127.0.0.1', '::1'] });
    await issue('connector', 'hq', { org });
    await issue('user', 'alice', { org });
    await issue('service', 'reports', { org });
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    dir,
    trustDomain,
    ca: join(dir, 'ca.crt'),
    crl: join(dir, 'crl.pem'),
    files,
    issue,
    revoke: async (certPath: string) => {
      await pki(['revoke', certPath, '--dir', dir]);
    },
    pki,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}
