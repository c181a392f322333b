import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigError } from '../errors.js';
import { parseYamlWithSchema } from './yaml.js';

/** Most a config file may weigh: configs are small; a huge file is a mistake or an attack. */
const MAX_CONFIG_BYTES = 1024 * 1024;

export interface LoadedConfig<T> {
  config: Readonly<T>;
  /** The config file's directory: relative file paths in it resolve against this. */
  baseDir: string;
  path: string;
}

/** Reads and validates a YAML config file, naming `file:line:col` and the field on any problem. */
export async function loadConfigFile<S extends z.ZodType>(path: string, schema: S): Promise<LoadedConfig<z.output<S>>> {
  const text = await readConfigText(path);
  return { config: parseYamlWithSchema(text, path, schema), baseDir: dirname(resolve(path)), path };
}

/** A config file's text, refused (POSTERN_ERR_FILE_READ, naming the path) when unreadable or over 1 MiB. */
export async function readConfigText(path: string): Promise<string> {
  try {
    const data = await readFile(path);
    if (data.length > MAX_CONFIG_BYTES) throw new Error(`larger than ${MAX_CONFIG_BYTES} bytes`);
    return data.toString('utf8');
  } catch (err) {
    throw new ConfigError('POSTERN_ERR_FILE_READ', `cannot read config file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
      cause: err,
      details: { path },
    });
  }
}

/** A path from a config file, resolved against that file's directory. */
export function resolveFrom(baseDir: string | undefined, path: string): string {
  return isAbsolute(path) || baseDir === undefined ? path : resolve(baseDir, path);
}
