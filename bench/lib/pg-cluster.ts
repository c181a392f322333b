/**
 * A throwaway PostgreSQL cluster for the bench (initdb in a temp dir, loopback only, trust
 * auth, durability off: the bench measures the path to the server, not its disk) and pgbench
 * runs against any port that leads to it.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BIND_ATTEMPTS, BIND_FAILURE, Proc, kernelPort } from './process.js';

const run = promisify(execFile);

/** The newest PostgreSQL server binary directory (Debian layout), or undefined. */
export function findPgBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => existsSync(join(base, v, 'bin', 'postgres')) && existsSync(join(base, v, 'bin', 'pgbench')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(base, versions[0], 'bin');
}

export interface PgbenchResult {
  tps: number;
  transactions: number;
  latencyMs: number;
}

export interface PgCluster {
  port: number;
  version: string;
  /** `pgbench -i` at scale `scale` (through the direct port). */
  init(scale: number): Promise<void>;
  /** One pgbench run against `port` (direct, or a tunnel's local entry). */
  pgbench(port: number, args: readonly string[]): Promise<PgbenchResult>;
  stop(): Promise<void>;
}

/** The server refuses to run as root: as root, it runs as the `postgres` OS user. */
async function serverUser(): Promise<{ uid?: number; gid?: number }> {
  if (process.getuid?.() !== 0) return {};
  const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])]);
  return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

const clientEnv = { ...process.env, PGSSLMODE: 'disable', PGCONNECT_TIMEOUT: '10' };

export async function startPgCluster(dir: string, binDir: string): Promise<PgCluster> {
  const user = await serverUser();
  const root = join(dir, 'pg');
  const data = join(root, 'data');
  await mkdir(root, { recursive: true });
  if (user.uid !== undefined) {
    // The server user must traverse `dir` (mkdtemp makes it 0700) to reach its own directory.
    await chmod(dir, 0o711);
    await chown(root, user.uid, user.gid!);
  }
  await run(join(binDir, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { ...user, cwd: root });
  const conf = join(data, 'postgresql.auto.conf');
  await writeFile(conf, 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n');
  if (user.uid !== undefined) await chown(conf, user.uid, user.gid!);
  const version = (await run(join(binDir, 'postgres'), ['--version'])).stdout.trim();

  let server: Proc | undefined;
  let port = 0;
  for (let attempt = 1; !server; attempt++) {
    port = await kernelPort();
    const p = new Proc('postgres', join(binDir, 'postgres'), ['-D', data, '-p', String(port), '-k', root, '-c', 'listen_addresses=127.0.0.1'], { ...user, cwd: root });
    try {
      await p.waitFor(/ready to accept connections/);
      server = p;
    } catch (err) {
      await p.stop('SIGKILL');
      if (attempt >= BIND_ATTEMPTS || !BIND_FAILURE.test(p.output())) throw err;
    }
  }
  const pg = server;
  const common = (p: number): string[] => ['-h', '127.0.0.1', '-p', String(p), '-U', 'postgres'];

  return {
    port,
    version,
    async init(scale) {
      await run(join(binDir, 'pgbench'), ['-i', '-q', '-s', String(scale), ...common(port), 'postgres'], { env: clientEnv });
    },
    async pgbench(p, args) {
      const { stdout } = await run(join(binDir, 'pgbench'), [...args, ...common(p), 'postgres'], { env: clientEnv, maxBuffer: 16 * 1024 * 1024 });
      const num = (re: RegExp): number => {
        const m = re.exec(stdout);
        if (!m) throw new Error(`pgbench ${args.join(' ')}: no ${re} in its output:\n${stdout}`);
        return Number(m[1]);
      };
      return {
        tps: num(/^tps = ([\d.]+)/m),
        transactions: num(/^number of transactions actually processed: (\d+)/m),
        latencyMs: num(/^latency average = ([\d.]+) ms/m),
      };
    },
    async stop() {
      // SIGINT: fast shutdown, without waiting for clients to leave.
      await pg.stop('SIGINT');
    },
  };
}
