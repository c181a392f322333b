import { lookup as dnsLookup } from 'node:dns/promises';
import { connect, type Socket } from 'node:net';
import { PosternError, type ErrorCode } from '../src/errors.js';
import { checkResolvedAddress, type AddressCheck, type CompiledAllowlist, type Target } from '../src/policy/index.js';
import { OpenResult } from '../src/protocol/reasons.js';

/** Resolves a name to every address the system knows for it (`dns.lookup(host, { all: true })`). */
export type LookupFn = (host: string) => Promise<ReadonlyArray<{ address: string; family: number }>>;

/** Why a target could not be dialed: the inner response status and the audit reason go with it. */
export class DialError extends PosternError {
  /** OPEN_RESULT number the agent receives as the inner response status. */
  readonly result: number;
  /** Machine-readable audit reason: target-refused, target-unreachable, target-timeout, forbidden-address. */
  readonly reason: string;

  constructor(code: ErrorCode, result: number, reason: string, message: string, options: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(code, message, options);
    this.result = result;
    this.reason = reason;
  }
}

export interface TargetDialerOptions {
  allowlist: CompiledAllowlist;
  /** Canonical name → IP address, consulted before DNS. */
  hosts: ReadonlyMap<string, string>;
  /** Deadline of the whole dial: resolution and every connect attempt together. */
  connectTimeoutMs: number;
  keepAliveMs: number;
  lookup?: LookupFn;
}

export interface DialedTarget {
  socket: Socket;
  /** The checked address that was dialed. */
  address: string;
  check: AddressCheck;
}

export type TargetDialer = (target: Target) => Promise<DialedTarget>;

const defaultLookup: LookupFn = (host) => dnsLookup(host, { all: true });

/**
 * Dials a target the connector has decided to serve. The name is resolved ONCE (static `hosts`
 * first, then DNS); every address is checked by the address guard and only checked addresses
 * are dialed, in the resolver's order, so a rebinding DNS answer can never slip a loopback or
 * metadata address in between check and connect. The socket is half-open capable, TCP_NODELAY,
 * with keepalive.
 */
export function createTargetDialer(o: TargetDialerOptions): TargetDialer {
  const lookup = o.lookup ?? defaultLookup;
  return async (target) => {
    const deadline = Date.now() + o.connectTimeoutMs;
    const candidates = await resolve(target, o.hosts, lookup, o.connectTimeoutMs);
    const checked = candidates.map((address) => ({ address, check: checkResolvedAddress(address, target, o.allowlist) }));
    const allowed = checked.filter((c) => c.check.allow);
    if (allowed.length === 0) {
      const first = checked[0]!;
      throw new DialError('POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS', OpenResult.ALLOWLIST_DENIED, 'forbidden-address', `connector refused to dial ${target.canonical}: ${first.check.reason}`, {
        details: { target: target.canonical, address: first.address, block: first.check.block },
      });
    }
    let last: DialError | undefined;
    for (const { address, check } of allowed) {
      const left = deadline - Date.now();
      if (left <= 0) break;
      try {
        return { socket: await connectTo(address, target, left, o.keepAliveMs), address, check };
      } catch (err) {
        last = err as DialError;
      }
    }
    throw last ?? timeoutError(target, o.connectTimeoutMs);
  };
}

async function resolve(target: Target, hosts: ReadonlyMap<string, string>, lookup: LookupFn, timeoutMs: number): Promise<string[]> {
  if (target.kind !== 'dns') return [target.host];
  const pinned = hosts.get(target.host);
  if (pinned !== undefined) return [pinned];
  let timer: NodeJS.Timeout | undefined;
  try {
    const answers = await Promise.race([
      lookup(target.host),
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(timeoutError(target, timeoutMs, 'resolving the name')), timeoutMs);
      }),
    ]);
    const addresses = [...new Set(answers.map((a) => a.address))];
    if (addresses.length === 0) throw unreachable(target, 'ENODATA', `${target.host} has no address`);
    return addresses;
  } catch (err) {
    if (err instanceof DialError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'EAI_FAIL';
    throw unreachable(target, code, `cannot resolve ${target.host} (${code})`, err);
  } finally {
    clearTimeout(timer);
  }
}

function connectTo(address: string, target: Target, timeoutMs: number, keepAliveMs: number): Promise<Socket> {
  return new Promise((resolvePromise, reject) => {
    const socket = connect({ host: address, port: target.port, allowHalfOpen: true, noDelay: true, keepAlive: true, keepAliveInitialDelay: keepAliveMs });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(timeoutError(target, timeoutMs, `connecting to ${address}`));
    }, timeoutMs);
    const onError = (err: NodeJS.ErrnoException): void => {
      clearTimeout(timer);
      reject(mapConnectError(err, target, address));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolvePromise(socket);
    });
  });
}

function mapConnectError(err: NodeJS.ErrnoException, target: Target, address: string): DialError {
  const code = err.code ?? 'ERROR';
  const options = { cause: err, details: { target: target.canonical, address, errno: code } };
  if (code === 'ECONNREFUSED') {
    return new DialError('POSTERN_ERR_OPEN_TARGET_REFUSED', OpenResult.TARGET_REFUSED, 'target-refused', `${target.canonical} (${address}) refused the connection: nothing listens on port ${target.port}`, options);
  }
  if (code === 'ETIMEDOUT') return timeoutError(target, undefined, `connecting to ${address}`, err);
  return unreachable(target, code, `cannot reach ${target.canonical} at ${address} (${code})`, err, address);
}

function unreachable(target: Target, code: string, message: string, cause?: unknown, address?: string): DialError {
  return new DialError('POSTERN_ERR_OPEN_TARGET_UNREACHABLE', OpenResult.TARGET_UNREACHABLE, 'target-unreachable', message, {
    cause,
    details: { target: target.canonical, errno: code, ...(address ? { address } : {}) },
  });
}

function timeoutError(target: Target, timeoutMs: number | undefined, what = 'dialing', cause?: unknown): DialError {
  const within = timeoutMs === undefined ? '' : ` within dial.connectTimeoutMs (${timeoutMs} ms)`;
  return new DialError('POSTERN_ERR_OPEN_TARGET_TIMEOUT', OpenResult.TARGET_TIMEOUT, 'target-timeout', `${target.canonical}: ${what} did not complete${within}`, {
    cause,
    details: { target: target.canonical, timeoutMs },
  });
}
