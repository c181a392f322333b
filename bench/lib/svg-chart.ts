/** A horizontal bar chart of ratios as a standalone SVG (no dependency: a few rects and texts). */

export interface Bar {
  label: string;
  value: number;
  /** Drawn as a tick on the bar's row; the bar is green when it reaches it. */
  target?: number;
}

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

export function barChart(title: string, bars: readonly Bar[]): string {
  const labelW = 280;
  const plotW = 420;
  const rowH = 24;
  const top = 40;
  const width = labelW + plotW + 70;
  const height = top + bars.length * rowH + 30;
  const finite = bars.flatMap((b) => [b.value, b.target ?? 0]).filter(Number.isFinite);
  const max = Math.max(1, ...finite) * 1.1;
  const x = (v: number): number => labelW + (Math.max(0, v) / max) * plotW;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="10" y="20" font-size="14" font-weight="bold">${esc(title)}</text>`,
    // The line of equality.
    `<line x1="${x(1)}" y1="${top - 6}" x2="${x(1)}" y2="${top + bars.length * rowH}" stroke="#888" stroke-dasharray="4 3"/>`,
    `<text x="${x(1)}" y="${top + bars.length * rowH + 16}" text-anchor="middle" fill="#555">1.0</text>`,
  ];
  bars.forEach((b, i) => {
    const y = top + i * rowH;
    const ok = b.target === undefined ? undefined : b.value >= b.target;
    const fill = ok === undefined ? '#6b8fb5' : ok ? '#4c9a52' : '#c0504d';
    out.push(`<text x="${labelW - 8}" y="${y + 15}" text-anchor="end">${esc(b.label)}</text>`);
    if (Number.isFinite(b.value)) {
      out.push(`<rect x="${labelW}" y="${y + 3}" width="${(x(b.value) - labelW).toFixed(1)}" height="${rowH - 8}" fill="${fill}"/>`);
      out.push(`<text x="${(x(b.value) + 4).toFixed(1)}" y="${y + 15}">${b.value.toFixed(2)}</text>`);
    } else {
      out.push(`<text x="${labelW + 4}" y="${y + 15}" fill="#888">not measured</text>`);
    }
    if (b.target !== undefined) {
      out.push(`<line x1="${x(b.target).toFixed(1)}" y1="${y}" x2="${x(b.target).toFixed(1)}" y2="${y + rowH - 2}" stroke="#000" stroke-width="2"/>`);
    }
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
