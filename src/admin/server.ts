import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { formatListenAddress, type ListenAddress } from '../config/schemas.js';
import { PosternError } from '../errors.js';
import type { Logger } from '../log.js';

/** What a route answers. */
export interface AdminReply {
  status: number;
  contentType: string;
  body: string;
}

/** A GET handler; it never sees the request (routes take no input: nothing to parse, nothing to bound). */
export type AdminRoute = () => AdminReply | Promise<AdminReply>;

export interface AdminLimits {
  /** Request headers must have arrived within this (ms). */
  headersTimeoutMs: number;
  /** A whole request, headers and answer, within this (ms); also the idle bound of a socket. */
  requestTimeoutMs: number;
  /** An idle keep-alive connection is closed after this (ms). */
  keepAliveTimeoutMs: number;
  /** Connections held at once; more are refused by the kernel's accept and closed. */
  maxConnections: number;
  /** Request line and headers, bytes. */
  maxHeaderBytes: number;
  /** A route answer longer than this is not sent: 500 and a log line instead (bytes). */
  maxResponseBytes: number;
}

export const ADMIN_LIMITS: Readonly<AdminLimits> = Object.freeze({
  headersTimeoutMs: 5_000,
  requestTimeoutMs: 10_000,
  keepAliveTimeoutMs: 5_000,
  maxConnections: 32,
  maxHeaderBytes: 8 * 1024,
  maxResponseBytes: 4 * 1024 * 1024,
});

export interface AdminServerOptions {
  listen: ListenAddress;
  /** Exact paths (no query string) → handler. Anything else is 404. */
  routes: Readonly<Record<string, AdminRoute>>;
  logger?: Logger;
  limits?: Partial<AdminLimits>;
}

export interface AdminServer {
  /** Where it listens (the kernel's port when 0 was asked for). */
  readonly address: ListenAddress;
  /** `http://host:port`, for logs and tests. */
  readonly url: string;
  /** Stops accepting and closes every connection, idle or not. */
  close(): Promise<void>;
}

/**
 * A small HTTP/1.1 server for /healthz, /readyz, /metrics and /v1/status: GET only, no request
 * body read (a request announcing one is refused and its connection closed), header size,
 * time and connection count bounded. Plain HTTP: it belongs on loopback or a private network
 * (a warning is logged otherwise). Rejects with POSTERN_ERR_ADMIN_LISTEN when it cannot listen.
 */
export async function startAdminServer(options: AdminServerOptions): Promise<AdminServer> {
  const limits: AdminLimits = { ...ADMIN_LIMITS, ...stripUndefined(options.limits ?? {}) };
  const log = options.logger;
  const routes = new Map(Object.entries(options.routes));
  const sockets = new Set<Socket>();

  const server = createServer(
    {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.keepAliveTimeoutMs,
      // Node checks the two timeouts above only this often (30 s by default).
      connectionsCheckingInterval: Math.min(1_000, limits.headersTimeoutMs),
      noDelay: true,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        log?.error({ err, event: 'admin.internal', path: req.url }, 'admin request failed');
        if (!res.headersSent) send(res, jsonReply(500, { code: 'POSTERN_ERR_INTERNAL', message: 'the admin endpoint failed; see the log' }), true);
        else res.destroy();
      });
    },
  );
  server.maxConnections = limits.maxConnections;
  server.maxRequestsPerSocket = 100;
  server.timeout = limits.requestTimeoutMs;
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    log?.debug({ event: 'admin.client-error', code: err.code, err: err.message }, 'malformed admin request');
    if (socket.writable && !(socket as Socket).destroyed) {
      const status = err.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? '408 Request Timeout' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    } else {
      socket.destroy();
    }
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req.url);
    const route = path === undefined ? undefined : routes.get(path);
    const hasBody = (req.headers['content-length'] !== undefined && req.headers['content-length'] !== '0') || req.headers['transfer-encoding'] !== undefined;
    if (!route) return send(res, jsonReply(404, { code: 'not_found', message: `no such endpoint; try ${[...routes.keys()].join(', ')}` }), hasBody);
    if (req.method !== 'GET') {
      res.setHeader('allow', 'GET');
      return send(res, jsonReply(405, { code: 'method_not_allowed', message: `${path} answers GET only` }), true);
    }
    if (hasBody) return send(res, jsonReply(413, { code: 'body_not_accepted', message: 'the admin endpoint reads no request body' }), true);
    const reply = await route();
    const bytes = Buffer.byteLength(reply.body);
    if (bytes > limits.maxResponseBytes) {
      log?.error({ event: 'admin.response-too-large', path, bytes, maxResponseBytes: limits.maxResponseBytes }, 'admin answer over its bound: not sent');
      return send(res, jsonReply(500, { code: 'POSTERN_ERR_INTERNAL', message: `the answer of ${path} exceeds ${limits.maxResponseBytes} bytes` }), false);
    }
    send(res, reply, false);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const where = formatListenAddress(options.listen);
      reject(
        new PosternError(
          'POSTERN_ERR_ADMIN_LISTEN',
          `admin endpoint cannot listen on ${where}: ${err.code ?? err.message}${err.code === 'EADDRINUSE' ? ' (address in use)' : ''}; set admin.listen to another address, or admin: false to turn it off`,
          { cause: err, details: { listen: where, errno: err.code } },
        ),
      );
    });
    server.listen(options.listen.port, options.listen.host, () => resolve());
  });
  server.on('error', (err) => log?.error({ err, event: 'admin.error' }, 'admin endpoint error'));

  const info = server.address() as AddressInfo;
  const address: ListenAddress = { host: info.address, port: info.port };
  const url = `http://${formatListenAddress(address)}`;
  log?.info({ event: 'admin.listening', address: formatListenAddress(address), port: address.port }, `admin endpoint on ${url}`);
  if (!isLoopback(address.host)) {
    log?.warn({ event: 'admin.exposed', address: formatListenAddress(address) }, 'the admin endpoint listens beyond loopback: anyone who reaches it reads status and metrics');
  }

  let closing: Promise<void> | undefined;
  return {
    address,
    url,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      });
      return closing;
    },
  };
}

export function jsonReply(status: number, value: unknown): AdminReply {
  return { status, contentType: 'application/json; charset=utf-8', body: `${JSON.stringify(value)}\n` };
}

function send(res: ServerResponse, reply: AdminReply, close: boolean): void {
  res.writeHead(reply.status, {
    'content-type': reply.contentType,
    'content-length': Buffer.byteLength(reply.body),
    'cache-control': 'no-store',
    'x-content-type-options': 'nosniff',
    // An unread request body must not be parsed as the next request: the connection ends here.
    ...(close ? { connection: 'close' } : {}),
  });
  res.end(reply.body);
}

/** The path of a request target, without its query; undefined for a target that is not origin-form. */
function pathOf(target: string | undefined): string | undefined {
  if (!target?.startsWith('/')) return undefined;
  const q = target.indexOf('?');
  return q === -1 ? target : target.slice(0, q);
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.') || host.startsWith('::ffff:127.');
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
