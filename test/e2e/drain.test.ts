import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeTestPki, type TestPki } from '../helpers/pki.js';
import { startPostgres, type TestPostgres } from '../helpers/pg.js';
import { stopAll } from '../helpers/processes.js';
import { echoServer, nextLine, startPool, type Pool, type PoolRelay } from '../helpers/relay-pool.js';

const GRACE_MS = 20_000;

/** Runs psql against 127.0.0.1:port; resolves with its exit code and output. */
function psql(port: number, sql: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', 'postgres', '-X', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
      env: { ...process.env, PGCONNECT_TIMEOUT: '20' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('relay drain on SIGTERM, real processes', () => {
  let pki: TestPki;
  let postgres: TestPostgres;
  let pool: Pool;

  beforeAll(async () => {
    [pki, postgres] = await Promise.all([makeTestPki(), startPostgres()]);
    pool = await startPool({ pki, name: 'drain', targets: [`127.0.0.1:${postgres.port}`], graceMs: GRACE_MS });
  });

  afterAll(async () => {
    await pool?.stop();
    await stopAll();
    await postgres?.stop();
    await pki?.cleanup();
  });

  it('a live psql query completes, a new open gets GOING_AWAY, the relay exits 0 within the grace period', async () => {
    const relay = pool.addRelay('relay-1');
    await pool.startRelay(relay);
    const relayHandle = relay.handle!;
    await pool.startConnector([relay]);
    await relayHandle.waitFor((l) => l.event === 'tunnel.up');
    const forward = await pool.forward([relay], `127.0.0.1:${postgres.port}`);

    // The query is running once the relay has spliced the stream and PostgreSQL has the statement.
    const query = psql(forward.port, 'select pg_sleep(3), 1');
    await relayHandle.waitFor((l) => l.event === 'stream.open' && l['decision'] === 'allow');
    await waitForQuery(postgres, 'select pg_sleep(3), 1');

    const signalledAt = Date.now();
    relayHandle.child.kill('SIGTERM');
    const draining = await relayHandle.waitFor('relay.draining');
    expect(draining['liveStreams']).toBe(1);

    // A new connection to the forward is a new open during the drain: refused with the drain code.
    const failed = nextLine(forward.handle, (l) => l.event === 'forward.dial-failed');
    const local = connect({ host: '127.0.0.1', port: forward.port });
    local.on('error', () => undefined);
    const refusal = await failed;
    local.destroy();
    expect(refusal['code']).toBe('POSTERN_ERR_OPEN_GOING_AWAY');
    expect(String(refusal['reason'])).toMatch(/draining/);
    // The relay is still draining the first stream at that moment.
    expect(relayHandle.child.exitCode).toBeNull();

    const result = await query;
    expect({ code: result.code, stdout: result.stdout.trim(), stderr: result.stderr }).toEqual({ code: 0, stdout: '|1', stderr: '' });

    const exit = await relayHandle.exited;
    const exitedAfterMs = Date.now() - signalledAt;
    expect(exit).toEqual({ code: 0, signal: null });
    expect(exitedAfterMs).toBeLessThan(GRACE_MS);
    const stopped = relayHandle.lines.find((l) => l.event === 'relay.stopped')!;
    expect(stopped['streamsReset']).toBe(0);
    // The psql stream was closed by its ends, not by the drain.
    const close = relayHandle.lines.find((l) => l.event === 'stream.close' && l['audit'] === true);
    expect(close?.['reason']).not.toBe('drain-timeout');
  });
});


describe('relay drain limits, real processes', () => {
  let pki: TestPki;
  let echo: Awaited<ReturnType<typeof echoServer>>;
  let pool: Pool | undefined;

  beforeAll(async () => {
    [pki, echo] = await Promise.all([makeTestPki(), echoServer()]);
  });

  afterEach(async () => {
    await pool?.stop();
    pool = undefined;
    await stopAll();
  });

  afterAll(async () => {
    await echo?.close();
    await pki?.cleanup();
  });

  /** A relay, the connector and a forward to the echo target, with one stream open through them. */
  async function withLiveStream(graceMs: number): Promise<{ relay: PoolRelay; local: Socket }> {
    const target = `127.0.0.1:${echo.port}`;
    pool = await startPool({ pki, name: `grace-${graceMs}`, targets: [target], graceMs });
    const relay = pool.addRelay('relay-1');
    await pool.startRelay(relay);
    await pool.startConnector([relay]);
    await relay.handle!.waitFor((l) => l.event === 'tunnel.up');
    const forward = await pool.forward([relay], target);
    const local = connect({ host: '127.0.0.1', port: forward.port });
    local.on('error', () => undefined);
    // Connected end to end once the echo comes back.
    const echoed = new Promise((resolve) => local.once('data', resolve));
    local.write('ping');
    await echoed;
    return { relay, local };
  }

  it('a stream that outlives drain.graceMs is reset DRAIN_TIMEOUT, and the relay still exits 0', async () => {
    const { relay, local } = await withLiveStream(1_000);
    const localClosed = new Promise((resolve) => local.once('close', resolve));
    relay.handle!.child.kill('SIGTERM');
    expect(await relay.handle!.exited).toEqual({ code: 0, signal: null });
    expect(relay.handle!.lines.find((l) => l.event === 'relay.stopped')?.['streamsReset']).toBe(1);
    expect(relay.handle!.lines.find((l) => l.event === 'stream.close' && l['audit'] === true)?.['reason']).toBe('drain-timeout');
    // The agent's local connection is closed, not left hanging.
    await localClosed;
  });

  it('a second signal during the drain exits at once with 130', async () => {
    const { relay } = await withLiveStream(60_000);
    relay.handle!.child.kill('SIGTERM');
    await relay.handle!.waitFor('relay.draining');
    relay.handle!.child.kill('SIGINT');
    expect(await relay.handle!.exited).toEqual({ code: 130, signal: null });
    expect(relay.handle!.lines.some((l) => l.event === 'process.forced-exit')).toBe(true);
  });
});

/** Resolves once PostgreSQL shows `sql` as an active statement (the psql session is mid-query). */
async function waitForQuery(postgres: TestPostgres, sql: string): Promise<void> {
  const probe = `select count(*) from pg_stat_activity where state = 'active' and query = '${sql.replaceAll("'", "''")}'`;
  // Each probe is a direct psql round trip (tens of ms): this polls PostgreSQL, bounded by the test timeout.
  while ((await postgres.psql(probe)).trim() !== '1');
}
