import type { ErrorCode } from '../errors.js';

/**
 * Numeric codes carried by OPEN_RESULT, RESET and GOAWAY frames. A number is never reused or
 * renumbered; new codes may be added within v1, so a receiver maps an unknown number to the
 * generic code of its table instead of failing.
 */

export interface ReasonInfo {
  readonly name: string;
  readonly code: ErrorCode;
  readonly text: string;
}

export const OpenResult = {
  OK: 0,
  POLICY_DENIED: 1,
  UNKNOWN_CONNECTOR: 2,
  CONNECTOR_OFFLINE: 3,
  ALLOWLIST_DENIED: 4,
  TARGET_REFUSED: 5,
  TARGET_UNREACHABLE: 6,
  TARGET_TIMEOUT: 7,
  TARGET_INVALID: 8,
  LIMIT_REACHED: 9,
  GOING_AWAY: 10,
  OPEN_TIMEOUT: 11,
  INNER_TLS_FAILED: 12,
  INTERNAL: 13,
  METADATA_INVALID: 14,
  CANCELLED: 15,
} as const;

export const ResetCode = {
  CANCEL: 1,
  PROTOCOL_ERROR: 2,
  FLOW_CONTROL_ERROR: 3,
  STREAM_CLOSED: 4,
  PEER_GONE: 5,
  REVOKED: 6,
  POLICY_CHANGED: 7,
  IDLE_TIMEOUT: 8,
  DRAIN_TIMEOUT: 9,
  INTERNAL: 10,
  /** The connector refused the agent's inner TLS handshake (revoked, untrusted, wrong org). */
  INNER_TLS_FAILED: 11,
} as const;

export const GoAwayReason = {
  NORMAL: 0,
  DRAIN: 1,
  PROTOCOL_ERROR: 2,
  PING_TIMEOUT: 3,
  INTERNAL: 4,
  IDS_EXHAUSTED: 5,
  OVERLOADED: 6,
  REVOKED: 7,
} as const;

const OPEN_RESULTS: Readonly<Record<number, ReasonInfo>> = Object.freeze({
  [OpenResult.POLICY_DENIED]: { name: 'POLICY_DENIED', code: 'POSTERN_ERR_OPEN_POLICY_DENIED', text: 'denied by relay policy' },
  [OpenResult.UNKNOWN_CONNECTOR]: { name: 'UNKNOWN_CONNECTOR', code: 'POSTERN_ERR_OPEN_UNKNOWN_CONNECTOR', text: 'unknown connector' },
  [OpenResult.CONNECTOR_OFFLINE]: { name: 'CONNECTOR_OFFLINE', code: 'POSTERN_ERR_OPEN_CONNECTOR_OFFLINE', text: 'connector offline' },
  [OpenResult.ALLOWLIST_DENIED]: { name: 'ALLOWLIST_DENIED', code: 'POSTERN_ERR_OPEN_ALLOWLIST_DENIED', text: 'denied by the connector allowlist' },
  [OpenResult.TARGET_REFUSED]: { name: 'TARGET_REFUSED', code: 'POSTERN_ERR_OPEN_TARGET_REFUSED', text: 'target refused the connection' },
  [OpenResult.TARGET_UNREACHABLE]: { name: 'TARGET_UNREACHABLE', code: 'POSTERN_ERR_OPEN_TARGET_UNREACHABLE', text: 'target unreachable' },
  [OpenResult.TARGET_TIMEOUT]: { name: 'TARGET_TIMEOUT', code: 'POSTERN_ERR_OPEN_TARGET_TIMEOUT', text: 'target connection timed out' },
  [OpenResult.TARGET_INVALID]: { name: 'TARGET_INVALID', code: 'POSTERN_ERR_OPEN_TARGET_INVALID', text: 'target invalid' },
  [OpenResult.LIMIT_REACHED]: { name: 'LIMIT_REACHED', code: 'POSTERN_ERR_OPEN_LIMIT_REACHED', text: 'limit reached' },
  [OpenResult.GOING_AWAY]: { name: 'GOING_AWAY', code: 'POSTERN_ERR_OPEN_GOING_AWAY', text: 'session going away' },
  [OpenResult.OPEN_TIMEOUT]: { name: 'OPEN_TIMEOUT', code: 'POSTERN_ERR_OPEN_TIMEOUT', text: 'open timed out' },
  [OpenResult.INNER_TLS_FAILED]: { name: 'INNER_TLS_FAILED', code: 'POSTERN_ERR_OPEN_INNER_TLS_FAILED', text: 'inner TLS failed' },
  [OpenResult.INTERNAL]: { name: 'INTERNAL', code: 'POSTERN_ERR_OPEN_INTERNAL', text: 'internal error' },
  [OpenResult.METADATA_INVALID]: { name: 'METADATA_INVALID', code: 'POSTERN_ERR_OPEN_METADATA_INVALID', text: 'open metadata invalid' },
  [OpenResult.CANCELLED]: { name: 'CANCELLED', code: 'POSTERN_ERR_OPEN_CANCELLED', text: 'open cancelled' },
});

