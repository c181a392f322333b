/**
 * What the bench orchestrator (bench/mux.ts) and its child processes (bench/lib/mux-peer.ts)
 * say to each other over the IPC channel of `child_process.fork`.
 */

/**
 * The ways bytes travel in the comparison: the session with its defaults, the session with
 * a wider stream window (how much of the gap to raw ws is the window), raw ws, plain TLS;
 * and 'relay': the client process dials twice (a connector's session, then an agent's) and
 * the server process splices each agent stream to a stream it opens on the connector's
 * session, as the relay does, so the server's CPU is the relay's.
 */
export type Kind = 'mux' | 'mux-wide' | 'ws' | 'tls' | 'relay';

/** Stream window of the 'mux-wide' kind (the session default is 256 KiB). */
export const WIDE_WINDOW = 4 * 1024 * 1024;

export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
}

export type Direction = 'up' | 'down';

export type ToPeer =
  | { type: 'listen'; kind: Kind; tls: TlsFiles; maxStreams: number }
  | { type: 'connect'; kind: Kind; tls: TlsFiles; port: number; maxStreams: number }
  /** Client: move `bytes` through `streams` parallel streams (each gets bytes/streams). */
  | { type: 'bulk'; dir: Direction; bytes: number; streams: number }
  /** Client: open `count` streams that then stay idle. */
  | { type: 'idle'; count: number }
  /** Both: report CPU and memory (after a full GC when `gc` is set). */
  | { type: 'snap'; gc: boolean }
  | { type: 'exit' };

export interface Snapshot {
  cpuUserUs: number;
  cpuSystemUs: number;
  rss: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  /** Streams the peer holds open (server: accepted, client: opened). */
  streams: number;
}

export type FromPeer =
  | { type: 'listening'; port: number }
  | { type: 'connected' }
  | { type: 'bulk-done'; ms: number; bytes: number }
  | { type: 'idle-done'; ms: number; count: number }
  | { type: 'snap'; snap: Snapshot }
  | { type: 'failed'; message: string };

/** Header the client writes first on every bulk stream: direction (u8) + byte count (u64). */
export const BULK_HEADER_SIZE = 9;

export function bulkHeader(dir: Direction, bytes: number): Buffer {
  const h = Buffer.alloc(BULK_HEADER_SIZE);
  h.writeUInt8(dir === 'up' ? 1 : 2, 0);
  h.writeBigUInt64BE(BigInt(bytes), 1);
  return h;
}

export function parseBulkHeader(h: Buffer): { dir: Direction; bytes: number } {
  const d = h.readUInt8(0);
  if (d !== 1 && d !== 2) throw new Error(`bad bulk header direction ${d}`);
  return { dir: d === 1 ? 'up' : 'down', bytes: Number(h.readBigUInt64BE(1)) };
}

/** Payload of one write (and of one raw ws message): the session's default DATA payload cap. */
export const CHUNK = 64 * 1024;
