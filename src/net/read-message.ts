import type { Readable } from 'node:stream';
import { PosternError } from '../errors.js';

/**
 * Reads one length-delimited message from the start of a stream with an incremental decoder,
 * then puts any bytes after it back (`unshift`) so whoever reads next sees the stream intact.
 * Bounded twice: the decoder caps the message's declared size, and `timeoutMs` caps the wait.
 */
export function readMessage<T>(
  stream: Readable,
  decode: (buf: Buffer) => { value: T; length: number } | undefined,
  o: { timeoutMs: number; what: string },
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let buffered: Buffer = Buffer.alloc(0);
    const timer = setTimeout(() => finish(new PosternError('POSTERN_ERR_INNER_TIMEOUT', `no ${o.what} within ${o.timeoutMs} ms`)), o.timeoutMs);
    const finish = (err: Error | undefined, value?: T, rest?: Buffer): void => {
      clearTimeout(timer);
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('error', onError);
      stream.off('close', onEnd);
      stream.pause();
      if (err) return reject(err);
      if (rest && rest.length > 0) stream.unshift(rest);
      resolve(value as T);
    };
    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      let decoded: { value: T; length: number } | undefined;
      try {
        decoded = decode(buffered);
      } catch (err) {
        return finish(err as Error);
      }
      if (decoded) finish(undefined, decoded.value, buffered.subarray(decoded.length));
    };
    const onEnd = (): void => finish(new PosternError('POSTERN_ERR_INNER_CLOSED', `the stream ended before the ${o.what}`));
    const onError = (err: Error): void => finish(err);
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
    stream.once('error', onError);
  });
}
