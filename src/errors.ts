/**
 * The one catalogue of error codes users can meet. Every code here is documented in
 * docs/errors.md (test/unit/errors-doc.test.ts fails otherwise). Codes are stable: never
 * rename or reuse one; add a new one instead.
 *
 * Sections are grouped by area so that work on different areas touches different lines.
 */
export const ERROR_CATALOGUE = {
  // --- general / config -------------------------------------------------------------
  POSTERN_ERR_INTERNAL: 'An unexpected internal failure (a bug): please report it with the log line.',
  POSTERN_ERR_CONFIG_INVALID: 'A configuration file, option, environment variable or flag is invalid; the message names the field.',
  POSTERN_ERR_CONFIG_UNKNOWN_KEY: 'A configuration key is unknown (misspelled or renamed); the message names it.',
  POSTERN_ERR_FILE_READ: 'A file named in the configuration could not be read.',
  POSTERN_ERR_USAGE: 'A command-line invocation is malformed.',

  // --- pki (offline CA) ---------------------------------------------------------------
  POSTERN_ERR_PKI_EXISTS: 'A CA already exists in the directory; pass --force to overwrite it.',
  POSTERN_ERR_PKI_NOT_FOUND: 'No CA (ca.crt/ca.key) was found in the directory.',
  POSTERN_ERR_PKI_INVALID_NAME: 'A trust domain, org or name is not a valid SPIFFE path segment.',
  POSTERN_ERR_PKI_INVALID_CERT: 'A file is not a valid PEM certificate, key or CRL.',
  POSTERN_ERR_PKI_NOT_ISSUED_BY_CA: 'A certificate was not issued by the CA in the directory.',

  // --- identity (peer certificate -> Identity) ----------------------------------------
  POSTERN_ERR_ID_NO_URI_SAN: 'The certificate carries no URI SAN (SPIFFE ID).',
  POSTERN_ERR_ID_MULTIPLE_URI_SANS: 'The certificate carries more than one URI SAN.',
  POSTERN_ERR_ID_NOT_SPIFFE: 'The URI SAN does not use the spiffe:// scheme.',
  POSTERN_ERR_ID_WRONG_TRUST_DOMAIN: 'The SPIFFE ID belongs to another trust domain.',
  POSTERN_ERR_ID_MALFORMED: 'The SPIFFE ID path is malformed (empty segment, "..", trailing slash, escapes, query or fragment, unknown role layout).',
  POSTERN_ERR_ID_CA_AS_LEAF: 'A CA certificate was presented where a leaf certificate is required.',
  POSTERN_ERR_ID_KEY_USAGE: 'The key usage or extended key usage does not fit where the certificate is presented.',
  POSTERN_ERR_ID_WRONG_ROLE: 'The certificate role does not fit where it is presented (for example a relay certificate offered as an agent).',
  POSTERN_ERR_ID_ORG_MISMATCH: 'The certificate belongs to another org than the one required here.',
  POSTERN_ERR_ID_NAME_MISMATCH: 'The certificate names another connector or relay than the one expected.',

  // --- TLS ------------------------------------------------------------------------------
  POSTERN_ERR_TLS_HANDSHAKE: 'A TLS handshake failed; the message carries the reason.',
  POSTERN_ERR_TLS_CERT_REVOKED: 'The peer certificate is revoked by a loaded CRL.',
  POSTERN_ERR_TLS_CERT_UNTRUSTED: 'The peer certificate does not chain to the configured trust bundle.',
  POSTERN_ERR_TLS_CERT_EXPIRED: 'The peer certificate is expired or not yet valid.',
  POSTERN_ERR_TLS_INTERCEPTED: 'The relay presented a certificate from an unknown issuer; a TLS-inspecting proxy is the likely cause.',

  // --- pki / TLS material (added with the offline CA and the TLS option builders) -------
  POSTERN_ERR_FILE_WRITE: 'A file (certificate, key, CRL, state) could not be written.',
  POSTERN_ERR_PKI_FILE_EXISTS: 'A certificate or key file already exists; pass --force to overwrite it or choose another --out.',
  POSTERN_ERR_PKI_KEY_MISMATCH: 'A private key does not belong to the certificate it is paired with.',
  POSTERN_ERR_PKI_STATE_INVALID: 'The revocation store (revoked.json) in the CA directory is corrupt.',
  POSTERN_ERR_PKI_LOCKED: 'Another postern pki process is changing the CA directory right now.',
  POSTERN_ERR_PKI_CRL_MISSING: 'CRLs are configured but a CA of the trust bundle has none; every CA needs its own CRL.',
  POSTERN_ERR_PKI_CRL_EXPIRED: 'A CRL is past its nextUpdate; every peer of that CA would be refused until it is re-signed.',
  POSTERN_ERR_TLS_HANDSHAKE_TIMEOUT: 'A TLS handshake did not finish within the handshake timeout.',

  // --- transport (WebSocket adapter, src/mux/ws-transport.ts) ----------------------------
  POSTERN_ERR_WS_CONNECT: 'The WebSocket connection could not be opened (refused, unreachable, reset, closed early); the message names the address.',
  POSTERN_ERR_WS_HANDSHAKE_TIMEOUT: 'TCP connect, TLS handshake and WebSocket upgrade did not complete within handshakeTimeoutMs.',
  POSTERN_ERR_WS_UPGRADE_REFUSED: 'The server answered the WebSocket upgrade with an HTTP error; the message carries the status and the server\'s reason.',
  POSTERN_ERR_WS_UPGRADE_INVALID: 'A WebSocket upgrade request or response was malformed, or the connection ended during the upgrade.',
  POSTERN_ERR_WS_SUBPROTOCOL: 'The peer does not speak the WebSocket subprotocol postern.v1.',
  POSTERN_ERR_WS_TEXT_MESSAGE: 'The peer sent a text WebSocket message; frames travel only in binary messages.',
  POSTERN_ERR_WS_MESSAGE_TOO_BIG: 'The peer sent a WebSocket message larger than the frame cap (maxPayload).',
  POSTERN_ERR_WS_PROTOCOL: 'The peer broke the WebSocket protocol (bad opcode, masking, fragmentation, close code).',
  POSTERN_ERR_WS_CLOSED: 'The WebSocket closed abnormally or the peer closed it with an error code; the message carries code and reason.',

  // --- policy / targets -----------------------------------------------------------------
  POSTERN_ERR_TARGET_INVALID: 'A target ("host:port") is malformed: bad host name, IP literal or port; the message names the input and why.',
  POSTERN_ERR_TARGET_PATTERN_INVALID: 'A target pattern (policy or allowlist entry) is malformed; the message names the pattern and why.',
  POSTERN_ERR_POLICY_INVALID: 'A policy file is invalid; the message names file:line:col and the field.',
  POSTERN_ERR_POLICY_DENIED: 'The relay policy denied the stream (a deny rule, default deny, org isolation, an undeclared target, an unknown connector).',
  POSTERN_ERR_ALLOWLIST_DENIED: "The connector's local allowlist does not name the target or the principal.",
  POSTERN_ERR_TARGET_FORBIDDEN_ADDRESS: 'The target resolved to a loopback, link-local, unspecified, multicast or cloud-metadata address that the allowlist does not name.',

  // --- protocol / mux (src/protocol, src/mux; wire reason numbers in docs/protocol.md) ----
  POSTERN_ERR_PROTO_FRAME_TRUNCATED: 'A received frame is shorter than its header or than the lengths it declares.',
  POSTERN_ERR_PROTO_FRAME_TOO_LARGE: 'A received frame (or the length prefix announcing it) exceeds the frame size cap.',
  POSTERN_ERR_PROTO_UNKNOWN_FRAME_TYPE: 'A received frame has a type this protocol version does not define.',
  POSTERN_ERR_PROTO_MALFORMED_FRAME: 'A received frame breaks the layout of its type (flags, stream id 0, trailing bytes, a value out of range, invalid UTF-8).',
  POSTERN_ERR_PROTO_BAD_METADATA: 'Open metadata is malformed or over its limits (key syntax, duplicate key, entry count, total bytes, UTF-8).',
  POSTERN_ERR_PROTO_STREAM_ID_PARITY: 'The peer opened a stream with an id of the wrong parity (odd ids belong to the dialling side, even ids to the accepting side).',
  POSTERN_ERR_PROTO_STREAM_ID_REUSED: 'The peer opened a stream with an id that is not above every id it used before.',
  POSTERN_ERR_PROTO_STREAM_UNKNOWN: 'The peer sent a frame for a stream that was never opened.',
  POSTERN_ERR_PROTO_UNEXPECTED_FRAME: 'The peer sent a frame its stream state does not allow (OPEN_RESULT twice, DATA from the acceptor before its OPEN_RESULT).',
  POSTERN_ERR_PROTO_FLOW_CONTROL: 'The peer broke flow control: DATA beyond the credit granted, or a credit increment overflowing the window.',
  POSTERN_ERR_PROTO_STREAM_CLOSED: 'The peer sent DATA or FIN on a stream it had already half-closed.',
  POSTERN_ERR_PROTO_INNER_INVALID: 'The inner request or response (first bytes inside inner TLS) is malformed: version, lengths or UTF-8.',
  POSTERN_ERR_INNER_TIMEOUT: 'The inner request or response did not arrive in time after the inner TLS handshake.',
  POSTERN_ERR_INNER_CLOSED: 'The inner TLS session ended before the inner request or response arrived (the peer refused the stream).',
  POSTERN_ERR_SESSION_CLOSED: 'The tunnel session is closed (or closed while the operation was pending).',
  POSTERN_ERR_SESSION_PING_TIMEOUT: 'No frame arrived from the peer within deadPeerTimeoutMs: the peer or the path is dead.',
  POSTERN_ERR_SESSION_OVERLOADED: 'The peer provoked more control frames than maxControlQueue while not reading them, or reported the same of this side.',
  POSTERN_ERR_SESSION_PROTOCOL_ERROR: 'The peer closed the session because it says this side broke the tunnel protocol.',
  POSTERN_ERR_SESSION_INTERNAL: 'The peer closed the session because of an internal failure on its side.',
  POSTERN_ERR_SESSION_REVOKED: 'The peer closed the session because this side\'s certificate was revoked.',
  POSTERN_ERR_SESSION_GOAWAY: 'The peer closed the session with a GOAWAY reason this version does not know.',
  POSTERN_ERR_STREAM_IDS_EXHAUSTED: 'This side has used every stream id of the session; a new connection is needed.',
  POSTERN_ERR_MUX_MISUSE: 'A session or stream API was used out of order (an open decided twice, invalid result code, open on a closed session).',
  POSTERN_ERR_OPEN_POLICY_DENIED: 'The relay policy refused the stream; the message names the rule or the reason.',
  POSTERN_ERR_OPEN_UNKNOWN_CONNECTOR: 'The relay knows no connector with the requested id.',
  POSTERN_ERR_OPEN_CONNECTOR_OFFLINE: 'The requested connector is known but has no tunnel to this relay.',
  POSTERN_ERR_OPEN_ALLOWLIST_DENIED: "The connector's local allowlist refused the target or the principal.",
  POSTERN_ERR_OPEN_TARGET_REFUSED: 'The target refused the TCP connection (nothing listens on that port).',
  POSTERN_ERR_OPEN_TARGET_UNREACHABLE: 'The connector could not reach the target (DNS failure, no route).',
  POSTERN_ERR_OPEN_TARGET_TIMEOUT: 'The connector timed out connecting to the target.',
  POSTERN_ERR_OPEN_TARGET_INVALID: 'The requested target is malformed.',
  POSTERN_ERR_OPEN_LIMIT_REACHED: 'A limit refused the stream: streams per session, pending opens, or opens per second.',
  POSTERN_ERR_OPEN_GOING_AWAY: 'The session is draining (GOAWAY): it accepts no new stream; open on another connection.',
  POSTERN_ERR_OPEN_TIMEOUT: 'No answer to the open arrived within the open timeout.',
  POSTERN_ERR_OPEN_INNER_TLS_FAILED: 'The inner TLS session between agent and connector could not be set up.',
  POSTERN_ERR_OPEN_INTERNAL: 'The peer failed internally while handling the open.',
  POSTERN_ERR_OPEN_METADATA_INVALID: 'The peer refused the open because its metadata is malformed or over the peer\'s limits.',
  POSTERN_ERR_OPEN_CANCELLED: 'The open was cancelled (abort signal, or the opener gave up) before it completed.',
  POSTERN_ERR_OPEN_REFUSED: 'The peer refused the open with a result code this version does not know.',
  POSTERN_ERR_STREAM_CANCELLED: 'The peer cancelled the stream.',
  POSTERN_ERR_STREAM_PROTOCOL_ERROR: 'The peer reset the stream because this side broke the protocol on it.',
  POSTERN_ERR_STREAM_FLOW_CONTROL: 'The peer reset the stream because this side broke flow control on it.',
  POSTERN_ERR_STREAM_ALREADY_CLOSED: 'The peer reset the stream because this side sent on a direction it had closed.',
  POSTERN_ERR_STREAM_PEER_GONE: 'The other leg of a spliced stream died (agent or target went away).',
  POSTERN_ERR_STREAM_REVOKED: 'The stream was cut because a certificate it depends on was revoked.',
  POSTERN_ERR_STREAM_POLICY_CHANGED: 'The stream was cut because a policy change no longer allows it.',
  POSTERN_ERR_STREAM_IDLE_TIMEOUT: 'The stream was cut after carrying no data for the idle timeout.',
  POSTERN_ERR_STREAM_DRAIN_TIMEOUT: 'The stream was cut because it outlived the drain grace period of a GOAWAY.',
  POSTERN_ERR_STREAM_INTERNAL: 'The peer reset the stream because of an internal failure.',
  POSTERN_ERR_STREAM_INNER_TLS_FAILED: 'The connector refused the inner TLS handshake of this stream (agent certificate revoked, untrusted, or of another org).',
  POSTERN_ERR_STREAM_RESET: 'The peer reset the stream with a code this version does not know.',

  // --- connector (connector/: tunnels, inner TLS server, target dialing) ----------------
  POSTERN_ERR_CONNECTOR_PRINCIPAL_MISMATCH: "The relay named another principal than the agent's inner TLS certificate; the connector refused the stream.",
  POSTERN_ERR_CONNECTOR_TARGET_MISMATCH: 'The agent named another target inside inner TLS than the relay asked for; the connector refused the stream.',

  // --- agent (agent-lib: Agent, postern agent forward|socks|check) -----------------------
  POSTERN_ERR_AGENT_CLOSED: 'The agent was closed: it dials no more, and dials pending when it closed were abandoned.',
  POSTERN_ERR_AGENT_DIAL_TIMEOUT: 'A dial (relay session, open, inner TLS handshake and the connector\'s answer) did not complete within limits.dialTimeoutMs.',
  POSTERN_ERR_AGENT_CONNECTOR_INVALID: 'The connector id given to dial() (or --connector, or a SOCKS map entry) is not a valid connector id.',
  POSTERN_ERR_AGENT_LISTEN: 'A local listener of postern agent forward or socks could not listen (address in use, no such local address, permission denied).',
  POSTERN_ERR_AGENT_CONNECTION_LIMIT: 'A local connection was refused because maxConnections local connections are already open.',
  POSTERN_ERR_SOCKS_PROTOCOL: 'A SOCKS client sent a malformed greeting or request; it got a SOCKS failure reply and was disconnected.',
  POSTERN_ERR_SOCKS_UNSUPPORTED: 'A SOCKS client asked for what this proxy does not offer: an authentication method other than "no authentication", BIND, UDP ASSOCIATE, or an unknown address type.',
  POSTERN_ERR_SOCKS_NO_CONNECTOR: 'No SOCKS map entry matches the requested host and no default connector is configured.',
  POSTERN_ERR_SOCKS_HANDSHAKE_TIMEOUT: 'A SOCKS client did not complete its greeting and request within the handshake timeout.',

  // --- admin endpoint (src/admin: /healthz, /readyz, /metrics, /v1/status) ----------------
  POSTERN_ERR_ADMIN_LISTEN: 'The admin HTTP endpoint could not listen on admin.listen (address in use, no such local address, permission denied).',

  // --- outbound HTTP CONNECT proxy (src/net/http-proxy.ts, src/net/proxy-config.ts) -------
  POSTERN_ERR_PROXY_UNREACHABLE: 'The HTTP proxy could not be reached (refused, unreachable, name not found, reset before answering); the message names the proxy.',
  POSTERN_ERR_PROXY_TIMEOUT: 'The HTTP proxy did not answer the CONNECT request within the handshake timeout.',
  POSTERN_ERR_PROXY_AUTH_FAILED: 'The HTTP proxy answered 407: it requires credentials, or refused those of the proxy URL; the message names the proxy (never the password).',
  POSTERN_ERR_PROXY_REFUSED: 'The HTTP proxy refused to open a tunnel to the relay; the message carries its status (403 port or host not allowed, 502 relay unreachable from the proxy...).',
  POSTERN_ERR_PROXY_PROTOCOL: 'The HTTP proxy answered the CONNECT request with something that is not a valid HTTP/1.x response (or a header over the size cap, or it closed mid-answer).',
} as const;

