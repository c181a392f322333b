import { unwatchFile, watchFile, type Stats } from 'node:fs';

/**
 * Calls `onChange` (once per burst) when any of `paths` changes: polling stat rather than
 * fs.watch, because `postern pki` replaces files by rename, which an inotify watch on the old
 * file never reports. Polling does not keep the process alive. Returns the function that stops it.
 */
export function watchFiles(paths: readonly string[], intervalMs: number, onChange: () => void): () => void {
  let scheduled = false;
  const listener = (curr: Stats, prev: Stats): void => {
    if (curr.mtimeMs === prev.mtimeMs && curr.ino === prev.ino && curr.size === prev.size) return;
    // A certificate and its key land one after the other: one reload for the burst.
    if (scheduled) return;
    scheduled = true;
    setImmediate(() => {
      scheduled = false;
      onChange();
    });
  };
  for (const path of paths) watchFile(path, { interval: intervalMs, persistent: false }, listener);
  return () => {
    for (const path of paths) unwatchFile(path, listener);
  };
}
