/**
 * What bench/run.ts says to its two endpoint processes (bench/lib/endpoint.ts) over IPC: the
 * source, which drives every measurement as the client (and holds an in-process Agent for the
 * library paths), and the sink, the target service at the far end of every path.
 */
import type { AgentOptions } from '../../agent-lib/index.js';
import type { Direction, TlsFiles } from './protocol.js';

/**
 * Where the source connects: a TCP port (plain, or a tunnel's local entry: a forward, a
 * stunnel client, an sshd forwarded port), a TLS 1.3 port of the sink (mutual, as the inner
 * TLS is), or `Agent.dial()` of the source's in-process agent through connector "hq".
 */
export type Target = { kind: 'tcp'; port: number } | { kind: 'tls'; port: number } | { kind: 'dial'; target: string };

export type ToSource =
  /** TLS files of the source's direct TLS client, and the options of its in-process Agent. */
  | { type: 'init'; tls: TlsFiles; agent: AgentOptions }
  /** Move `bytes` through `streams` parallel connections (each its own bulk exchange of bytes/streams). */
  | { type: 'bulk'; to: Target; dir: Direction; bytes: number; streams: number }
  /** `count` connections one after another: connect → first byte of the sink's hello, in ms each. */
  | { type: 'setup'; to: Target; count: number }
  /**
   * `busy` parallel downloads of `bytesEach`; with `stalled`, first one more download whose
   * reader stops after its first bytes and stays stopped until the busy ones are done.
   */
  | { type: 'fair'; to: Target; busy: number; bytesEach: number; stalled: boolean }
  /** Open `count` connections to the hello service (at most `concurrency` at a time) and hold them. */
  | { type: 'idle-open'; to: Target; count: number; concurrency: number }
  | { type: 'idle-close' }
  /** Dial until one dial gets the hello byte; a failed attempt is retried after `retryMs`. */
  | { type: 'probe'; to: Target; retryMs: number; timeoutMs: number }
  /** Memory after two full GCs. */
  | { type: 'mem' }
  | { type: 'exit' };

export type FromSource =
  | { type: 'ready' }
  | { type: 'bulk-done'; ms: number; bytes: number }
  | { type: 'setup-done'; ms: number[] }
  | { type: 'fair-done'; ms: number; bytes: number; stalledBytes: number }
  | { type: 'idle-opened'; ms: number; count: number }
  | { type: 'idle-closed' }
  | { type: 'probe-done'; attempts: number }
  | { type: 'mem'; rss: number; heapUsed: number }
  | { type: 'failed'; message: string };

export type ToSink =
  | { type: 'listen'; tls: TlsFiles }
  /** Answer once at most `atMost` hello connections are open (the far ends of closed idle streams). */
  | { type: 'await-hello'; atMost: number }
  | { type: 'exit' };

export interface SinkPorts {
  /** Bulk service (bench/lib/bulk.ts), plain TCP. */
  bulk: number;
  /** The same over mutual TLS 1.3. */
  bulkTls: number;
  /** Writes one byte on every new connection, then holds it open. */
  hello: number;
  /** The same over mutual TLS 1.3, the byte written once the handshake is done. */
  helloTls: number;
}

export type FromSink =
  | { type: 'listening'; ports: SinkPorts }
  | { type: 'hello-count'; count: number }
  | { type: 'failed'; message: string };
