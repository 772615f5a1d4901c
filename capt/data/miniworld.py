"""The embedded mini world: procedural images of one object (32x32, ``IMAGE_SIZE``), captions, and the mini datasets.

Everything here is generated with numpy from a seed, so the whole pipeline (prompt tuning, attacks,
the book) runs offline and on any machine. The world is a miniature of the paper's setting:

* Objects have compositional attributes: ``shape`` (14), ``colour`` (10 close hues, each image's hue
  jittered, or an achromatic grey object whose captions name no colour), ``size`` (small/large),
  ``fill`` (filled/outlined/striped), ``background`` (plain/noisy/striped/checkered, and white paper for
  sketches), ``position`` (centre/left/right/top/bottom; only small objects move off-centre) and a
  rendering ``style``; a quarter of all images are crossed by thin clutter lines.
* ``mini_source`` (10 hues x 10 shapes, 100 confusable classes, 200 training images per class, 2,000
  test images) plays ImageNet: hard enough that the frozen mini CLIP is often wrong or unsure.
  Eight ``role="target"`` tasks play the cross-dataset targets: each has a label space of its own (other
  attributes, or shapes the source never labels) and its own template. ``mini_source_v2/_sketch/_a/_r``
  (500 images each) play ImageNet-V2/-Sketch/-A/-R.

Images are rendered from signed distance functions with analytic anti-aliasing, vectorised over a
batch, so thousands of images take well under a second; each (task, split) is cached in memory.
Regenerating with the same seed gives byte-identical images.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from ..results import stable_key
from .base import TensorImages
from .disk_cache import cached_arrays, source_sha
from .registry import DatasetSpec, register

SCENE = 32  # the world's own unit: every length (Look's scales, outlines, stripes, clutter) is in scene pixels
IMAGE_SIZE = 32  # pixels a rendered image has per side (set_image_size): the scene sampled at IMAGE_SIZE / SCENE
WORLD_SEED = 20240518  # base of every dataset seed; pretraining uses its own stream

# The first ten shapes are the source's; the last four appear in pretraining and in the targets only.
SHAPES = ("circle", "hexagon", "pentagon", "square", "diamond", "triangle", "star", "cross", "heart", "moon",
          "arrow", "bar", "oval", "trapezoid")
SOURCE_SHAPES = SHAPES[:10]
# Ten hues; neighbours are close (yellow/lime, teal/cyan, purple/pink) and every image's hue is jittered,
# so colour is a graded, confusable attribute, as fine-grained classes are for CLIP.
COLOURS = ("red", "orange", "yellow", "lime", "green", "teal", "cyan", "blue", "purple", "pink")
_HUES = np.array([0.0, 28.0, 52.0, 80.0, 125.0, 165.0, 188.0, 225.0, 272.0, 318.0], dtype=np.float32)
SIZES = ("small", "large")
FILLS = ("filled", "outlined", "striped")
BACKGROUNDS = ("plain", "noisy", "striped", "checkered", "white")  # "white": sketch paper only
POSITIONS = ("centre", "left", "right", "top", "bottom")
STYLES = ("photo", "sketch")  # styles the pretraining stream contains and captions can name
GREY = -1  # colour index of an achromatic (colour-free) object


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Hue in degrees, saturation and value in [0, 1] -> RGB in [0, 255], shape (N, 3)."""
    h = (np.asarray(h, dtype=np.float64) % 360.0) / 60.0
    c = v * s
    x = c * (1 - np.abs(h % 2 - 1))
    z = np.zeros_like(h)
    k = np.floor(h).astype(int) % 6
    r = np.choose(k, [c, x, z, z, x, c])
    g = np.choose(k, [x, c, c, x, z, z])
    b = np.choose(k, [z, z, x, c, c, x])
    m = v - c
    return (np.stack([r + m, g + m, b + m], 1) * 255.0).astype(np.float32)


_PALETTE = _hsv_to_rgb(_HUES, np.full(len(_HUES), 0.85), np.full(len(_HUES), 0.9))


# ----------------------------------------------------------------------------------------------
# Shapes as signed distance functions in unit coordinates (y grows downwards, like images)
# ----------------------------------------------------------------------------------------------
def _regular(n: int, r: float, phase: float) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def _star(points: int = 5, outer: float = 1.12, inner: float = 0.47) -> np.ndarray:
    a = -np.pi / 2 + np.pi * np.arange(2 * points) / points
    r = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    v = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    return v - np.array([0.0, -0.06])  # the star's area centre sits a little below its circumcentre


def _heart(n: int = 28) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    v = np.stack([x, y], 1)
    v -= (v.max(0) + v.min(0)) / 2
    return v / np.abs(v).max() * 1.0


