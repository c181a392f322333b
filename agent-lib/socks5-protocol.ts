import { type ErrorCode } from '../src/errors.js';
import { AgentError } from './errors.js';

/**
 * SOCKS5 (RFC 1928) as this proxy speaks it: no authentication, CONNECT only, address types
 * IPv4, domain name and IPv6. Pure: the handshake is a state machine fed with bytes, so tests
 * can feed it anything. Bounded: a greeting is at most 257 bytes and a request 262, and
 * nothing beyond the request is held (what follows it is handed back as `rest`).
 */
export const SOCKS_VERSION = 5;
export const METHOD_NO_AUTH = 0x00;
export const METHOD_NONE_ACCEPTABLE = 0xff;
export const CMD_CONNECT = 1;
export const ATYP = { IPV4: 1, DOMAIN: 3, IPV6: 4 } as const;

export const Reply = {
  SUCCEEDED: 0x00,
  GENERAL_FAILURE: 0x01,
  NOT_ALLOWED: 0x02,
  NETWORK_UNREACHABLE: 0x03,
  HOST_UNREACHABLE: 0x04,
  CONNECTION_REFUSED: 0x05,
  TTL_EXPIRED: 0x06,
  COMMAND_NOT_SUPPORTED: 0x07,
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

export const MAX_GREETING_BYTES = 2 + 255;
export const MAX_REQUEST_BYTES = 4 + 1 + 255 + 2;

export interface SocksRequest {
  addressType: 'ipv4' | 'domain' | 'ipv6';
  host: string;
  port: number;
  /** `host:port`, IPv6 in brackets. */
  target: string;
}

export type SocksAction =
  /** Bytes to send; the handshake goes on. */
  | { type: 'send'; bytes: Buffer }
  /** A complete CONNECT request; `rest` is what the client sent after it (to forward). */
  | { type: 'connect'; request: SocksRequest; rest: Buffer }
  /** Send `bytes` (a proper SOCKS reply), then close. */
  | { type: 'fail'; bytes: Buffer; error: AgentError };

/** The reply to a request: version, code, reserved, and a 0.0.0.0:0 bound address (the real one is the connector's). */
export function encodeReply(code: number): Buffer {
  return Buffer.from([SOCKS_VERSION, code, 0x00, ATYP.IPV4, 0, 0, 0, 0, 0, 0]);
}

export class Socks5Handshake {
  private buffered: Buffer = Buffer.alloc(0);
  private state: 'greeting' | 'request' | 'done' = 'greeting';

  get done(): boolean {
    return this.state === 'done';
  }

  /** Feeds received bytes; returns what to do, in order. Nothing once done. */
  feed(chunk: Buffer): SocksAction[] {
    if (this.state === 'done') return [];
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk]);
    const actions: SocksAction[] = [];
    if (this.state === 'greeting') {
      const greeting = this.greeting();
      if (greeting === undefined) return actions;
      actions.push(greeting);
      if (greeting.type === 'fail') return actions;
    }
    const request = this.request();
    if (request !== undefined) actions.push(request);
    return actions;
  }

  private greeting(): SocksAction | undefined {
    const buf = this.buffered;
    if (buf.length < 1) return undefined;
    if (buf[0] !== SOCKS_VERSION) return this.fail(Buffer.from([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE]), 'POSTERN_ERR_SOCKS_PROTOCOL', `greeting: version ${buf[0]}, this proxy speaks SOCKS5 only`);
    if (buf.length < 2) return undefined;
    const count = buf[1]!;
    if (count === 0) return this.fail(Buffer.from([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE]), 'POSTERN_ERR_SOCKS_PROTOCOL', 'greeting: the client offers no authentication method');
    if (buf.length < 2 + count) return undefined;
    const methods = buf.subarray(2, 2 + count);
    if (!methods.includes(METHOD_NO_AUTH)) {
      return this.fail(
        Buffer.from([SOCKS_VERSION, METHOD_NONE_ACCEPTABLE]),
        'POSTERN_ERR_SOCKS_UNSUPPORTED',
        `greeting: the client offers methods [${[...methods].join(', ')}] but not 0 (no authentication), the only one offered here`,
      );
    }
    this.buffered = buf.subarray(2 + count);
    this.state = 'request';
    return { type: 'send', bytes: Buffer.from([SOCKS_VERSION, METHOD_NO_AUTH]) };
  }

  private request(): SocksAction | undefined {
    const buf = this.buffered;
    if (buf.length < 1) return undefined;
    if (buf[0] !== SOCKS_VERSION) return this.fail(encodeReply(Reply.GENERAL_FAILURE), 'POSTERN_ERR_SOCKS_PROTOCOL', `request: version ${buf[0]}, expected 5`);
    if (buf.length < 2) return undefined;
    if (buf[1] !== CMD_CONNECT) {
      return this.fail(encodeReply(Reply.COMMAND_NOT_SUPPORTED), 'POSTERN_ERR_SOCKS_UNSUPPORTED', `request: command ${buf[1]} (${commandName(buf[1]!)}); only CONNECT (1) is offered`);
    }
    if (buf.length < 3) return undefined;
    if (buf[2] !== 0) return this.fail(encodeReply(Reply.GENERAL_FAILURE), 'POSTERN_ERR_SOCKS_PROTOCOL', `request: reserved byte is ${buf[2]}, must be 0`);
    if (buf.length < 4) return undefined;
    const atyp = buf[3]!;
    let request: SocksRequest;
    let length: number;
    if (atyp === ATYP.IPV4) {
      length = 4 + 4 + 2;
      if (buf.length < length) return undefined;
      const host = [...buf.subarray(4, 8)].join('.');
      const port = buf.readUInt16BE(8);
      request = { addressType: 'ipv4', host, port, target: `${host}:${port}` };
    } else if (atyp === ATYP.IPV6) {
      length = 4 + 16 + 2;
      if (buf.length < length) return undefined;
      const groups: string[] = [];
      for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(4 + 2 * i).toString(16));
      const host = groups.join(':');
      const port = buf.readUInt16BE(20);
      request = { addressType: 'ipv6', host, port, target: `[${host}]:${port}` };
    } else if (atyp === ATYP.DOMAIN) {
      if (buf.length < 5) return undefined;
      const nameLength = buf[4]!;
      if (nameLength === 0) return this.fail(encodeReply(Reply.GENERAL_FAILURE), 'POSTERN_ERR_SOCKS_PROTOCOL', 'request: empty domain name');
      length = 5 + nameLength + 2;
      if (buf.length < length) return undefined;
      let host: string;
      try {
        host = new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(5, 5 + nameLength));
      } catch {
        return this.fail(encodeReply(Reply.GENERAL_FAILURE), 'POSTERN_ERR_SOCKS_PROTOCOL', 'request: the domain name is not valid UTF-8');
      }
      const port = buf.readUInt16BE(5 + nameLength);
      request = { addressType: 'domain', host, port, target: `${host}:${port}` };
    } else {
      return this.fail(encodeReply(Reply.ADDRESS_TYPE_NOT_SUPPORTED), 'POSTERN_ERR_SOCKS_UNSUPPORTED', `request: address type ${atyp}; offered are 1 (IPv4), 3 (domain), 4 (IPv6)`);
    }
    const rest = buf.subarray(length);
    this.buffered = Buffer.alloc(0);
    this.state = 'done';
    return { type: 'connect', request, rest };
  }

  private fail(bytes: Buffer, code: ErrorCode, message: string): SocksAction {
    this.state = 'done';
    this.buffered = Buffer.alloc(0);
    return { type: 'fail', bytes, error: new AgentError(code, `SOCKS5 ${message}`) };
  }
}

