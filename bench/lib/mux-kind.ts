/** The session layer as the bench drives it: defaults, except the limits a bench must lift. */
import { Session, type IncomingOpen, type MuxStream, type SessionOptions } from '../../src/mux/index.js';
import { splice } from '../../src/net/splice.js';
import { OpenResult } from '../../src/protocol/reasons.js';
import type { WsFrameTransport } from '../../src/mux/ws-transport.js';
import { DEFAULT_DECODE_LIMITS, maxMessageSize } from '../../src/protocol/index.js';

/** The WebSocket frame cap that fits the session's default limits. */
const MAX_PAYLOAD = maxMessageSize(DEFAULT_DECODE_LIMITS);

/**
 * Session defaults except: the stream window when one is given ('mux-wide'), streams per direction (10,000 idle streams is a measurement here)
 * and opens per second (the token bucket would otherwise pace the idle-stream test at the
 * default 500/s and measure the limiter, not the mux).
 */
function options(role: 'client' | 'server', transport: WsFrameTransport, maxStreams: number, initialWindow: number | undefined): SessionOptions {
  return {
    role,
    ...(initialWindow === undefined ? {} : { initialWindow }),
    maxStreams,
    maxOpensPerSecond: Math.max(maxStreams, 1) * 10,
    // The session pauses DATA at the transport's own mark, so its drain always follows.
    transportHighWaterMark: transport.highWaterMark,
  };
}

export interface MuxClient {
  openStream(): Promise<MuxStream>;
  openStreams(): number;
}

export const muxServer = {
  maxPayload: MAX_PAYLOAD,
  serve(
    transport: WsFrameTransport,
    maxStreams: number,
    initialWindow: number | undefined,
    h: { stream(s: MuxStream): void; closed(): void; gone(): void },
  ): void {
    const session = new Session(transport, options('server', transport, maxStreams, initialWindow));
    session.on('open', (open: IncomingOpen) => {
      const stream = open.accept();
      stream.once('close', h.closed);
      h.stream(stream);
    });
    session.on('close', () => h.gone());
  },
};

/**
 * The 'relay' kind's server: the first session to arrive is the connector's; each open on a
 * later (agent) session is spliced to a stream opened on the connector's session, as
 * relay/opens.ts does once policy has allowed it.
 */
export class MuxRelay {
  readonly maxPayload = MAX_PAYLOAD;
  private connector: Session | undefined;

  attach(transport: WsFrameTransport, maxStreams: number, fail: (err: Error) => void): void {
    const session = new Session(transport, options('server', transport, maxStreams, undefined));
    if (this.connector === undefined) {
      this.connector = session;
      return;
    }
    const connector = this.connector;
    session.on('open', (open: IncomingOpen) => {
      connector.open({ ...open.metadata }).then(
        (next) => void splice(open.accept(), next).then((r) => r.error && fail(r.error)),
        (err: Error) => open.reject(OpenResult.INTERNAL, err.message),
      );
    });
  }
}

export const muxClient = {
  maxPayload: MAX_PAYLOAD,
  open(transport: WsFrameTransport, maxStreams: number, initialWindow: number | undefined, fail: (err: Error) => void): MuxClient {
    const session = new Session(transport, options('client', transport, maxStreams, initialWindow));
    session.on('close', (err?: Error) => {
      if (err) fail(err);
    });
    return {
      openStream: () => session.open({ bench: 'bulk' }),
      openStreams: () => session.streamCount,
    };
  },
  /** The 'relay' kind's connector: a dialling session that accepts the relay's opens. */
  serve(transport: WsFrameTransport, maxStreams: number, stream: (s: MuxStream) => void, fail: (err: Error) => void): void {
    const session = new Session(transport, options('client', transport, maxStreams, undefined));
    session.on('open', (open: IncomingOpen) => stream(open.accept()));
    session.on('close', (err?: Error) => {
      if (err) fail(err);
    });
  },
};
