import { randomBytes } from 'node:crypto';
import { access, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { PkiError } from '../errors.js';

export const MODE_PRIVATE = 0o600;
export const MODE_PUBLIC = 0o644;

/**
 * Writes through a fresh temporary file created with `mode` (so a key is never readable by
 * others, not even for an instant, and an existing file's looser mode is not inherited), then
 * renames it over `path`: readers never see a half-written certificate or CRL.
 */
export async function writeFileAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    await writeFile(tmp, data, { mode, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw new PkiError('POSTERN_ERR_FILE_WRITE', `cannot write ${path}: ${(err as Error).message}`, { cause: err, details: { path } });
  }
}

export async function exists(path: string): Promise<boolean> {
  return access(path).then(() => true, () => false);
}

/** Reads a file, naming it in the POSTERN_ERR_FILE_READ error. */
export async function readFileNamed(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new PkiError('POSTERN_ERR_FILE_READ', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err, details: { path } });
  }
}