function commandName(cmd: number): string {
  return cmd === 2 ? 'BIND' : cmd === 3 ? 'UDP ASSOCIATE' : 'unknown';
}

/** The CONNECT reply for a failed dial, by the dial error's code. */
export function replyForError(code: string | undefined): number {
  switch (code) {
    case 'POSTERN_ERR_OPEN_POLICY_DENIED':
    case 'POSTERN_ERR_OPEN_ALLOWLIST_DENIED':
    case 'POSTERN_ERR_STREAM_INNER_TLS_FAILED':
    case 'POSTERN_ERR_SOCKS_NO_CONNECTOR':
      return Reply.NOT_ALLOWED;
    case 'POSTERN_ERR_OPEN_TARGET_REFUSED':
      return Reply.CONNECTION_REFUSED;
    case 'POSTERN_ERR_OPEN_TARGET_UNREACHABLE':
      return Reply.HOST_UNREACHABLE;
    case 'POSTERN_ERR_OPEN_UNKNOWN_CONNECTOR':
    case 'POSTERN_ERR_OPEN_CONNECTOR_OFFLINE':
      return Reply.NETWORK_UNREACHABLE;
    case 'POSTERN_ERR_OPEN_TARGET_TIMEOUT':
    case 'POSTERN_ERR_OPEN_TIMEOUT':
    case 'POSTERN_ERR_AGENT_DIAL_TIMEOUT':
      return Reply.TTL_EXPIRED;
    default:
      return Reply.GENERAL_FAILURE;
  }
}
