import type { IncomingMessage } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { isPosternError, type ErrorCode } from '../src/errors.js';
import { peerIdentity } from '../src/pki/index.js';
import type { Identity, Presentation } from '../src/identity/index.js';

/** The two doors of the one public port, each for one kind of client certificate. */
export const PATHS = { '/v1/tunnel': 'connector', '/v1/agent': 'agent' } as const;
export type Door = (typeof PATHS)[keyof typeof PATHS];

/** Connectors may name the id they mean to serve; it must be the one their certificate carries. */
export const CONNECTOR_HEADER = 'postern-connector';

export type Admission =
  | { ok: true; door: Door; identity: Identity }
  | { ok: false; status: number; code: ErrorCode; message: string; door?: Door };

const PRESENTED_AS: Record<Door, Presentation> = { connector: 'connector-client', agent: 'agent-client' };

/**
 * Authenticate at the door (CONVENTIONS habit 7): runs in the HTTP upgrade handler, before any
 * WebSocket exists. TLS already verified the chain and the CRL; this checks that the
 * certificate's role, trust domain and org fit the door it knocks on.
 */
export function admit(req: IncomingMessage, trustDomain: string): Admission {
  const path = new URL(req.url ?? '/', 'https://relay.invalid').pathname;
  const door = (PATHS as Record<string, Door | undefined>)[path];
  if (!door) {
    return { ok: false, status: 404, code: 'POSTERN_ERR_USAGE', message: `no such endpoint ${path}: connectors use /v1/tunnel, agents /v1/agent` };
  }
  let identity: Identity;
  try {
    identity = peerIdentity(req.socket as TLSSocket, { trustDomain, presentedAs: PRESENTED_AS[door] });
  } catch (err) {
    if (!isPosternError(err)) throw err;
    return { ok: false, status: 403, code: err.code, message: `${door} refused: ${err.message}`, door };
  }
  if (door === 'connector') {
    const claimed = req.headers[CONNECTOR_HEADER];
    if (claimed !== undefined && claimed !== identity.name) {
      return {
        ok: false,
        status: 403,
        code: 'POSTERN_ERR_ID_NAME_MISMATCH',
        message: `connector refused: it claims id "${String(claimed)}" but its certificate is ${identity.uri}`,
        door,
      };
    }
  }
  return { ok: true, door, identity };
}
