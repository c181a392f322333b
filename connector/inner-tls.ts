import type { TLSSocket, TlsOptions } from 'node:tls';
import type { TlsError } from '../src/errors.js';
import type { MuxStream } from '../src/mux/index.js';
import { acceptTlsOverDuplex, mapTlsError } from '../src/pki/index.js';
import { ResetCode } from '../src/protocol/reasons.js';

/** An inner TLS session over a mux stream, and the one way to reset that stream. */
export interface InnerSession {
  tls: TLSSocket;
  /** RESET with `code` and `message`, whatever TLS is doing (bypasses the destroy guard). */
  reset(code: number, message: string): void;
}

/**
 * The server side of the inner TLS handshake over a mux stream.
 *
 * Node's TLS layer destroys the stream it wraps with a bare `destroy()` (JSStreamSocket.doClose)
 * whenever the TLS socket closes, and a MuxStream destroyed without an error sends RESET CANCEL
 * unless FIN went both ways. Two moments make that wrong, so bare destroys of this stream are
 * guarded:
 * - during the handshake, TLS destroys the stream BEFORE it reports why the handshake failed:
 *   the destroy is held, and the stream is then reset with INNER_TLS_FAILED and the reason, so
 *   the agent learns "revoked" or "untrusted CA" instead of a bare cancel (TLS 1.3 gives a
 *   refused client no readable alert);
 * - after a clean TLS close, TLS destroys the stream as soon as the agent's close_notify has
 *   arrived, which can be before the agent's FIN frame: when our FIN is out already, the
 *   destroy waits (at most `lingerMs`) for the agent's FIN, so a complete stream ends with
 *   FIN both ways rather than a CANCEL.
 * Destroys that carry an error (a RESET from the relay, the session ending) pass straight through.
 */
export async function acceptInnerTls(stream: MuxStream, options: TlsOptions, o: { timeoutMs: number; lingerMs: number }): Promise<InnerSession> {
  const guard = guardDestroy(stream, o.lingerMs);
  const reset = (code: number, message: string): void => {
    guard.release();
    stream.reset(code, message);
  };
  let tls: TLSSocket;
  try {
    tls = await acceptTlsOverDuplex(stream, options, { timeoutMs: o.timeoutMs });
  } catch (err) {
    const mapped: TlsError = mapTlsError(err);
    reset(ResetCode.INNER_TLS_FAILED, mapped.message);
    throw mapped;
  }
  guard.established();
  return { tls, reset };
}

function guardDestroy(stream: MuxStream, lingerMs: number): { established(): void; release(): void } {
  const destroy = stream.destroy;
  let phase: 'handshake' | 'established' = 'handshake';
  let held = false;
  let lingering = false;
  const release = (): void => {
    // The own property goes; the prototype's destroy is in force again.
    delete (stream as { destroy?: unknown }).destroy;
  };
  const linger = (): void => {
    if (lingering) return;
    lingering = true;
    const done = (): void => {
      clearTimeout(timer);
      release();
      stream.destroy();
    };
    const timer = setTimeout(done, lingerMs).unref();
    stream.once('end', done);
    stream.once('close', () => clearTimeout(timer));
    // Nothing reads the stream once TLS is gone: drop what comes, so the FIN is seen.
    stream.resume();
  };
  stream.destroy = function guardedDestroy(this: MuxStream, err?: Error | null) {
    if (err !== undefined && err !== null) return destroy.call(this, err);
    if (phase === 'handshake') {
      held = true;
      return this;
    }
    if (this.writableFinished && !this.readableEnded && !this.destroyed) {
      linger();
      return this;
    }
    return destroy.call(this);
  } as MuxStream['destroy'];
  return {
    established() {
      phase = 'established';
      if (held) {
        release();
        stream.destroy();
      }
    },
    release,
  };
}
