import type { MuxStream } from '../src/mux/index.js';

/**
 * Keeps a clean end clean. Node's TLS layer destroys the stream it wraps with a bare destroy()
 * as soon as the TLS socket closes (JSStreamSocket.doClose). After a clean close that can happen
 * once the connector's close_notify has arrived but before its FIN frame has been read, and a
 * MuxStream destroyed without an error then sends RESET CANCEL: the relay and the connector would
 * record a complete stream as cancelled. So once our FIN is out, a bare destroy waits (at most
 * `lingerMs`) for the peer's FIN, discarding anything that still arrives. Destroys that carry an
 * error (a RESET from the peer, the session ending) pass straight through. The connector guards
 * its side the same way (connector/inner-tls.ts).
 */
export function lingerOnCleanClose(stream: MuxStream, lingerMs: number): void {
  const destroy = stream.destroy;
  let lingering = false;
  stream.destroy = function guardedDestroy(this: MuxStream, err?: Error | null) {
    if ((err !== undefined && err !== null) || lingering || this.destroyed || !this.writableFinished || this.readableEnded) {
      return destroy.call(this, err ?? undefined);
    }
    lingering = true;
    const done = (): void => {
      clearTimeout(timer);
      destroy.call(this);
    };
    const timer = setTimeout(done, lingerMs).unref();
    this.once('end', done);
    this.once('close', () => clearTimeout(timer));
    this.resume();
    return this;
  } as MuxStream['destroy'];
}
