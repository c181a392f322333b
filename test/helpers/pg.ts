import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, chown, writeFile } from 'node:fs/promises';
import { existsSync, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** A throwaway PostgreSQL cluster on 127.0.0.1, owned by the test that started it. */
export interface TestPostgres {
  host: '127.0.0.1';
  port: number;
  user: 'postgres';
  database: 'postgres';
  dataDir: string;
  /** Directory of the server binaries (initdb, pgbench, …). */
  binDir: string;
  /** Connection URL for pg / psql. */
  url: string;
  /** Run psql against the cluster directly (not through any tunnel); returns stdout. */
  psql(sql: string, opts?: { port?: number; host?: string }): Promise<string>;
  stop(): Promise<void>;
}

/** The newest PostgreSQL server binary directory on this machine, or undefined. */
export function findPostgresBinDir(): string | undefined {
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    const versions = readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'postgres')));
    versions.sort((a, b) => Number(b) - Number(a));
    if (versions[0]) return join(base, versions[0], 'bin');
  }
  return undefined;
}

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;

/** Spawn options that run a server binary as the `postgres` OS user when we are root (the server refuses root). */
async function asPostgres(): Promise<{ uid?: number; gid?: number }> {
  if (!isRoot) return {};
  const [uid, gid] = await postgresUid();
  return { uid, gid };
}

/**
 * A port the kernel just handed out. PostgreSQL cannot take an already-open listener, so
 * this is the one place we release a port and reuse it; `startPostgres` retries when
 * another process won the race, so the race costs a retry, never a flaky test.
 */
async function kernelPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export async function startPostgres(): Promise<TestPostgres> {
  const binDir = findPostgresBinDir();
  if (!binDir) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (apt-get install postgresql)');
  const root = await mkdtemp(join(tmpdir(), 'postern-pg-'));
  const dataDir = join(root, 'data');
  const sockDir = root;
  if (isRoot) await chown(root, ...(await postgresUid()));
  const user = await asPostgres();
  await execFileAsync(join(binDir, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C'], { ...user, cwd: root });
  await writeFile(join(dataDir, 'postgresql.auto.conf'), 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n');
  if (isRoot) await chown(join(dataDir, 'postgresql.auto.conf'), ...(await postgresUid()));

  let lastError: Error | undefined;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await kernelPort();
    const args = ['-D', dataDir, '-p', String(port), '-k', sockDir, '-c', 'listen_addresses=127.0.0.1'];
    const child = spawn(join(binDir, 'postgres'), args, { ...user, cwd: root, stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      await waitForReady(child);
      return handle(child, port, binDir, dataDir, root);
    } catch (err) {
      lastError = err as Error;
      child.kill('SIGKILL');
      if (!/could not bind|Address already in use|could not create any TCP/i.test(lastError.message)) break;
    }
  }
  await rm(root, { recursive: true, force: true });
  throw lastError ?? new Error('PostgreSQL did not start');
}

let uidCache: [number, number] | undefined;
async function postgresUid(): Promise<[number, number]> {
  if (!uidCache) {
    const [{ stdout: uid }, { stdout: gid }] = await Promise.all([execFileAsync('id', ['-u', 'postgres']), execFileAsync('id', ['-g', 'postgres'])]);
    uidCache = [Number(uid.trim()), Number(gid.trim())];
  }
  return uidCache;
}

/** Resolves when the server logs that it accepts connections; rejects with its log if it exits. */
function waitForReady(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    let log = '';
    const onData = (chunk: Buffer): void => {
      log = (log + chunk.toString()).slice(-8192);
      if (log.includes('ready to accept connections')) {
        cleanup();
        child.stderr?.resume();
        resolve();
      }
    };
    const onExit = (code: number | null): void => {
      cleanup();
      reject(new Error(`postgres exited (${code}) before it was ready:\n${log}`));
    };
    const cleanup = (): void => {
      child.stderr?.off('data', onData);
      child.off('exit', onExit);
    };
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
  });
}

function handle(child: ChildProcess, port: number, binDir: string, dataDir: string, root: string): TestPostgres {
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: 'postgres',
    dataDir,
    binDir,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    async psql(sql, opts = {}) {
      const { stdout } = await execFileAsync(
        'psql',
        ['-h', opts.host ?? '127.0.0.1', '-p', String(opts.port ?? port), '-U', 'postgres', '-d', 'postgres', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql],
        { maxBuffer: 256 * 1024 * 1024, env: { ...process.env, PGCONNECT_TIMEOUT: '10' } },
      );
      return stdout;
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGINT'); // fast shutdown: does not wait for clients to disconnect
        await exited;
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}
