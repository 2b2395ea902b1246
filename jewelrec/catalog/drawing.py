"""Low-level jewelry drawing: shaded metal tubes, beads, faceted stones, chains.

Everything is drawn with PIL's ImageDraw (fast, C) at twice the output size and later
downsampled with LANCZOS, which is what antialiases the hard-edged strokes. Metal reads as
metal because every stroke is drawn several times, dark and wide first, then lighter and
narrower, shifted towards one fixed light (upper left): the result is a lit tube with a
highlight. Shapes are built in "design units" (a piece fits roughly in the unit circle) and a
`Pose` maps them to pixels, so one design can be shown at any position, size and rotation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

# Where the light comes from, in image coordinates (y grows downwards): upper left.
LIGHT = np.array([-0.55, -0.83])


@dataclass(frozen=True)
class Tones:
    """The four shades a lit material is painted with, darkest (edge) to brightest (glint)."""

    dark: RGB
    base: RGB
    light: RGB
    glint: RGB


METALS: dict[str, Tones] = {
    "gold": Tones((138, 98, 18), (218, 172, 46), (246, 214, 100), (255, 246, 200)),
    "silver": Tones((96, 100, 108), (176, 180, 188), (222, 226, 232), (255, 255, 255)),
    "rose gold": Tones((150, 84, 84), (224, 150, 144), (246, 194, 188), (255, 236, 234)),
}

STONES: dict[str, Tones] = {
    "diamond": Tones((104, 116, 136), (212, 224, 238), (246, 250, 255), (255, 255, 255)),
    "ruby": Tones((96, 6, 24), (196, 18, 52), (246, 96, 122), (255, 226, 232)),
    "emerald": Tones((6, 76, 42), (18, 148, 88), (104, 222, 160), (226, 255, 238)),
    "sapphire": Tones((10, 22, 96), (28, 66, 186), (104, 146, 250), (228, 236, 255)),
    "amethyst": Tones((66, 22, 96), (136, 66, 186), (200, 150, 240), (246, 232, 255)),
    "pearl": Tones((168, 158, 148), (232, 225, 212), (250, 246, 238), (255, 255, 255)),
}


@dataclass(frozen=True)
class Pose:
    """Where a design lands on the canvas: centre (px), pixels per design unit, rotation."""

    cx: float
    cy: float
    scale: float
    angle: float  # radians, counter-clockwise on screen

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) design points to (N, 2) pixel positions."""
        c, s = math.cos(self.angle) * self.scale, math.sin(self.angle) * self.scale
        return points @ np.array([[c, -s], [s, c]]) + (self.cx, self.cy)


def ellipse_points(
    center: tuple[float, float], rx: float, ry: float, n: int = 56,
    start: float = 0.0, stop: float = 2 * math.pi,
) -> np.ndarray:
    """Points on an axis-aligned ellipse (design units); angle 0 is the right, pi/2 the bottom."""
    t = np.linspace(start, stop, n)
    return np.stack([center[0] + rx * np.cos(t), center[1] + ry * np.sin(t)], axis=1)


