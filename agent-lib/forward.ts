import { createServer, type Socket } from 'node:net';
import { z } from 'zod';
import type { ListenAddress } from '../src/config/schemas.js';
import { isPosternError } from '../src/errors.js';
import type { Logger } from '../src/log.js';
import { splice } from '../src/net/splice.js';
import { validateOptions } from '../src/options.js';
import { parseTarget } from '../src/policy/index.js';
import { StreamError } from '../src/mux/index.js';
import { describeResetCode } from '../src/protocol/reasons.js';
import type { Agent } from './agent.js';
import { listenAddress, listenOn } from './listen.js';
import { checkConnectorId } from './validate.js';

export const FORWARD_DEFAULTS = Object.freeze({
  /** Local connections open at once; a connection beyond is closed at once and logged. */
  maxConnections: 1024,
});

const forwardOptionsSchema = z.strictObject({
  listen: z.string(),
  connector: z.string().min(1),
  target: z.string().min(1),
  maxConnections: z.number().int().positive().default(FORWARD_DEFAULTS.maxConnections),
});

export interface ForwardOptions {
  /** `host:port` or `[ipv6]:port`; port 0 lets the kernel choose (see `address`). */
  listen: string;
  connector: string;
  target: string;
  maxConnections?: number;
  /** Default: the agent's logger. */
  logger?: Logger;
}

export interface Forward {
  /** The address really bound. */
  readonly address: ListenAddress;
  /** Local connections open now. */
  readonly connections: number;
  /** Stops listening and closes every local connection (their streams are reset). */
  close(): Promise<void>;
}

/**
 * A local TCP port whose every connection is dialed through the agent to `target` via
 * `connector` and spliced to the inner TLS socket, with backpressure and half-close. A failed
 * dial closes the local connection and logs its code and reason.
 */
export async function startForward(agent: Agent, options: ForwardOptions): Promise<Forward> {
  const { logger, ...rest } = options;
  const o = validateOptions(forwardOptionsSchema, rest, 'forward options');
  const listen = listenAddress(o.listen, 'forward options: field "listen"');
  // Fail at start rather than on every connection.
  checkConnectorId(o.connector, 'forward options: field "connector"');
  parseTarget(o.target);
  const log = (logger ?? agent.logger).child({ scope: 'forward' });
  const sockets = new Set<Socket>();

  const server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => serve(local));
  server.maxConnections = o.maxConnections;
  server.on('drop', (data) => {
    log.warn(
      { event: 'forward.refused', code: 'POSTERN_ERR_AGENT_CONNECTION_LIMIT', remote: data ? `${data.remoteAddress}:${data.remotePort}` : undefined, maxConnections: o.maxConnections },
      `local connection refused: ${o.maxConnections} connections are open (maxConnections)`,
    );
  });

  const serve = (local: Socket): void => {
    local.setNoDelay(true);
    sockets.add(local);
    const remote = `${local.remoteAddress}:${local.remotePort}`;
    const controller = new AbortController();
    local.on('error', (err: NodeJS.ErrnoException) => log.debug({ event: 'forward.local-error', remote, errno: err.code }, err.message));
    local.once('close', () => {
      sockets.delete(local);
      controller.abort();
    });
    agent.dialWithInfo({ connector: o.connector, target: o.target, signal: controller.signal }).then(
      async (info) => {
        if (local.destroyed) {
          info.socket.destroy();
          return;
        }
        log.debug({ event: 'forward.connected', remote, setupMs: Math.round(info.setupMs) }, 'stream connected');
        const result = await splice(local, info.socket);
        const counts = { remote, bytesUp: result.aToB, bytesDown: result.bToA };
        if (result.error && result.failedSide === 'b') {
          // Cut from the far side (revoked, policy changed, drain, target gone): the user must read why.
          const end = tunnelEnd(result.error);
          log.warn({ event: 'forward.reset', ...counts, ...end }, `stream reset: ${end.code}${end.reset ? ` (${end.reset})` : ''}: ${end.reason}`);
        } else {
          log.debug({ event: 'forward.closed', ...counts, ...(result.error ? { error: result.error.message, side: 'local' } : {}) }, 'stream closed');
        }
      },
      (err: unknown) => {
        if (controller.signal.aborted) {
          log.debug({ event: 'forward.abandoned', remote }, 'the local client left before the dial completed');
          return;
        }
        const code = isPosternError(err) ? err.code : 'POSTERN_ERR_INTERNAL';
        const reason = (err as Error)?.message ?? String(err);
        log.warn({ event: 'forward.dial-failed', remote, connector: o.connector, target: o.target, code, reason }, `dial failed: ${code}: ${reason}`);
        local.destroy();
      },
    );
  };

  const address = await listenOn(server, listen, 'forward');
  log.info({ event: 'forward.listening', address, connector: o.connector, target: o.target }, `forwarding ${address.host}:${address.port} → connector "${o.connector}" → ${o.target}`);

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

/**
 * Why a tunnelled stream ended, for the line `postern agent forward|socks` prints: the error code
 * (POSTERN_ERR_STREAM_REVOKED…), for a RESET its wire name (REVOKED), and the reason text the
 * relay or connector sent with it.
 */
export function tunnelEnd(err: Error): { code: string; reset?: string; reason: string } {
  const errno = (err as NodeJS.ErrnoException).code;
  const code = isPosternError(err) ? err.code : typeof errno === 'string' ? errno : 'POSTERN_ERR_INTERNAL';
  return { code, ...(err instanceof StreamError ? { reset: describeResetCode(err.resetCode).name } : {}), reason: err.message };
}
