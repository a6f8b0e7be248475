"""A tiny SVG writer for the example's plots (so the example needs numpy only)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

WIDTH, HEIGHT, PAD, LEFT = 480, 360, 48, 64


class Figure:
    """One plot: data coordinates in ``xlim`` x ``ylim`` mapped onto the canvas."""

    def __init__(self, title: str, xlim: tuple[float, float], ylim: tuple[float, float],
                 xlabel: str = "", ylabel: str = "") -> None:
        self.xlim, self.ylim = xlim, ylim
        self.items: list[str] = []
        self.decor = [
            f'<text x="{WIDTH / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
            f'<text x="{(WIDTH + LEFT - PAD) / 2}" y="{HEIGHT - 8}" '
            f'text-anchor="middle">{xlabel}</text>',
            f'<text x="14" y="{HEIGHT / 2}" text-anchor="middle" '
            f'transform="rotate(-90 14 {HEIGHT / 2})">{ylabel}</text>',
            f'<rect x="{LEFT}" y="{PAD}" width="{WIDTH - LEFT - PAD}" height="{HEIGHT - 2 * PAD}" '
            'fill="none" stroke="#333"/>',
        ]
        for i in range(5):
            fx = xlim[0] + (xlim[1] - xlim[0]) * i / 4
            fy = ylim[0] + (ylim[1] - ylim[0]) * i / 4
            x, y = self.px(fx, ylim[0])
            self.decor.append(f'<text x="{x:.1f}" y="{y + 16:.1f}" '
                              f'text-anchor="middle">{fx:.3g}</text>')
            x, y = self.px(xlim[0], fy)
            self.decor.append(f'<text x="{x - 6:.1f}" y="{y + 4:.1f}" '
                              f'text-anchor="end">{fy:.3g}</text>')

    def px(self, x: float, y: float) -> tuple[float, float]:
        (x0, x1), (y0, y1) = self.xlim, self.ylim
        return (LEFT + (x - x0) / (x1 - x0) * (WIDTH - LEFT - PAD),
                HEIGHT - PAD - (y - y0) / (y1 - y0) * (HEIGHT - 2 * PAD))

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str = "#1f77b4") -> None:
        pts = " ".join("%.1f,%.1f" % self.px(x, y) for x, y in zip(xs, ys))
        self.items.append(
            f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>'
        )

    def cell(self, x: float, y: float, w: float, h: float, color: str) -> None:
        (ax, ay), (bx, by) = self.px(x, y), self.px(x + w, y + h)
        self.items.append(f'<rect x="{ax:.1f}" y="{by:.1f}" width="{bx - ax + 0.5:.1f}" '
                          f'height="{ay - by + 0.5:.1f}" fill="{color}"/>')

    def dot(self, x: float, y: float, color: str) -> None:
        cx, cy = self.px(x, y)
        self.items.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.5" fill="{color}" '
                          'stroke="#fff" stroke-width="0.5"/>')

    def save(self, path: Path) -> None:
        body = "\n".join(self.items + self.decor)
        path.write_text(
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'font-family="Helvetica, Arial, sans-serif" font-size="11">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n{body}\n</svg>\n',
            encoding="utf-8",
        )