const RESET_CODES: Readonly<Record<number, ReasonInfo>> = Object.freeze({
  [ResetCode.CANCEL]: { name: 'CANCEL', code: 'POSTERN_ERR_STREAM_CANCELLED', text: 'stream cancelled' },
  [ResetCode.PROTOCOL_ERROR]: { name: 'PROTOCOL_ERROR', code: 'POSTERN_ERR_STREAM_PROTOCOL_ERROR', text: 'protocol error on the stream' },
  [ResetCode.FLOW_CONTROL_ERROR]: { name: 'FLOW_CONTROL_ERROR', code: 'POSTERN_ERR_STREAM_FLOW_CONTROL', text: 'flow control error on the stream' },
  [ResetCode.STREAM_CLOSED]: { name: 'STREAM_CLOSED', code: 'POSTERN_ERR_STREAM_ALREADY_CLOSED', text: 'sent on a closed stream direction' },
  [ResetCode.PEER_GONE]: { name: 'PEER_GONE', code: 'POSTERN_ERR_STREAM_PEER_GONE', text: 'the other leg of the stream went away' },
  [ResetCode.REVOKED]: { name: 'REVOKED', code: 'POSTERN_ERR_STREAM_REVOKED', text: 'certificate revoked' },
  [ResetCode.POLICY_CHANGED]: { name: 'POLICY_CHANGED', code: 'POSTERN_ERR_STREAM_POLICY_CHANGED', text: 'policy changed' },
  [ResetCode.IDLE_TIMEOUT]: { name: 'IDLE_TIMEOUT', code: 'POSTERN_ERR_STREAM_IDLE_TIMEOUT', text: 'idle timeout' },
  [ResetCode.DRAIN_TIMEOUT]: { name: 'DRAIN_TIMEOUT', code: 'POSTERN_ERR_STREAM_DRAIN_TIMEOUT', text: 'drain grace period over' },
  [ResetCode.INTERNAL]: { name: 'INTERNAL', code: 'POSTERN_ERR_STREAM_INTERNAL', text: 'internal error' },
  [ResetCode.INNER_TLS_FAILED]: { name: 'INNER_TLS_FAILED', code: 'POSTERN_ERR_STREAM_INNER_TLS_FAILED', text: 'the connector refused the inner TLS handshake' },
});

/** `code` is the error a session closed after this GOAWAY reports; graceful reasons report none. */
const GOAWAY_REASONS: Readonly<Record<number, ReasonInfo & { graceful: boolean }>> = Object.freeze({
  [GoAwayReason.NORMAL]: { name: 'NORMAL', code: 'POSTERN_ERR_SESSION_CLOSED', text: 'normal shutdown', graceful: true },
  [GoAwayReason.DRAIN]: { name: 'DRAIN', code: 'POSTERN_ERR_SESSION_CLOSED', text: 'draining: reconnect elsewhere', graceful: true },
  [GoAwayReason.PROTOCOL_ERROR]: { name: 'PROTOCOL_ERROR', code: 'POSTERN_ERR_SESSION_PROTOCOL_ERROR', text: 'protocol error', graceful: false },
  [GoAwayReason.PING_TIMEOUT]: { name: 'PING_TIMEOUT', code: 'POSTERN_ERR_SESSION_PING_TIMEOUT', text: 'ping timeout', graceful: false },
  [GoAwayReason.INTERNAL]: { name: 'INTERNAL', code: 'POSTERN_ERR_SESSION_INTERNAL', text: 'internal error', graceful: false },
  [GoAwayReason.IDS_EXHAUSTED]: { name: 'IDS_EXHAUSTED', code: 'POSTERN_ERR_STREAM_IDS_EXHAUSTED', text: 'stream ids exhausted', graceful: true },
  [GoAwayReason.OVERLOADED]: { name: 'OVERLOADED', code: 'POSTERN_ERR_SESSION_OVERLOADED', text: 'overloaded', graceful: false },
  [GoAwayReason.REVOKED]: { name: 'REVOKED', code: 'POSTERN_ERR_SESSION_REVOKED', text: 'certificate revoked', graceful: false },
});

export function describeOpenResult(result: number): ReasonInfo {
  return OPEN_RESULTS[result] ?? { name: `UNKNOWN(${result})`, code: 'POSTERN_ERR_OPEN_REFUSED', text: `refused with unknown result ${result}` };
}

export function describeResetCode(code: number): ReasonInfo {
  return RESET_CODES[code] ?? { name: `UNKNOWN(${code})`, code: 'POSTERN_ERR_STREAM_RESET', text: `reset with unknown code ${code}` };
}

export function describeGoAwayReason(reason: number): ReasonInfo & { graceful: boolean } {
  return GOAWAY_REASONS[reason] ?? { name: `UNKNOWN(${reason})`, code: 'POSTERN_ERR_SESSION_GOAWAY', text: `unknown reason ${reason}`, graceful: false };
}

/** Every defined code of each table, for documentation tests. */
export const REASON_TABLES = Object.freeze({ openResult: OPEN_RESULTS, reset: RESET_CODES, goAway: GOAWAY_REASONS });