export type ErrorCode = keyof typeof ERROR_CATALOGUE;

export interface PosternErrorOptions {
  cause?: unknown;
  /** Machine-readable context (field names, rule ids…); never secrets. */
  details?: Record<string, unknown>;
}

/** Base of every error Postern raises on purpose. `code` is stable and documented. */
export class PosternError extends Error {
  readonly code: ErrorCode;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, options: PosternErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = Object.freeze({ ...options.details });
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

export class ConfigError extends PosternError {}
export class PkiError extends PosternError {}
export class IdentityError extends PosternError {}
export class TlsError extends PosternError {}
/** A target or target pattern is malformed (POSTERN_ERR_TARGET_INVALID, POSTERN_ERR_TARGET_PATTERN_INVALID). */
export class TargetError extends PosternError {}
/** Policy invalid or a stream denied by policy, allowlist or address guard. */
export class PolicyError extends PosternError {}

/** Reaching the relay through an HTTP CONNECT proxy failed (codes POSTERN_ERR_PROXY_*). */
export class ProxyError extends PosternError {}

/** A tunnel frame or stream broke the wire protocol (codes POSTERN_ERR_PROTO_*). */
export class ProtocolError extends PosternError {}

export function isPosternError(err: unknown, code?: ErrorCode): err is PosternError {
  return err instanceof PosternError && (code === undefined || err.code === code);
}
