"""A generated glyph data set in Omniglot's directory layout, for tests and the shipped default.

Nothing is downloaded: ``generate_glyphs(root, seed=...)`` draws it with PIL, deterministically.

* Each **alphabet** has a style: a stroke-count range and a curviness.
* Each **character** is 2 to 4 strokes; a stroke is a random walk of 3 to 5 control points in
  the unit square, drawn as a thick polyline with rounded joints.
* Each **drawer** (one PNG per character and drawer, like Omniglot's 20 drawers) redraws the
  character with every control point jittered (σ = 5% of the image), the whole glyph rotated
  (σ = 12°), scaled (0.8 to 1.2) and shifted (σ = 5% of the image), and its own pen width.

Images are 105 x 105, black strokes on white, 1-bit PNGs, as Omniglot's.  The layout is
``root/images_background/<alphabet>/<character>/<drawer>.png`` and the same under
``images_evaluation`` (disjoint alphabets), so :mod:`metarl.supervised.omniglot` loads it with
the very code that loads Omniglot.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 105
GLYPHS_VERSION = 1
"""Bump when the generator changes, so a cached default set is regenerated."""


def _character(rng: np.random.Generator, *, min_strokes: int, max_strokes: int,
               curviness: float) -> list[np.ndarray]:
    """Control points of each stroke, ``[P, 2]`` in the unit square."""
    strokes = []
    for _ in range(rng.integers(min_strokes, max_strokes + 1)):
        num_points = rng.integers(3, 6)
        point = rng.uniform(0.2, 0.8, size=2)
        heading = rng.uniform(0, 2 * math.pi)
        points = [point]
        for _ in range(num_points - 1):
            heading += rng.normal(0, curviness)
            point = np.clip(point + rng.uniform(0.15, 0.35) * np.array([math.cos(heading), math.sin(heading)]),
                            0.1, 0.9)
            points.append(point)
        strokes.append(np.array(points))
    return strokes


def _draw(strokes: list[np.ndarray], rng: np.random.Generator) -> Image.Image:
    """One drawer's rendering of a character (jitter, affine, pen width)."""
    angle = math.radians(rng.normal(0, 12))
    scale = rng.uniform(0.8, 1.2)
    shift = rng.normal(0, 0.05, size=2)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    width = int(rng.integers(5, 9))
    image = Image.new("L", (IMAGE_SIZE, IMAGE_SIZE), 255)
    draw = ImageDraw.Draw(image)
    for points in strokes:
        jittered = points + rng.normal(0, 0.05, size=points.shape)
        placed = (jittered - 0.5) @ rotation.T * scale + 0.5 + shift
        pixels = [tuple(p) for p in (placed * IMAGE_SIZE).tolist()]
        draw.line(pixels, fill=0, width=width, joint="curve")
    return image.convert("1")


def generate_glyphs(root: str | Path, *, seed: int = 0, num_background_alphabets: int = 8,
                    num_evaluation_alphabets: int = 4, characters_per_alphabet: int = 12,
                    num_drawers: int = 20) -> Path:
    """Write the glyph set under ``root`` (which must not exist yet) and return ``root``.

    The defaults give 96 background and 48 evaluation characters of 20 drawings each (2,880
    small PNGs, a few seconds).  The same arguments always give the same images.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = {"images_background": num_background_alphabets, "images_evaluation": num_evaluation_alphabets}
    alphabet_index = 0
    for split, num_alphabets in splits.items():
        for _ in range(num_alphabets):
            alphabet_index += 1
            min_strokes = int(rng.integers(2, 4))
            style = {"min_strokes": min_strokes, "max_strokes": min_strokes + 1,
                     "curviness": float(rng.uniform(0.2, 1.2))}
            for character in range(1, characters_per_alphabet + 1):
                strokes = _character(rng, **style)
                directory = root / split / f"Glyphs_{alphabet_index:02d}" / f"character{character:02d}"
                directory.mkdir(parents=True)
                for drawer in range(1, num_drawers + 1):
                    _draw(strokes, rng).save(directory / f"{drawer:02d}.png")
    return root


def default_glyphs_path() -> Path:
    """The shipped default: the glyph set generated once (seed 0) into the user's cache
    (``$XDG_CACHE_HOME/metarl`` or ``~/.cache/metarl``) and reused."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "metarl"
    path = cache / f"glyphs-v{GLYPHS_VERSION}"
    if not path.is_dir():
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="glyphs-", dir=cache))
        generate_glyphs(staging / "set")
        try:  # another process may have finished first: keep its copy
            (staging / "set").rename(path)
        except OSError:
            pass
        shutil.rmtree(staging, ignore_errors=True)
    return path
