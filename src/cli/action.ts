import { isPosternError } from '../errors.js';

/** Exit codes of every `postern` command (documented in docs/operations.md). */
export const EXIT = { OK: 0, FAILURE: 1, USAGE: 2 } as const;

/**
 * Wrap a commander action: a PosternError prints `error POSTERN_ERR_…: message` on stderr and
 * exits 1 (2 for usage/config errors); anything else is a bug and prints its stack.
 */
export function action<A extends unknown[]>(fn: (...args: A) => Promise<void> | void): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (err) {
      if (isPosternError(err)) {
        process.stderr.write(`error ${err.code}: ${err.message}\n`);
        const usage = err.code === 'POSTERN_ERR_USAGE' || err.code.startsWith('POSTERN_ERR_CONFIG');
        process.exitCode = usage ? EXIT.USAGE : EXIT.FAILURE;
      } else {
        process.stderr.write(`error POSTERN_ERR_INTERNAL: ${(err as Error)?.stack ?? String(err)}\n`);
        process.exitCode = EXIT.FAILURE;
      }
    }
  };
}
