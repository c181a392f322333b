import type { z } from 'zod';

/**
 * What the config layering needs to know about a zod schema, read from zod's own definitions:
 * the fields of an object, and whether a field takes only text. Wrappers (optional, default,
 * prefault, nullable, readonly, catch) and transforms (a pipe's input) are looked through.
 */

interface Def {
  type: string;
  innerType?: z.ZodType;
  in?: z.ZodType;
  shape?: Record<string, z.ZodType>;
  options?: readonly z.ZodType[];
  entries?: Record<string, unknown>;
  values?: readonly unknown[];
  getter?: () => z.ZodType;
}

const WRAPPERS = new Set(['optional', 'nullable', 'default', 'prefault', 'readonly', 'catch', 'nonoptional']);

function def(schema: z.ZodType): Def {
  return (schema as unknown as { _zod: { def: Def } })._zod.def;
}

/** The schema under its wrappers; bounded so a self-referencing lazy schema cannot loop forever. */
export function unwrapSchema(schema: z.ZodType): z.ZodType {
  let current = schema;
  for (let depth = 0; depth < 64; depth++) {
    const d = def(current);
    if (WRAPPERS.has(d.type) && d.innerType) current = d.innerType;
    else if (d.type === 'pipe' && d.in) current = d.in;
    else if (d.type === 'lazy' && d.getter) current = d.getter();
    else return current;
  }
  return current;
}

/**
 * The fields of an object schema, or undefined when the schema is not an object. A union with
 * exactly one object among its options counts as that object (`admin: false | { listen }`), so
 * its fields can be set one by one; the union as a whole is still set with the field's name.
 */
export function objectFields(schema: z.ZodType): Readonly<Record<string, z.ZodType>> | undefined {
  const d = def(unwrapSchema(schema));
  if (d.type === 'object') return d.shape;
  if (d.type !== 'union') return undefined;
  const objects = (d.options ?? []).map((o) => def(unwrapSchema(o))).filter((o) => o.type === 'object');
  return objects.length === 1 ? objects[0]!.shape : undefined;
}

/**
 * True when every value the field accepts is text (a string, a string enum or literal): such a
 * field takes an environment variable or a flag verbatim, so `trustDomain=1234` stays "1234".
 */
export function takesTextOnly(schema: z.ZodType): boolean {
  const d = def(unwrapSchema(schema));
  switch (d.type) {
    case 'string':
    case 'template_literal':
      return true;
    case 'enum':
      return Object.values(d.entries ?? {}).every((v) => typeof v === 'string');
    case 'literal':
      return (d.values ?? []).every((v) => typeof v === 'string');
    case 'union':
      return (d.options ?? []).length > 0 && (d.options ?? []).every((o) => takesTextOnly(o));
    default:
      return false;
  }
}

/** `handshakeTimeoutMs` → `HANDSHAKE_TIMEOUT_MS`: a field name as it appears in an environment variable. */
export function envSegment(field: string): string {
  return field.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2').toUpperCase();
}

/** The field schema at `path` (object fields only), or undefined when the path names no field. */
export function fieldAt(schema: z.ZodType, path: readonly string[]): z.ZodType | undefined {
  let current: z.ZodType | undefined = schema;
  for (const part of path) {
    const fields: Readonly<Record<string, z.ZodType>> | undefined = current ? objectFields(current) : undefined;
    current = fields && Object.hasOwn(fields, part) ? fields[part] : undefined;
    if (!current) return undefined;
  }
  return current;
}

