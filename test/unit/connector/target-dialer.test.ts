import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer } from 'node:net';
import { compileAllowlist, parseTarget } from '../../../src/policy/index.js';
import { OpenResult } from '../../../src/protocol/reasons.js';
import { createTargetDialer, DialError, type LookupFn } from '../../../connector/target-dialer.js';
import { tcpTarget } from './helpers.js';

describe('target dialer', () => {
  let target: Awaited<ReturnType<typeof tcpTarget>>;
  let closedPort: number;

  beforeAll(async () => {
    target = await tcpTarget((s) => s.end());
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    closedPort = (probe.address() as { port: number }).port;
    await new Promise<void>((r) => probe.close(() => r()));
  });
  afterAll(() => target.close());

  function dialer(targets: string[], lookup: LookupFn, o: { hosts?: Record<string, string>; connectTimeoutMs?: number } = {}) {
    return createTargetDialer({
      allowlist: compileAllowlist({ targets }),
      hosts: new Map(Object.entries(o.hosts ?? {})),
      connectTimeoutMs: o.connectTimeoutMs ?? 5_000,
      keepAliveMs: 30_000,
      lookup,
    });
  }

  const counting = (answers: string[]) => {
    const calls: string[] = [];
    const lookup: LookupFn = async (host) => {
      calls.push(host);
      return answers.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
    };
    return { calls, lookup };
  };

  it('resolves a name once and dials only the checked addresses, in order (a forbidden one is skipped)', async () => {
    const { calls, lookup } = counting(['::1', '127.0.0.1']);
    const dial = dialer([`db.internal:${target.port}`, `127.0.0.1:${target.port}`], lookup);
    const before = target.accepted();
    const { socket, address, check } = await dial(parseTarget(`db.internal:${target.port}`));
    socket.destroy();
    expect(calls).toEqual(['db.internal']);
    expect(address).toBe('127.0.0.1');
    expect(check).toMatchObject({ allow: true, block: 'loopback' });
    expect(target.accepted()).toBe(before + 1);
  });

  it('refuses when every address of the name is forbidden, without dialing', async () => {
    const { lookup } = counting(['169.254.169.254', '127.0.0.1']);
    const dial = dialer([`db.internal:${target.port}`], lookup);
    const before = target.accepted();
    const err = await dial(parseTarget(`db.internal:${target.port}`)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DialError);
    expect(err).toMatchObject({ code: 'POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS', result: OpenResult.ALLOWLIST_DENIED, reason: 'forbidden-address' });
    expect((err as Error).message).toMatch(/cloud-metadata/);
    expect(target.accepted()).toBe(before);
  });

  it('uses a hosts entry before DNS', async () => {
    const { calls, lookup } = counting(['10.9.9.9']);
    const dial = dialer([`db.internal:${target.port}`, `127.0.0.1:${target.port}`], lookup, { hosts: { 'db.internal': '127.0.0.1' } });
    const { socket, address } = await dial(parseTarget(`db.internal:${target.port}`));
    socket.destroy();
    expect(calls).toEqual([]);
    expect(address).toBe('127.0.0.1');
  });

  it.each([
    ['ENOTFOUND', 'POSTERN_ERR_OPEN_TARGET_UNREACHABLE', OpenResult.TARGET_UNREACHABLE],
    ['EAI_AGAIN', 'POSTERN_ERR_OPEN_TARGET_UNREACHABLE', OpenResult.TARGET_UNREACHABLE],
  ])('maps a resolver failure %s to %s', async (errno, code, result) => {
    const dial = dialer(['db.internal:5432'], async () => {
      throw Object.assign(new Error(`getaddrinfo ${errno} db.internal`), { code: errno });
    });
    await expect(dial(parseTarget('db.internal:5432'))).rejects.toMatchObject({ code, result, reason: 'target-unreachable' });
  });

  it('maps ECONNREFUSED to TARGET_REFUSED', async () => {
    const dial = dialer([`127.0.0.1:${closedPort}`], counting([]).lookup);
    await expect(dial(parseTarget(`127.0.0.1:${closedPort}`))).rejects.toMatchObject({
      code: 'POSTERN_ERR_OPEN_TARGET_REFUSED', result: OpenResult.TARGET_REFUSED, reason: 'target-refused',
    });
  });

  it('bounds the whole dial by connectTimeoutMs, resolution included (TARGET_TIMEOUT)', async () => {
    const dial = dialer(['db.internal:5432'], () => new Promise(() => undefined), { connectTimeoutMs: 30 });
    await expect(dial(parseTarget('db.internal:5432'))).rejects.toMatchObject({
      code: 'POSTERN_ERR_OPEN_TARGET_TIMEOUT', result: OpenResult.TARGET_TIMEOUT, reason: 'target-timeout',
    });
  });

  it('returns a socket that keeps half-close (the splice passes EOF one way only)', async () => {
    const dial = dialer([`127.0.0.1:${target.port}`], counting([]).lookup);
    const { socket } = await dial(parseTarget(`127.0.0.1:${target.port}`));
    expect(socket.allowHalfOpen).toBe(true);
    socket.destroy();
  });
});
