import { isIP } from 'node:net';
import { Duplex } from 'node:stream';
import type { TLSSocket } from 'node:tls';

type WriteCallback = (error?: Error | null) => void;

/** Dials `host:port` through the tunnel; rejects with an AgentDialError. */
export type TunnelDialer = (target: string, signal: AbortSignal) => Promise<TLSSocket>;

/**
 * The socket node-postgres gets from `agent.socketFactory()`: the subset of net.Socket that
 * pg uses (connect, 'connect', setNoDelay, setKeepAlive, ref/unref, write/end, data/error/close),
 * over an inner TLS socket of the tunnel. Backpressure is real both ways: a write completes only
 * once the inner socket accepted it (or drained), and a full read buffer pauses the inner socket
 * until pg reads again. Writes made before the dial completed wait for it, as on net.Socket.
 */
export class TunnelSocket extends Duplex {
  /** True between connect() and the dial's outcome, as net.Socket#connecting. */
  connecting = false;

  private inner: TLSSocket | undefined;
  private readonly controller = new AbortController();
  private heldWrite: { chunk: Buffer; callback: WriteCallback } | undefined;
  private heldFinal: WriteCallback | undefined;
  private wantRef = true;

  constructor(private readonly dialer: TunnelDialer) {
    // allowHalfOpen false, as net.Socket's default: the server's EOF ends our side too.
    super({ allowHalfOpen: false });
  }

  /** Dials `host:port` (pg calls `connect(port, host)`); emits 'connect' once the connector is connected, 'error' otherwise. */
  connect(port: number | string, host = 'localhost'): this {
    if (this.connecting || this.inner !== undefined || this.destroyed) return this;
    this.connecting = true;
    const target = isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
    this.dialer(target, this.controller.signal).then(
      (socket) => this.attach(socket),
      (err: Error) => {
        this.connecting = false;
        this.destroy(err);
      },
    );
    return this;
  }

  /**
   * Kept for net.Socket compatibility. There is no Nagle delay to turn off here: the tunnel's
   * TCP socket always runs with TCP_NODELAY and the mux frames each write at once.
   */
  setNoDelay(_noDelay?: boolean): this {
    return this;
  }

  /**
   * Kept for net.Socket compatibility. This stream has no TCP connection of its own to probe;
   * the relay session's PINGs and dead-peer timeout watch the path, and a dead connector or
   * target resets the stream.
   */
  setKeepAlive(_enable?: boolean, _initialDelay?: number): this {
    return this;
  }

  /** Lets the process exit while this connection is open (net.Socket#unref semantics). */
  unref(): this {
    this.wantRef = false;
    this.inner?.unref();
    return this;
  }

  ref(): this {
    this.wantRef = true;
    this.inner?.ref();
    return this;
  }

  private attach(socket: TLSSocket): void {
    this.connecting = false;
    if (this.destroyed) {
      socket.destroy();
      return;
    }
    this.inner = socket;
    if (!this.wantRef) socket.unref();
    socket.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) socket.pause();
    });
    socket.once('end', () => this.push(null));
    socket.on('error', (err: Error) => this.destroy(err));
    socket.once('close', () => {
      if (!this.destroyed) this.destroy();
    });
    const held = this.heldWrite;
    this.heldWrite = undefined;
    if (held) this.writeInner(held.chunk, held.callback);
    const final = this.heldFinal;
    this.heldFinal = undefined;
    if (final) socket.end(final);
    this.emit('connect');
    this.emit('ready');
  }

  private writeInner(chunk: Buffer, callback: WriteCallback): void {
    const inner = this.inner!;
    if (inner.write(chunk)) {
      callback();
      return;
    }
    const onDrain = (): void => {
      inner.off('close', onClose);
      callback();
    };
    const onClose = (): void => {
      inner.off('drain', onDrain);
      callback(new Error('the tunnel socket closed with a write pending'));
    };
    inner.once('drain', onDrain);
    inner.once('close', onClose);
  }

  override _read(): void {
    this.inner?.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: WriteCallback): void {
    if (this.inner === undefined) this.heldWrite = { chunk, callback };
    else this.writeInner(chunk, callback);
  }

  override _final(callback: WriteCallback): void {
    if (this.inner === undefined) this.heldFinal = callback;
    else this.inner.end(callback);
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.controller.abort();
    this.inner?.destroy();
    callback(err);
  }
}
