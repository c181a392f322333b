import { isIP, createServer, type Socket } from 'node:net';
import { z } from 'zod';
import type { ListenAddress } from '../src/config/schemas.js';
import { isPosternError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import { splice } from '../src/net/splice.js';
import { validateOptions } from '../src/options.js';
import { parseTarget, type Target } from '../src/policy/index.js';
import type { Agent } from './agent.js';
import { AgentError } from './errors.js';
import { tunnelEnd } from './forward.js';
import { listenAddress, listenOn } from './listen.js';
import { Reply, Socks5Handshake, encodeReply, replyForError, type SocksRequest } from './socks5-protocol.js';
import { checkConnectorId } from './validate.js';

export const SOCKS_DEFAULTS = Object.freeze({
  maxConnections: 1024,
  /** Greeting and request must arrive within this; a client that dawdles is closed. */
  handshakeTimeoutMs: 10_000,
  /** Most map entries: each is matched in turn for every request. */
  maxMapEntries: 1024,
});

const socksOptionsSchema = z.strictObject({
  listen: z.string(),
  connector: z.string().min(1).optional(),
  map: z
    .array(z.strictObject({ pattern: z.string().min(1), connector: z.string().min(1) }))
    .max(SOCKS_DEFAULTS.maxMapEntries)
    .default([]),
  maxConnections: z.number().int().positive().default(SOCKS_DEFAULTS.maxConnections),
  handshakeTimeoutMs: z.number().int().positive().default(SOCKS_DEFAULTS.handshakeTimeoutMs),
});

export interface SocksMapEntry {
  /** `*.st-mary.internal` (any name under that suffix, not the suffix itself) or one host. */
  pattern: string;
  connector: string;
}

export interface SocksOptions {
  listen: string;
  /** Connector for hosts no map entry matches; without it such requests are refused (0x02). */
  connector?: string;
  /** First matching entry wins. */
  map?: SocksMapEntry[];
  maxConnections?: number;
  handshakeTimeoutMs?: number;
  logger?: Logger;
}

export interface SocksProxy {
  readonly address: ListenAddress;
  readonly connections: number;
  close(): Promise<void>;
}

interface CompiledEntry {
  exact?: string;
  suffix?: string;
  connector: string;
}

/**
 * A local SOCKS5 proxy (no authentication, CONNECT): each request is dialed through the agent,
 * with the connector chosen by the map (else the default), and spliced once connected. Failed
 * dials get the SOCKS reply matching their cause; malformed clients get a proper failure reply
 * and are closed; nothing a client sends can grow a buffer beyond one request.
 */
export async function startSocks(agent: Agent, options: SocksOptions): Promise<SocksProxy> {
  const { logger, ...rest } = options;
  const o = validateOptions(socksOptionsSchema, rest, 'socks options');
  const listen = listenAddress(o.listen, 'socks options: field "listen"');
  if (o.connector !== undefined) checkConnectorId(o.connector, 'socks options: field "connector"');
  const map = o.map.map((entry, i) => compileEntry(entry, `socks options: field "map[${i}]"`));
  const log = (logger ?? agent.logger).child({ scope: 'socks' });
  const sockets = new Set<Socket>();

  const server = createServer({ allowHalfOpen: true }, (local) => serve(local));
  server.maxConnections = o.maxConnections;
  server.on('drop', (data) => {
    log.warn(
      { event: 'socks.refused', code: 'POSTERN_ERR_AGENT_CONNECTION_LIMIT', remote: data ? `${data.remoteAddress}:${data.remotePort}` : undefined, maxConnections: o.maxConnections },
      `local connection refused: ${o.maxConnections} connections are open (maxConnections)`,
    );
  });

  const pick = (target: Target): string | undefined => {
    for (const entry of map) {
      if (entry.exact !== undefined ? target.host === entry.exact : target.host.endsWith(entry.suffix!)) return entry.connector;
    }
    return o.connector;
  };

  const serve = (local: Socket): void => {
    local.setNoDelay(true);
    sockets.add(local);
    const remote = `${local.remoteAddress}:${local.remotePort}`;
    const controller = new AbortController();
    const handshake = new Socks5Handshake();
    const refuse = (bytes: Buffer, err: AgentError | Error, event: string): void => {
      const code = isPosternError(err) ? err.code : 'POSTERN_ERR_INTERNAL';
      log.warn({ event, remote, code, reason: err.message }, `${code}: ${err.message}`);
      local.end(bytes, () => local.destroy());
    };
    const timer = setTimeout(() => {
      const err = new AgentError('POSTERN_ERR_SOCKS_HANDSHAKE_TIMEOUT', `SOCKS5 greeting and request not complete within ${o.handshakeTimeoutMs} ms`);
      log.warn({ event: 'socks.handshake-timeout', remote, code: err.code }, err.message);
      local.destroy();
    }, o.handshakeTimeoutMs);
    local.on('error', (err: NodeJS.ErrnoException) => log.debug({ event: 'socks.local-error', remote, errno: err.code }, err.message));
    local.once('close', () => {
      clearTimeout(timer);
      sockets.delete(local);
      controller.abort();
    });
    const onData = (chunk: Buffer): void => {
      for (const action of handshake.feed(chunk)) {
        if (action.type === 'send') {
          local.write(action.bytes);
        } else if (action.type === 'fail') {
          stopHandshake();
          refuse(action.bytes, action.error, 'socks.bad-request');
        } else {
          stopHandshake();
          if (action.rest.length > 0) local.unshift(action.rest);
          connect(action.request);
        }
      }
    };
    // A client that ends before its request is complete will never complete it.
    const onEnd = (): void => {
      log.debug({ event: 'socks.client-ended', remote }, 'the client ended during the SOCKS5 handshake');
      local.destroy();
    };
    const stopHandshake = (): void => {
      clearTimeout(timer);
      local.off('data', onData);
      local.off('end', onEnd);
      local.pause();
    };
    local.on('data', onData);
    local.once('end', onEnd);

    const connect = (request: SocksRequest): void => {
      let target: Target;
      try {
        target = parseTarget(request.target);
      } catch (err) {
        refuse(encodeReply(Reply.GENERAL_FAILURE), err as Error, 'socks.bad-target');
        return;
      }
      const connector = pick(target);
      if (connector === undefined) {
        const err = new AgentError('POSTERN_ERR_SOCKS_NO_CONNECTOR', `no map entry matches ${target.host} and no default connector is set`, { details: { target: target.canonical } });
        refuse(encodeReply(replyForError(err.code)), err, 'socks.no-connector');
        return;
      }
      agent.dialWithInfo({ connector, target: target.canonical, signal: controller.signal }).then(
        async (info) => {
          if (local.destroyed) {
            info.socket.destroy();
            return;
          }
          local.write(encodeReply(Reply.SUCCEEDED));
          log.debug({ event: 'socks.connected', remote, connector, target: target.canonical, setupMs: Math.round(info.setupMs) }, 'stream connected');
          const result = await splice(local, info.socket);
          const counts = { remote, bytesUp: result.aToB, bytesDown: result.bToA };
          if (result.error && result.failedSide === 'b') {
            const end = tunnelEnd(result.error);
            log.warn({ event: 'socks.reset', ...counts, ...end }, `stream reset: ${end.code}${end.reset ? ` (${end.reset})` : ''}: ${end.reason}`);
          } else {
            log.debug({ event: 'socks.closed', ...counts, ...(result.error ? { error: result.error.message } : {}) }, 'stream closed');
          }
        },
        (err: unknown) => {
          if (controller.signal.aborted) return;
          const code = isPosternError(err) ? err.code : undefined;
          refuse(encodeReply(replyForError(code)), err as Error, 'socks.dial-failed');
        },
      );
    };
  };

  const address = await listenOn(server, listen, 'socks');
  log.info({ event: 'socks.listening', address, connector: o.connector, map: o.map }, `SOCKS5 proxy on ${address.host}:${address.port}`);
  return {
    address,
    get connections() {
      return sockets.size;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  };
}

/** `*.suffix` or a host, canonicalized as targets are (case, trailing dot, IDNA, IP spellings). */
function compileEntry(entry: SocksMapEntry, where: string): CompiledEntry {
  checkConnectorId(entry.connector, where);
  const wildcard = entry.pattern.startsWith('*.');
  const host = wildcard ? entry.pattern.slice(2) : entry.pattern;
  let target: Target;
  try {
    target = parseTarget(`${isIP(host) === 6 ? `[${host}]` : host}:1`);
  } catch (err) {
    throw new AgentError('POSTERN_ERR_CONFIG_INVALID', `${where}: pattern "${entry.pattern}" is not "*.domain" or a host: ${(err as Error).message}`, { cause: err });
  }
  if (wildcard) {
    if (target.kind !== 'dns') throw new AgentError('POSTERN_ERR_CONFIG_INVALID', `${where}: pattern "${entry.pattern}": a wildcard needs a domain name after "*."`);
    return { suffix: `.${target.host}`, connector: entry.connector };
  }
  return { exact: target.host, connector: entry.connector };
}