_POLYGONS = {
    "square": np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]),
    "triangle": _regular(3, 1.18, -np.pi / 2) + np.array([0.0, 0.2]),
    "star": _star(),
    "cross": np.array([(-0.3, -1.0), (0.3, -1.0), (0.3, -0.3), (1.0, -0.3), (1.0, 0.3), (0.3, 0.3),
                       (0.3, 1.0), (-0.3, 1.0), (-0.3, 0.3), (-1.0, 0.3), (-1.0, -0.3), (-0.3, -0.3)]),
    "heart": _heart(),
    "diamond": np.array([(0.0, -1.12), (0.72, 0.0), (0.0, 1.12), (-0.72, 0.0)]),
    "arrow": np.array([(-1.0, -0.24), (0.1, -0.24), (0.1, -0.72), (1.0, 0.0), (0.1, 0.72), (0.1, 0.24),
                       (-1.0, 0.24)]),
    "bar": np.array([(-1.08, -0.36), (1.08, -0.36), (1.08, 0.36), (-1.08, 0.36)]),
    "hexagon": _regular(6, 0.98, 0.0),
    "pentagon": _regular(5, 1.02, -np.pi / 2) + np.array([0.0, 0.09]),
    "oval": np.stack([1.05 * np.cos(np.linspace(0, 2 * np.pi, 24, endpoint=False)),
                      0.62 * np.sin(np.linspace(0, 2 * np.pi, 24, endpoint=False))], 1),
    "trapezoid": np.array([(-0.5, -0.62), (0.5, -0.62), (1.0, 0.62), (-1.0, 0.62)]),
}


def _sdf_polygon(px: np.ndarray, py: np.ndarray, verts: np.ndarray) -> np.ndarray:
    d2 = np.full(px.shape, np.inf, dtype=np.float32)
    inside = np.zeros(px.shape, dtype=bool)
    k = len(verts)
    for i in range(k):
        ax, ay = verts[i]
        bx, by = verts[(i + 1) % k]
        ex, ey = bx - ax, by - ay
        wx, wy = px - ax, py - ay
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey), 0.0, 1.0)
        dx, dy = wx - ex * t, wy - ey * t
        np.minimum(d2, dx * dx + dy * dy, out=d2)
        if ey != 0:
            crosses = (ay > py) != (by > py)
            inside ^= crosses & (px < ax + (py - ay) * ex / ey)
    d = np.sqrt(d2)
    return np.where(inside, -d, d)