def resample(points: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Evenly spaced points along a polyline, and the unit tangent at each."""
    seg = np.diff(points, axis=0)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(seg[:, 0], seg[:, 1]))])
    count = max(2, int(arc[-1] / spacing) + 1)
    at = np.linspace(0.0, arc[-1], count)
    out = np.stack([np.interp(at, arc, points[:, 0]), np.interp(at, arc, points[:, 1])], axis=1)
    tangent = np.gradient(out, axis=0)
    tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
    return out, tangent


def teardrop_points(center: tuple[float, float], radius: float, length: float) -> np.ndarray:
    """A drop: round bottom of `radius` at `center`, tip `length` above the centre."""
    tip_angle = math.acos(min(radius / length, 0.99))
    # Tangent points on the circle, then the arc around the bottom between them.
    arc = ellipse_points(center, radius, radius, 40,
                         -math.pi / 2 + tip_angle, 3 * math.pi / 2 - tip_angle)
    tip = np.array([[center[0], center[1] - length]])
    return np.concatenate([tip, arc, tip])


def heart_points(center: tuple[float, float], size: float) -> np.ndarray:
    """The classic parametric heart, `size` wide, point down."""
    t = np.linspace(0, 2 * math.pi, 48)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return np.stack([center[0] + x * size / 32, center[1] + y * size / 32], axis=1)


def mix(start: RGB, end: RGB, f: float) -> RGB:
    """The colour `f` of the way from `start` to `end`."""
    r, g, b = (round(x + (y - x) * f) for x, y in zip(start, end, strict=True))
    return r, g, b


class Painter:
    """Draws shaded jewelry primitives in design units onto an RGBA layer."""

    def __init__(self, layer: Image.Image, pose: Pose) -> None:
        self.draw = ImageDraw.Draw(layer)
        self.pose = pose

    def _len(self, units: float) -> float:
        return units * self.pose.scale

    def _stroke(self, points: np.ndarray, width: float, colour: RGB, shift: float = 0.0) -> None:
        """A `width`-px line along `points` with round ends, filled as the outline polygon.

        ImageDraw.line(joint="curve") does the same but spends its time in Python per joint;
        offsetting the polyline to both sides and filling that is one C call per stroke.
        """
        px = self.pose.apply(np.asarray(points, dtype=float)) + LIGHT * shift
        if width < 3 or len(px) < 2:
            self.draw.line(px.ravel().tolist(), fill=colour, width=max(1, round(width)))
            return
        closed = len(px) > 3 and float(np.abs(px[0] - px[-1]).max()) < 1e-6
        if closed:
            px = px[:-1]
            tangent = np.roll(px, -1, axis=0) - np.roll(px, 1, axis=0)
        else:
            tangent = np.gradient(px, axis=0)
        tangent /= np.maximum(np.hypot(tangent[:, 0], tangent[:, 1]), 1e-9)[:, None]
        side = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1) * (width / 2)
        left, right = px + side, px - side
        if closed:  # two halves, so that each is a simple polygon without a hole
            n = len(px)
            for part in (np.arange(0, n // 2 + 1), np.arange(n // 2, n + 1) % n):
                self._fill(np.concatenate([left[part], right[part][::-1]]), colour)
        else:
            self._fill(np.concatenate([left, right[::-1]]), colour)
            for end in (px[0], px[-1]):
                self._disc(end, width / 2, colour)

    def _fill(self, px: np.ndarray, colour: RGB) -> None:
        self.draw.polygon(px.ravel().tolist(), fill=colour)

    def _disc(self, center: np.ndarray, radius_px: float, colour: RGB) -> None:
        x, y = center
        self.draw.ellipse((x - radius_px, y - radius_px, x + radius_px, y + radius_px), fill=colour)

    def tube(self, points: np.ndarray, width: float, tones: Tones) -> None:
        """A round wire along `points`: dark rim, lit body, highlight streak on the lit side."""
        w = self._len(width)
        self._stroke(points, w, tones.dark)
        self._stroke(points, w * 0.78, tones.base, w * 0.06)
        self._stroke(points, w * 0.42, tones.light, w * 0.16)
        if w >= 5:
            self._stroke(points, w * 0.14, tones.glint, w * 0.25)

    def ball(self, center: tuple[float, float], radius: float, tones: Tones) -> None:
        """A sphere (bead, pearl, stud): concentric discs shifted towards the light."""
        c = self.pose.apply(np.array([center], dtype=float))[0]
        r = self._len(radius)
        self._disc(c, r, tones.dark)
        self._disc(c + LIGHT * r * 0.10, r * 0.86, tones.base)
        self._disc(c + LIGHT * r * 0.28, r * 0.52, tones.light)
        if r >= 3:
            self._disc(c + LIGHT * r * 0.45, max(1.0, r * 0.18), tones.glint)

    def gem(self, center: tuple[float, float], radius: float, stone: str) -> None:
        """A faceted round stone seen from above: dark girdle, crown facets, table, glint."""
        tones = STONES[stone]
        if stone == "pearl":
            self.ball(center, radius, tones)
            return
        c = self.pose.apply(np.array([center], dtype=float))[0]
        r = self._len(radius)
        angles = np.arange(8) * (math.pi / 4) + math.pi / 8 - self.pose.angle
        unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
        girdle, crown, table = c + unit * r, c + unit * (r * 0.86), c + unit * (r * 0.5)
        self._fill(girdle, tones.dark)
        self._fill(crown, tones.base)
        # Crown facets between girdle and table: the ones facing the light are lighter.
        facing = (unit + np.roll(unit, -1, axis=0)) @ LIGHT > 0
        for i in np.flatnonzero(facing):
            j = (i + 1) % 8
            self._fill(np.array([crown[i], crown[j], table[j], table[i]]), tones.light)
        self._fill(table, tones.light)
        self._fill(c + unit * (r * 0.3), tones.base)
        self._disc(c + LIGHT * r * 0.42, max(1.0, r * 0.16), tones.glint)

    def set_stone(self, center: tuple[float, float], radius: float, stone: str,
                  metal: Tones) -> None:
        """A stone in a metal bezel (a lit metal rim just wider than the stone)."""
        self.ball(center, radius * 1.18, metal)
        self.gem(center, radius, stone)

    def plate(self, outline: np.ndarray, tones: Tones) -> None:
        """A flat polished shape (drop, heart, disc): rim, body, lit inner bevel, glint."""
        px = self.pose.apply(outline)
        centre = px.mean(axis=0)
        size = float(np.abs(px - centre).max())
        self._fill(px, tones.dark)
        for factor, towards_light, colour in [(0.84, 0.0, tones.base), (0.5, 0.22, tones.light)]:
            self._fill(centre + (px - centre) * factor + LIGHT * size * towards_light, colour)
        self._disc(centre + LIGHT * size * 0.45, max(1.0, size * 0.1), tones.glint)

    def chain(self, points: np.ndarray, link: float, tones: Tones, style: str) -> None:
        """A chain along `points`; `style` is cable (open ovals), rope (twist) or box."""
        at, tangent = resample(points, link)
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        if style == "cable":
            wire = link * 0.22
            for i in range(len(at) - 1):
                mid, t, n = (at[i] + at[i + 1]) / 2, tangent[i], normal[i]
                half = link * 0.62
                if i % 2 == 0:
                    oval = ellipse_points((0.0, 0.0), half, link * 0.36, 12)
                    pts = mid + oval[:, :1] * t + oval[:, 1:] * n
                    self._stroke(pts, self._len(wire), tones.dark)
                    self._stroke(pts, self._len(wire) * 0.55, tones.light, self._len(wire) * 0.1)
                else:
                    pts = np.array([mid - t * half, mid + t * half])
                    self.tube(pts, wire * 1.2, tones)
        elif style == "rope":
            self.tube(points, link * 0.75, tones)
            for p, t, n in zip(at, tangent, normal, strict=True):
                twist = np.array([p - t * link * 0.3 + n * link * 0.28,
                                  p + t * link * 0.3 - n * link * 0.28])
                self._stroke(twist, self._len(link * 0.12), tones.dark)
        else:  # box
            self.tube(points, link * 0.6, tones)
            for p, n in zip(at, normal, strict=True):
                tick = np.array([p - n * link * 0.3, p + n * link * 0.3])
                self._stroke(tick, self._len(link * 0.08), tones.dark)

    def band(self, center: tuple[float, float], rx: float, ry: float,
             depth: tuple[float, float], thickness: float, tones: Tones) -> None:
        """A ring-shaped band with depth: ellipses swept from the far rim to the near rim.

        The far rim (centre + depth) is drawn darkest, the near rim last with full shading, so
        the band reads as a solid metal cylinder seen in perspective.
        """
        steps = 6
        w = self._len(thickness)
        for k in range(steps):
            f = k / steps
            c = (center[0] + depth[0] * (1 - f), center[1] + depth[1] * (1 - f))
            colour = mix(tones.dark, tones.base, f)
            self._stroke(ellipse_points(c, rx, ry, 64), w, colour)
        self.tube(ellipse_points(center, rx, ry, 64), thickness, tones)
