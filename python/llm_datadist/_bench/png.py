# SPDX-License-Identifier: Apache-2.0
"""A dependency-free PNG line plot (numpy + zlib + struct): axes, ticks, labelled lines.

matplotlib is not a dependency of llm_datadist and is not used, even when installed: the plot
looks the same everywhere.  Text is drawn with a built-in 5x7 pixel font (upper case).
"""
from __future__ import annotations

import math
import struct
import zlib
from typing import List, Optional, Sequence, Tuple

import numpy as np

_FONT = {  # 5x7, one string of 5 bits per row
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    " ": "00000 00000 00000 00000 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000", "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111", "/": "00001 00010 00010 00100 01000 01000 10000",
    "(": "00010 00100 01000 01000 01000 00100 00010", ")": "01000 00100 00010 00010 00010 00100 01000",
    ":": "00000 01100 01100 00000 01100 01100 00000", "%": "11001 11010 00010 00100 01000 01011 10011",
    "+": "00000 00100 00100 11111 00100 00100 00000", "=": "00000 00000 11111 00000 11111 00000 00000",
    ",": "00000 00000 00000 00000 01100 00100 01000", "'": "00100 00100 01000 00000 00000 00000 00000",
    "[": "01110 01000 01000 01000 01000 01000 01110", "]": "01110 00010 00010 00010 00010 00010 01110",
}
_GLYPHS = {c: np.array([[b == "1" for b in row] for row in rows.split()], dtype=bool) for c, rows in _FONT.items()}

PALETTE = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207),
           (140, 86, 75), (227, 119, 194), (188, 189, 34), (127, 127, 127)]


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.w, self.h = width, height
        self.px = np.full((height, width, 3), 255, dtype=np.uint8)

    def dot(self, x: int, y: int, color: Sequence[int], size: int = 1) -> None:
        r = size // 2
        x0, x1, y0, y1 = max(0, x - r), min(self.w, x - r + size), max(0, y - r), min(self.h, y - r + size)
        if x0 < x1 and y0 < y1:
            self.px[y0:y1, x0:x1] = color

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Sequence[int], width: int = 1,
             dash: int = 0) -> None:
        n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for i in range(n + 1):
            if dash and (i // dash) % 2:
                continue
            t = i / max(n, 1)
            self.dot(int(round(x0 + (x1 - x0) * t)), int(round(y0 + (y1 - y0) * t)), color, width)

    def text(self, x: int, y: int, s: str, color: Sequence[int] = (0, 0, 0), scale: int = 1,
             anchor: str = "left") -> int:
        s = s.upper()
        width = len(s) * 6 * scale
        if anchor == "center":
            x -= width // 2
        elif anchor == "right":
            x -= width
        for i, ch in enumerate(s):
            g = _GLYPHS.get(ch, _GLYPHS[" "])
            ys, xs = np.nonzero(g)
            for yy, xx in zip(ys, xs):
                self.dot(x + i * 6 * scale + xx * scale, y + yy * scale, color, scale)
        return width

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + self.px[y].tobytes() for y in range(self.h))

        def chunk(kind: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def _nice_ticks(lo: float, hi: float, n: int = 6) -> List[float]:
    span = max(hi - lo, 1e-9)
    step = 10 ** math.floor(math.log10(span / n))
    for m in (1, 2, 2.5, 5, 10):
        if span / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    ticks = [round(start + i * step, 6) for i in range(int((hi - start) / step + 1e-9) + 1)]
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 6))
    return ticks


def _size_label(nbytes: float) -> str:
    for unit, shift in (("M", 20), ("K", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):g}{unit}"
    return f"{nbytes:g}"


def line_plot(series: Sequence[Tuple[str, Sequence[Tuple[float, float]], bool]], title: str, xlabel: str,
              ylabel: str, width: int = 900, height: int = 560, log2_x: bool = True,
              subtitle: Optional[str] = None) -> bytes:
    """series: (label, [(x, y)], dashed); x is a size in bytes on a log2 axis. Returns PNG bytes."""
    c = Canvas(width, height)
    left, right, top, bottom = 70, width - 250, 50, height - 60
    pts = [(x, y) for _, xy, _ in series for x, y in xy if y is not None and x > 0]
    if not pts:
        c.text(width // 2, height // 2, "NO DATA", anchor="center", scale=2)
        return c.png()
    fx = (lambda v: math.log2(v)) if log2_x else (lambda v: v)
    xs = [fx(x) for x, _ in pts]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_ticks = _nice_ticks(0.0, max(y for _, y in pts) * 1.05)
    y_hi = y_ticks[-1] if y_ticks[-1] > 0 else 1.0

    def X(v: float) -> float:
        return left + (fx(v) - x_lo) / (x_hi - x_lo) * (right - left)

    def Y(v: float) -> float:
        return bottom - v / y_hi * (bottom - top)
    grey, black = (220, 220, 220), (0, 0, 0)
    for t in y_ticks:
        c.line(left, Y(t), right, Y(t), grey)
        c.text(left - 6, int(Y(t)) - 3, f"{t:g}", anchor="right")
    x_ticks = sorted({x for x, _ in pts})
    for x in x_ticks:
        c.line(X(x), top, X(x), bottom, grey)
        c.text(int(X(x)), bottom + 8, _size_label(x), anchor="center")
    c.line(left, bottom, right, bottom, black, 2)
    c.line(left, top, left, bottom, black, 2)
    c.text((left + right) // 2, height - 28, xlabel, anchor="center")
    c.text(8, top - 22, ylabel)
    c.text(width // 2, 10, title, scale=2, anchor="center")
    if subtitle:
        c.text(width // 2, 32, subtitle, anchor="center")
    ly = top
    for i, (label, xy, dashed) in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        pts_i = sorted((x, y) for x, y in xy if y is not None and x > 0)
        for (xa, ya), (xb, yb) in zip(pts_i, pts_i[1:]):
            c.line(X(xa), Y(ya), X(xb), Y(yb), color, 2, dash=6 if dashed else 0)
        for x, y in pts_i:
            c.dot(int(X(x)), int(Y(y)), color, 6)
        c.line(right + 15, ly + 3, right + 40, ly + 3, color, 2, dash=6 if dashed else 0)
        c.text(right + 46, ly, label[:32])
        ly += 16
    return c.png()