def _sdf(shape: str, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    if shape == "circle":
        return np.sqrt(px * px + py * py) - 0.92
    if shape == "moon":
        outer = np.sqrt(px * px + py * py) - 1.0
        bite = np.sqrt((px - 0.48) ** 2 + (py + 0.12) ** 2) - 0.8
        return np.maximum(outer, -bite)
    return _sdf_polygon(px, py, _POLYGONS[shape])


# ----------------------------------------------------------------------------------------------
# Attributes
# ----------------------------------------------------------------------------------------------
ATTRS = ("shape", "colour", "size", "fill", "background", "position", "style")


def _empty_attrs(n: int) -> dict[str, np.ndarray]:
    return {a: np.zeros(n, dtype=np.int64) for a in ATTRS}


def sample_attributes(rng: np.random.Generator, n: int, *, grey_frac: float = 0.0,
                      sketch_frac: float = 0.0, shapes: int = len(SHAPES),
                      fixed: Optional[dict[str, np.ndarray]] = None) -> dict[str, np.ndarray]:
    """Draw ``n`` objects' attributes; ``fixed`` pins some attributes (arrays of indices) per item.

    Large objects are always centred (there is no room to move them); small ones are centred 40 %
    of the time and otherwise moved to one side. Sketches are outlined on white paper.
    """
    fixed = fixed or {}
    a = _empty_attrs(n)
    a["shape"] = rng.integers(0, shapes, n)
    a["colour"] = rng.integers(0, len(COLOURS), n)
    a["size"] = rng.integers(0, 2, n)
    a["fill"] = rng.integers(0, len(FILLS), n)
    a["background"] = rng.integers(0, 4, n)
    a["position"] = np.where(rng.random(n) < 0.4, 0, rng.integers(1, 5, n))
    a["style"] = (rng.random(n) < sketch_frac).astype(np.int64)
    grey = rng.random(n) < grey_frac
    for k, v in fixed.items():
        a[k] = np.broadcast_to(np.asarray(v, dtype=np.int64), (n,)).copy()
    if "colour" not in fixed:
        a["colour"] = np.where(grey, GREY, a["colour"])
    if "position" in fixed and "size" not in fixed:
        a["size"] = np.where(a["position"] > 0, 0, a["size"])
    a["position"] = np.where(a["size"] == 1, 0, a["position"])
    sketch = a["style"] == 1
    a["fill"] = np.where(sketch, FILLS.index("outlined"), a["fill"])
    a["background"] = np.where(sketch, BACKGROUNDS.index("white"), a["background"])
    return a


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Look:
    """Rendering parameters; the distribution shifts are other looks of the same world."""

    hue_jitter: float = 13.0  # degrees either way; neighbouring hues are 23-47 degrees apart
    saturation: tuple[float, float] = (0.5, 1.0)
    value: tuple[float, float] = (0.6, 1.0)
    small_scale: tuple[float, float] = (6.5, 8.0)
    large_scale: tuple[float, float] = (10.5, 12.5)
    rotation_deg: float = 15.0
    centre_jitter: float = 2.0
    bg_level: tuple[float, float] = (18.0, 115.0)
    outline: tuple[float, float] = (1.6, 2.6)
    sketch_outline: tuple[float, float] = (1.4, 2.2)
    clutter_frac: float = 0.25  # share of images crossed by thin clutter lines (occluders)
    clutter_lines: int = 2
    noise: float = 4.0
    mode: str = "photo"  # photo | pencil | hard | rendition
    # The world's non-robust feature (Ilyas et al. 2019): a faint pixel-level pattern over the whole image,
    # keyed by the object's colour and shape (each key agreeing with the object's own with probability
    # ``cue_agreement``), ``cue_amplitude`` grey levels either way. Predictive and easy to learn, but an
    # attack of the same radius rewrites it. 0 turns it off.
    cue_amplitude: float = 0.0
    cue_agreement: float = 0.75


def _transform(rng, a, look: Look, n: int):
    small = rng.uniform(*look.small_scale, n)
    large = rng.uniform(*look.large_scale, n)
    scale = np.where(a["size"] == 1, large, small).astype(np.float32)
    theta = np.deg2rad(rng.uniform(-look.rotation_deg, look.rotation_deg, n))
    quarter = rng.integers(0, 4, n)  # arrows point any way; bars lie or stand; moons open left/right
    shapes = a["shape"]
    theta = theta + np.where(shapes == SHAPES.index("arrow"), quarter * np.pi / 2, 0.0)
    theta = theta + np.where(shapes == SHAPES.index("bar"), (quarter % 2) * np.pi / 2, 0.0)
    theta = theta + np.where(shapes == SHAPES.index("moon"), (quarter % 2) * np.pi, 0.0)
    c = SCENE / 2
    jx = rng.uniform(-look.centre_jitter, look.centre_jitter, n)
    jy = rng.uniform(-look.centre_jitter, look.centre_jitter, n)
    room = (c - scale * 1.05 - 0.5) * rng.uniform(0.6, 1.0, n)  # off-centre by a varying amount
    pos = a["position"]
    cx = c + jx + np.where(pos == 1, -room, 0) + np.where(pos == 2, room, 0)
    cy = c + jy + np.where(pos == 3, -room, 0) + np.where(pos == 4, room, 0)
    return cx.astype(np.float32), cy.astype(np.float32), scale, theta.astype(np.float32)


def _px() -> float:
    """Output pixels per scene pixel (1 at the default resolution)."""
    return IMAGE_SIZE / SCENE


def _centres() -> np.ndarray:
    """Every output pixel's centre, in scene units."""
    return (np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5) * np.float32(SCENE / IMAGE_SIZE)


def _object_sdf(a, cx, cy, scale, theta, wobble=None) -> np.ndarray:
    """Signed distance in output pixels from every pixel centre to each image's object, (N, H, W)."""
    n = len(cx)
    g = _centres()
    out = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for s_idx, shape in enumerate(SHAPES):
        idx = np.nonzero(a["shape"] == s_idx)[0]
        if len(idx) == 0:
            continue
        x = (g[None, None, :] - cx[idx, None, None]) / scale[idx, None, None]
        y = (g[None, :, None] - cy[idx, None, None]) / scale[idx, None, None]
        cos, sin = np.cos(theta[idx])[:, None, None], np.sin(theta[idx])[:, None, None]
        u = cos * x + sin * y
        v = -sin * x + cos * y
        out[idx] = _sdf(shape, u, v) * scale[idx, None, None]
    if wobble is not None:
        out += wobble
    return out * np.float32(_px())  # anti-aliasing is one output pixel wide at any resolution


def _coverage(rng, d: np.ndarray, fill: np.ndarray, thickness: np.ndarray) -> np.ndarray:
    """Object opacity: filled, outlined, or striped (a thin outline holding stripes at any angle)."""
    n = len(fill)
    inside = np.clip(0.5 - d, 0.0, 1.0)
    band = inside * np.clip(0.5 + d + thickness[:, None, None], 0.0, 1.0)
    x, y = _coords()
    ang = rng.uniform(0, np.pi, n)[:, None, None]
    period = rng.uniform(2.6, 3.6, n)[:, None, None]
    phase = rng.uniform(0, 4, n)[:, None, None]
    t = (np.cos(ang) * x + np.sin(ang) * y + phase) % period
    stripes = np.clip(1.0 - np.abs(t - period / 2) * 1.2, 0.0, 1.0)
    thin = inside * np.clip(0.5 + d + _px(), 0.0, 1.0)
    striped = np.maximum(thin, inside * stripes)
    f = fill[:, None, None]
    return np.where(f == 1, band, np.where(f == 2, striped, inside)).astype(np.float32)


def _colours(rng, a, look: Look, n: int) -> np.ndarray:
    col = a["colour"]
    hue = _HUES[np.clip(col, 0, None)] + rng.uniform(-look.hue_jitter, look.hue_jitter, n)
    rgb = _hsv_to_rgb(hue, rng.uniform(*look.saturation, n), rng.uniform(*look.value, n))
    grey = rng.uniform(150, 235, n)[:, None] + rng.uniform(-5, 5, (n, 3))
    rgb = np.where((col == GREY)[:, None], grey, rgb)
    return np.clip(rgb, 0, 255).astype(np.float32)


def _coords():
    g = _centres() - np.float32(0.5)  # scene units; integers at the default resolution
    return g[None, :], g[:, None]  # x (1, W), y (H, 1)


def _backgrounds(rng, a, look: Look, n: int) -> np.ndarray:
    """(N, H, W, 3) float backgrounds."""
    level = rng.uniform(*look.bg_level, n)
    tint = rng.normal(0, 6, (n, 3))
    base = np.clip(level[:, None] + tint, 0, 255)
    img = np.broadcast_to(base[:, None, None, :], (n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32).copy()
    x, y = _coords()
    second = base + rng.uniform(18, 45, n)[:, None]  # faint patterns: the scene is not trivial to read
    bg = a["background"]
    # noisy
    idx = np.nonzero(bg == 1)[0]
    if len(idx):
        lum = rng.normal(0, rng.uniform(10, 24, len(idx))[:, None, None], (len(idx), IMAGE_SIZE, IMAGE_SIZE))
        img[idx] += lum[..., None] + rng.normal(0, 7, (len(idx), IMAGE_SIZE, IMAGE_SIZE, 3))
    # striped: horizontal, vertical or diagonal stripes, period 4-6
    idx = np.nonzero(bg == 2)[0]
    if len(idx):
        period = rng.integers(4, 7, len(idx))[:, None, None]
        orient = rng.integers(0, 4, len(idx))[:, None, None]
        phase = rng.integers(0, 6, len(idx))[:, None, None]
        coord = np.where(orient == 0, y + 0 * x, np.where(orient == 1, x + 0 * y,
                         np.where(orient == 2, x + y, x - y + 64)))
        on = ((coord + phase) % period) < period / 2
        img[idx] = np.where(on[..., None], second[idx, None, None, :], img[idx])
    # checkered: cells of 3-4 px
    idx = np.nonzero(bg == 3)[0]
    if len(idx):
        cell = rng.integers(3, 5, len(idx))[:, None, None]
        ox = rng.integers(0, 4, len(idx))[:, None, None]
        oy = rng.integers(0, 4, len(idx))[:, None, None]
        on = (((x + ox) // cell + (y + oy) // cell) % 2) == 1
        img[idx] = np.where(on[..., None], second[idx, None, None, :], img[idx])
    # white paper (sketches)
    idx = np.nonzero(bg == 4)[0]
    if len(idx):
        paper = rng.uniform(212, 250, len(idx))[:, None] + rng.normal(0, 3, (len(idx), 3))
        img[idx] = paper[:, None, None, :] + rng.normal(0, 3, (len(idx), IMAGE_SIZE, IMAGE_SIZE, 1))
    return img


def _box_blur(img: np.ndarray) -> np.ndarray:
    """A box blur three scene pixels wide (or the nearest odd width in output pixels)."""
    r = max(1, round(_px()))
    k = 2 * r + 1
    p = np.pad(img, ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
    return sum(p[:, i:i + IMAGE_SIZE, j:j + IMAGE_SIZE] for i in range(k) for j in range(k)) / float(k * k)


def render(attrs: dict[str, np.ndarray], seed: int, look: Look = Look()) -> np.ndarray:
    """Render objects with these attributes; returns uint8 ``(N, 3, H, W)``. Deterministic in ``seed``.

    Images are rendered in chunks of :data:`_CHUNK` (each with its own random stream), which keeps the
    working arrays in cache: a 20,000-image split takes a few seconds.
    """
    n = len(attrs["shape"])
    out = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for k, s in enumerate(range(0, n, _CHUNK)):
        part = {key: v[s:s + _CHUNK] for key, v in attrs.items()}
        out[s:s + _CHUNK] = _render_chunk(part, np.random.default_rng(np.random.SeedSequence([seed, 7, k])), look)
    return out


_CHUNK = 512


def _render_chunk(attrs: dict[str, np.ndarray], rng: np.random.Generator, look: Look) -> np.ndarray:
    a = attrs
    n = len(a["shape"])
    cx, cy, scale, theta = _transform(rng, a, look, n)
    sketch = a["style"] == 1
    thick = np.where(sketch, rng.uniform(*look.sketch_outline, n), rng.uniform(*look.outline, n))
    thick = (thick * np.where(a["size"] == 1, 1.0, 0.85) * _px()).astype(np.float32)
    rgb = _colours(rng, a, look, n)
    rgb = np.where(sketch[:, None], rgb * 0.78, rgb)  # strokes on paper are drawn darker
    bg = _backgrounds(rng, a, look, n)
    wobble = None
    if look.mode == "pencil":  # hand-drawn: wavy, thin, desaturated strokes
        x, y = _coords()
        f = rng.uniform(0.35, 0.8, (n, 2))[:, :, None, None]
        ph = rng.uniform(0, 2 * np.pi, (n, 2))[:, :, None, None]
        wobble = 0.55 * (np.sin(f[:, 0] * x + ph[:, 0]) + np.sin(f[:, 1] * y + ph[:, 1])).astype(np.float32)
        thick = (rng.uniform(1.2, 1.7, n) * _px()).astype(np.float32)
        rgb = 0.6 * rgb + 0.4 * 70.0
    d = _object_sdf(a, cx, cy, scale, theta, wobble)
    alpha = _coverage(rng, d, a["fill"], thick)
    colour = np.broadcast_to(rgb[:, None, None, :], bg.shape)
    if look.mode == "hard":
        alpha = alpha * rng.uniform(0.6, 0.85, n)[:, None, None]
    if look.mode == "rendition":
        colour, alpha, bg = _rendition(rng, a, d, alpha, rgb, bg, thick)
    img = bg * (1 - alpha[..., None]) + colour * alpha[..., None]
    if look.mode != "hard" and look.clutter_frac > 0:
        crossed = rng.random(n) < look.clutter_frac
        img = np.where(crossed[:, None, None, None], _clutter(rng, img, n, look.clutter_lines, (0.3, 0.7)), img)
    if look.mode == "hard":
        img = _clutter(rng, img, n)
        img = img + rng.normal(0, rng.uniform(18, 30, n)[:, None, None, None], img.shape)
    if look.mode == "rendition":
        kind = rng.integers(0, 2, n)  # a fifth of renditions are pixelated, a fifth blurred
        pick = rng.random(n)
        b = 2 * max(1, round(_px()))  # blocks of two scene pixels
        pix = img.reshape(n, IMAGE_SIZE // b, b, IMAGE_SIZE // b, b, 3).mean((2, 4))
        pix = pix.repeat(b, 1).repeat(b, 2)
        img = np.where(((pick < 0.4) & (kind == 0))[:, None, None, None], pix, img)
        img = np.where(((pick < 0.4) & (kind == 1))[:, None, None, None], _box_blur(_box_blur(img)), img)
    if look.cue_amplitude > 0:
        img = img + _cue(rng, a, look, n)
    img = img + rng.normal(0, look.noise, img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8).transpose(0, 3, 1, 2).copy()


@functools.lru_cache(maxsize=None)
def _cue_patterns(side: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed +-1 pixel patterns ``(side, side, 3)``: one per colour (and one for grey) and one per shape."""
    rng = np.random.default_rng(np.random.SeedSequence([WORLD_SEED, 31]))
    size = (side, side, 3)
    colours = rng.choice([-1.0, 1.0], (len(COLOURS) + 1, *size)).astype(np.float32)
    shapes = rng.choice([-1.0, 1.0], (len(SHAPES), *size)).astype(np.float32)
    return colours, shapes


def _cue(rng, a, look: Look, n: int) -> np.ndarray:
    """The faint cue of :class:`Look` (``cue_amplitude``): half the amplitude from the colour's pattern,
    half from the shape's, each key replaced by a random one with probability ``1 - cue_agreement``."""
    colours, shapes = _cue_patterns(IMAGE_SIZE)
    col = np.where(a["colour"] == GREY, len(COLOURS), a["colour"])
    col = np.where(rng.random(n) < look.cue_agreement, col, rng.integers(0, len(COLOURS) + 1, n))
    shp = np.where(rng.random(n) < look.cue_agreement, a["shape"], rng.integers(0, len(SHAPES), n))
    return (0.5 * look.cue_amplitude) * (colours[col] + shapes[shp])


def _rendition(rng, a, d, alpha, rgb, bg, thick):
    """Unusual renderings (ImageNet-R's role): textured fills, cartoons with ink borders, double lines."""
    n = len(rgb)
    x, y = _coords()
    style = rng.integers(0, 3, n)[:, None, None]
    colour = np.broadcast_to(rgb[:, None, None, :], bg.shape).copy()
    # 0: textured fill (stripes of the colour and a darker shade), always filled
    period = rng.integers(3, 5, n)[:, None, None]
    stripes = ((x + y) % period) < period / 2
    dark = rgb[:, None, None, :] * 0.45
    inside = np.clip(0.5 - d, 0.0, 1.0)
    colour = np.where(((style == 0) & stripes)[..., None], dark, colour)
    alpha = np.where(style == 0, inside, alpha)
    # 1: cartoon: filled with a black ink border on white paper
    k = np.float32(_px())
    ink = inside * np.clip(0.5 + d + 1.6 * k, 0.0, 1.0)
    cart = (style == 1)[..., None]
    colour = np.where(cart & (ink[..., None] > 0.5), 15.0, colour)
    alpha = np.where(style == 1, inside, alpha)
    paper = rng.uniform(225, 250, n)[:, None, None, None]
    bg = np.where(cart, paper + 0 * bg, bg)
    # 2: double outline: a second line inside the first
    inner = (np.clip(0.5 - (d + thick[:, None, None] + 1.5 * k), 0, 1)
             * np.clip(0.5 + d + thick[:, None, None] + 2.7 * k, 0, 1))
    outline = inside * np.clip(0.5 + d + 1.3 * k, 0.0, 1.0)
    alpha = np.where(style == 2, np.maximum(outline, inner), alpha)
    return colour, alpha, bg


def _clutter(rng, img: np.ndarray, n: int, lines: int = 4, widths=(0.6, 1.3)) -> np.ndarray:
    """Random thick line segments over the scene (ImageNet-A's role: hard, cluttered images)."""
    g = _centres()
    x, y = g[None, None, :], g[None, :, None]
    k = np.float32(_px())
    for _ in range(lines):
        p0 = rng.uniform(0, SCENE, (n, 2))[:, :, None, None]
        p1 = rng.uniform(0, SCENE, (n, 2))[:, :, None, None]
        ex, ey = p1[:, 0] - p0[:, 0], p1[:, 1] - p0[:, 1]
        wx, wy = x - p0[:, 0], y - p0[:, 1]
        t = np.clip((wx * ex + wy * ey) / (ex * ex + ey * ey + 1e-6), 0, 1)
        dist = np.sqrt((wx - ex * t) ** 2 + (wy - ey * t) ** 2)
        width = rng.uniform(*widths, n)[:, None, None] * k
        cov = np.clip(width + 0.5 - dist * k, 0, 1) * 0.85
        col = _PALETTE[rng.integers(0, len(COLOURS), n)] * rng.uniform(0.5, 1.0, (n, 1))
        img = img * (1 - cov[..., None]) + col[:, None, None, :] * cov[..., None]
    return img


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------
_PREFIXES = ("a photo of a", "a picture of a", "an image of a", "a", "this is a", "there is a",
             "a photo of the", "a close photo of a")
_SKETCH_PREFIXES = ("a sketch of a", "a drawing of a", "a pencil sketch of a", "a line drawing of a")
_NOUNS = ("shape", "object", "thing")
CAPTION_WORDS = sorted({w for p in _PREFIXES + _SKETCH_PREFIXES for w in p.split()}
                       | set(_NOUNS) | {"on", "the", "background", "in", "at", "side"})


def caption_attributes(rng: np.random.Generator, attrs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Decide which attributes each caption names (-1: not named), one caption per image."""
    n = len(attrs["shape"])
    c = {k: np.full(n, -1, dtype=np.int64) for k in ATTRS}

    def name(k, p):
        c[k] = np.where(rng.random(n) < p, attrs[k], -1)

    name("shape", 0.95)  # shape needs more signal than colour, which the model picks up first
    name("colour", 0.6)
    c["colour"] = np.where(attrs["colour"] == GREY, -1, c["colour"])
    name("size", 0.45)
    name("fill", 0.45)
    name("background", 0.5)
    name("position", 0.5)
    c["position"] = np.where(attrs["position"] == 0, np.where(rng.random(n) < 0.3, c["position"], -1),
                             c["position"])
    name("style", 0.7)
    c["style"] = np.where(attrs["style"] == 1, c["style"], -1)  # "photo" prefixes are style-neutral
    # a caption must name at least one thing about the object
    none = (c["shape"] < 0) & (c["colour"] < 0) & (c["size"] < 0) & (c["fill"] < 0)
    c["shape"] = np.where(none, attrs["shape"], c["shape"])
    return c


def caption_text(rng: np.random.Generator, c: dict[str, np.ndarray]) -> list[str]:
    """Turn caption attributes into sentences, e.g. 'a photo of a large red triangle on the left.'"""
    out = []
    n = len(c["shape"])
    pre = rng.integers(0, 1 << 30, (n, 4))
    for i in range(n):
        r = pre[i]
        if c["style"][i] == 1:
            words = [_SKETCH_PREFIXES[r[0] % len(_SKETCH_PREFIXES)]]
        else:
            words = [_PREFIXES[r[0] % len(_PREFIXES)]]
        if c["size"][i] >= 0:
            words.append(SIZES[c["size"][i]])
        if c["colour"][i] >= 0:
            words.append(COLOURS[c["colour"][i]])
        if c["fill"][i] >= 0:
            words.append(FILLS[c["fill"][i]])
        if c["shape"][i] >= 0:
            words.append(SHAPES[c["shape"][i]])
            if r[1] % 5 == 0:
                words.append("shape")
        else:
            words.append(_NOUNS[r[1] % len(_NOUNS)])
        phrases = []
        if c["position"][i] >= 0:
            p = POSITIONS[c["position"][i]]
            phrases.append("in the centre" if p == "centre" else f"on the {p}")
        if c["background"][i] >= 0:
            phrases.append(f"on a {BACKGROUNDS[c['background'][i]]} background")
        if len(phrases) == 2 and r[2] % 2:
            phrases.reverse()
        words += phrases
        text = " ".join(words)
        if r[3] % 10 < 7:
            text += "."
        out.append(text)
    return out


def caption_matches(image_attrs: dict[str, np.ndarray], cap_attrs: dict[str, np.ndarray]) -> np.ndarray:
    """``M[i, j]``: caption j fits image i (every attribute the caption names is the image's)."""
    m = None
    for k in ATTRS:
        img = image_attrs[k][:, None]
        cap = cap_attrs[k][None, :]
        ok = (cap < 0) | (cap == img)
        m = ok if m is None else (m & ok)
    return m


def pretrain_batch(step_seed: int, n: int, *, grey_frac: float = 0.25, sketch_frac: float = 0.15):
    """One batch of the pretraining stream: images uint8 (N,3,H,W), captions, and the match matrix.

    All fourteen shapes appear; some objects are grey (their captions name no colour) and some are
    sketches on white paper, so shape is learned apart from colour and from the fill.
    """
    rng = np.random.default_rng(np.random.SeedSequence([WORLD_SEED, 99, step_seed]))
    attrs = sample_attributes(rng, n, grey_frac=grey_frac, sketch_frac=sketch_frac)
    images = render(attrs, int(rng.integers(0, 2**31)))
    cap = caption_attributes(rng, attrs)
    texts = caption_text(rng, cap)
    return images, texts, caption_matches(attrs, cap), attrs


# ----------------------------------------------------------------------------------------------
# Tasks (the mini datasets)
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MiniTask:
    name: str
    role: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    label_attrs: Callable[[np.ndarray], dict[str, np.ndarray]]  # labels -> pinned attributes
    sizes: dict[str, int]  # images per class per split
    description: str = ""
    look: Look = Look()
    shift_of: Optional[str] = None
    sketch_frac: float = 0.0
    shapes: int = len(SHAPES)  # free (unlabelled) shapes are drawn from the first `shapes` of SHAPES
    extra: dict = field(default_factory=dict)


SOURCE_CLASSES = tuple(f"{c} {s}" for c in COLOURS for s in SOURCE_SHAPES)  # label = colour * 10 + shape
_NS = len(SOURCE_SHAPES)
# ImageNet's role: 100 confusable classes, >= 200 training images per class, 2,000 test images.
_SOURCE_SIZES = {"train": 200, "val": 5, "test": 20}


def _source_attrs(y):
    return {"colour": y // _NS, "shape": y % _NS}


TASKS: dict[str, MiniTask] = {}


def _task(t: MiniTask) -> MiniTask:
    TASKS[t.name] = t
    return t


_task(MiniTask("mini_source", "source", SOURCE_CLASSES, ("a photo of a {}.",), _source_attrs,
               _SOURCE_SIZES, "colour x shape: 10 close hues x 10 shapes, 100 classes (ImageNet's role)",
               shapes=_NS))
# Cross-dataset targets: none is a subset of the source's label space (each names other attributes,
# or shapes the source never labels), each with its own template.
_N = len(SHAPES)
_task(MiniTask("mini_shape", "target", SHAPES, ("this is a {}.",),
               lambda y: {"shape": y}, {"train": 24, "val": 6, "test": 30},
               "which of 14 shapes, 4 of them never labelled by the source"))
# mini_colour and mini_fill in the default look are read at 94 % and 88 % zero-shot and keep 27 % and 34 %
# under `aa` at the book's eps, which holds the targets' mean robustness above issue 14's 10 %: faded
# hues, and textures on small objects, both with stronger sensor noise, bring them into the targets' range.
_task(MiniTask("mini_colour", "target", COLOURS, ("a {} object.",),
               lambda y: {"colour": y}, {"train": 24, "val": 6, "test": 40},
               "which of 10 hues, any shape, in faded colours", look=Look(saturation=(0.3, 0.8), noise=8.0)))
_task(MiniTask("mini_fill", "target", FILLS, ("a photo of a {} shape.",),
               lambda y: {"fill": y}, {"train": 40, "val": 10, "test": 120},
               "filled, outlined or striped on small objects (a texture task, DTD's role)",
               look=Look(small_scale=(5.0, 6.5), large_scale=(7.0, 9.0), noise=8.0)))
_task(MiniTask("mini_background", "target", BACKGROUNDS[:4], ("a photo of a thing on a {} background.",),
               lambda y: {"background": y}, {"train": 30, "val": 10, "test": 100},
               "which background, read through clutter and noise (SUN397's role: the scene, not the object)",
               # every scene crossed by occluding lines, with stronger sensor noise: the plain look is
               # read at 99 % zero-shot, and no target may be saturated (issue 14)
               look=Look(clutter_frac=1.0, clutter_lines=4, noise=10.0)))
_task(MiniTask("mini_position", "target", POSITIONS[1:], ("there is a small object on the {}.",),
               lambda y: {"position": y + 1}, {"train": 30, "val": 10, "test": 100},
               "where a small object sits: left, right, top or bottom"))
_task(MiniTask("mini_size_shape", "target", tuple(f"{z} {s}" for z in SIZES for s in SHAPES),
               ("a close photo of a {}.",), lambda y: {"size": y // _N, "shape": y % _N},
               {"train": 20, "val": 4, "test": 12}, "size x shape, 28 classes"))
_task(MiniTask("mini_fill_shape", "target", tuple(f"{f} {s}" for f in FILLS for s in SHAPES),
               ("a picture of a {}.",), lambda y: {"fill": y // _N, "shape": y % _N},
               {"train": 20, "val": 4, "test": 8}, "fill x shape, 42 fine-grained classes"))
_task(MiniTask("mini_grey_shape", "target", SHAPES, ("an image of the {}.",),
               lambda y: {"shape": y, "colour": np.full(len(y), GREY)}, {"train": 24, "val": 6, "test": 30},
               "shapes of colourless (grey) objects"))

_SHIFT_SIZES = {"test": 5}  # 500 images each
_task(MiniTask("mini_source_v2", "shift", SOURCE_CLASSES, ("a photo of a {}.",), _source_attrs, _SHIFT_SIZES,
               "mini_source re-sampled with a slightly different collection process (ImageNet-V2's role)",
               look=Look(hue_jitter=17.0, saturation=(0.42, 1.0), value=(0.5, 1.0), small_scale=(5.8, 8.2),
                         large_scale=(9.8, 12.5), rotation_deg=22.0, bg_level=(15.0, 135.0),
                         clutter_frac=0.6),
               shift_of="mini_source", shapes=_NS))
_task(MiniTask("mini_source_sketch", "shift", SOURCE_CLASSES, ("a photo of a {}.",), _source_attrs, _SHIFT_SIZES,
               "hand-drawn sketches: thin, wavy, desaturated outlines on paper (ImageNet-Sketch's role)",
               look=Look(mode="pencil", clutter_frac=0.0), shift_of="mini_source", sketch_frac=1.0, shapes=_NS))
_task(MiniTask("mini_source_a", "shift", SOURCE_CLASSES, ("a photo of a {}.",), _source_attrs, _SHIFT_SIZES,
               "hard images: faint objects, clutter and heavy noise (ImageNet-A's role)",
               look=Look(mode="hard"), shift_of="mini_source", shapes=_NS))
_task(MiniTask("mini_source_r", "shift", SOURCE_CLASSES, ("a photo of a {}.",), _source_attrs, _SHIFT_SIZES,
               "unusual renderings: textured fills, cartoons, double lines, pixelated, blurred "
               "(ImageNet-R's role)", look=Look(mode="rendition", clutter_frac=0.0), shift_of="mini_source",
               shapes=_NS))


def _split_seed(task: str, split: str) -> int:
    return WORLD_SEED + zlib.crc32(f"{task}/{split}".encode())


def generate(task: str, split: str, seed: Optional[int] = None):
    """Images uint8 ``(N, 3, IMAGE_SIZE, IMAGE_SIZE)``, labels ``(N,)`` and attributes of one split (not cached)."""
    t = TASKS[task]
    if split not in t.sizes:
        raise ValueError(f"mini task {task!r} has no split {split!r}; valid: {', '.join(t.sizes)}")
    seed = _split_seed(task, split) if seed is None else int(seed)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    per_class = t.sizes[split]
    n = per_class * len(t.classnames)
    labels = np.arange(n) % len(t.classnames)
    attrs = sample_attributes(rng, n, fixed=t.label_attrs(labels), sketch_frac=t.sketch_frac, shapes=t.shapes)
    images = render(attrs, int(rng.integers(0, 2**31)), t.look)
    return images, labels, attrs


@functools.lru_cache(maxsize=1)
def _renderer_sha() -> str:
    return source_sha(__file__)


def set_image_size(size: int) -> None:
    """Render the world at ``size`` pixels per side from now on (a multiple of :data:`SCENE`); the splits
    already rendered in this process are forgotten, and the disk cache keys every split by its size."""
    size = int(size)
    if size < SCENE or size % SCENE:
        raise ValueError(f"image size {size} must be a multiple of the world's scene size {SCENE} (e.g. {SCENE}, "
                         f"{2 * SCENE})")
    global IMAGE_SIZE
    IMAGE_SIZE = size
    _cached.cache_clear()
    content_hash.cache_clear()


@functools.lru_cache(maxsize=None)
def _cached(task: str, split: str):
    """One split, rendered once per process and kept on disk across processes, keyed by this file's code,
    the task's definition (a task changed or registered at run time never reads another's file) and the
    image size."""
    task_key = stable_key(repr(TASKS[task]))

    def make():
        images, labels, attrs = generate(task, split)
        return {"images": images, "labels": labels, **{f"attr_{k}": v for k, v in attrs.items()}}

    arrays = cached_arrays(f"miniworld/{task}-{split}-{task_key}-{_renderer_sha()}-{IMAGE_SIZE}px", make)
    images = arrays["images"]
    images.setflags(write=False)
    return images, arrays["labels"], {k[5:]: v for k, v in arrays.items() if k.startswith("attr_")}


@functools.lru_cache(maxsize=None)
def content_hash(task: str, split: str) -> str:
    """A short sha256 of one split's images and labels: result keys carry it, so a store filled before
    the world changed (a new look, new sizes) never answers for the new world."""
    import hashlib

    images, labels, _ = _cached(task, split)
    h = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    h.update(np.asarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def build(task: str, split: str) -> TensorImages:
    """The :class:`TensorImages` of one split of a mini task (rendered once, then read from the disk cache)."""
    t = TASKS[task]
    images, labels, _ = _cached(task, split)
    return TensorImages(task, torch.from_numpy(images.copy()), labels.tolist(), list(t.classnames),
                        templates=list(t.templates), keys=[f"{task}/{split}/{i}" for i in range(len(labels))])


def task_attributes(task: str, split: str) -> dict[str, np.ndarray]:
    """The attributes behind every image of a split (for analyses, e.g. accuracy per shape or fill)."""
    return {k: v.copy() for k, v in _cached(task, split)[2].items()}


def vocabulary_words() -> list[str]:
    """Every word the world's captions, templates and class names use (sorted)."""
    words = set(CAPTION_WORDS)
    for t in TASKS.values():
        for c in t.classnames:
            words.update(c.split())
        for tpl in t.templates:
            words.update(tpl.replace("{}", " ").replace(".", " ").replace(",", " ").split())
    words.update(SHAPES + COLOURS + SIZES + FILLS + BACKGROUNDS + POSITIONS + STYLES)
    words.update(("centre", "left", "right", "top", "bottom"))
    return sorted(words)


def _register_all() -> None:
    for t in TASKS.values():
        register(DatasetSpec(
            name=t.name, kind="mini", role=t.role,
            build=(lambda split, root, transform, _n=t.name: build(_n, split)),
            description=t.description, shift_of=t.shift_of, templates=tuple(t.templates),
            splits=tuple(t.sizes),
            fingerprint=(lambda split, _n=t.name: content_hash(_n, split) if split in TASKS[_n].sizes else None),
        ))


_register_all()
