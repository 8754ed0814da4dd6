"""N-way K-shot classification from images in Omniglot's directory layout (Lake et al., 2015).

The layout is ``<path>/images_background/<alphabet>/<character>/*.png`` (the 30 background
alphabets, used for meta-training) and ``<path>/images_evaluation/...`` (the 20 evaluation
alphabets, held out), as in the unzipped ``images_background.zip`` / ``images_evaluation.zip``
of github.com/brendenlake/omniglot.  Nothing is downloaded: the user gives the path.  The tests
and the ``Glyphs`` default load a generated set in the same layout (:mod:`.glyphs`) through this
very code.

A task is N character classes (``{"classes": ["alphabet/character@rotation", ...]}``), label j
being the j-th listed; training tasks draw from the background characters, test tasks from the
evaluation characters, so train and test classes are disjoint.  With ``rotations`` each
character also gives three new classes rotated by 90, 180 and 270 degrees (Santoro et al. 2016,
Finn et al. 2017).  Images are resized to ``image_size`` and inverted (strokes 1, paper 0).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from metarl.supervised.batch import FewShotBatch
from metarl.supervised.glyphs import default_glyphs_path
from metarl.supervised.task_source import FewShotTaskSource, SourceSpec, register_source
from metarl.tasks import MetaRLError, Task

SPLITS = ("images_background", "images_evaluation")
ROTATIONS = (0, 90, 180, 270)


@functools.lru_cache(maxsize=8)
def load_characters(root: str, split: str, image_size: int) -> dict[str, torch.Tensor]:
    """``{"alphabet/character": images [M, image_size, image_size]}`` (float, strokes 1) of one
    split, in sorted order.  Cached: a run's sources share one copy."""
    directory = Path(root) / split
    if not directory.is_dir():
        raise MetaRLError(
            f"{str(directory)!r} does not exist; the Omniglot path must hold {' and '.join(SPLITS)}, "
            "each as <alphabet>/<character>/*.png"
        )
    characters = {}
    for alphabet in sorted(p for p in directory.iterdir() if p.is_dir()):
        for character in sorted(p for p in alphabet.iterdir() if p.is_dir()):
            files = sorted(character.glob("*.png"))
            if not files:
                continue
            images = [np.asarray(Image.open(f).convert("L").resize((image_size, image_size), Image.BILINEAR),
                                 dtype=np.float32) for f in files]
            characters[f"{alphabet.name}/{character.name}"] = 1.0 - torch.from_numpy(np.stack(images)) / 255.0
    if not characters:
        raise MetaRLError(f"{str(directory)!r} holds no <alphabet>/<character>/*.png images")
    return characters


class OmniglotTasks:
    """The class pools of both splits and the batch maker of one (path, N-way, rotations) setting."""

    def __init__(self, path: str | Path, *, num_ways: int, rotations: bool, image_size: int):
        if num_ways < 2:
            raise MetaRLError(f"env_options.num_ways: {num_ways}; accepted: >= 2")
        self.num_ways = num_ways
        self.characters = {split: load_characters(str(Path(path).resolve()), split, image_size)
                           for split in SPLITS}
        angles = ROTATIONS if rotations else (0,)
        self.pools = {split: [f"{name}@{angle}" for name in characters for angle in angles]
                      for split, characters in self.characters.items()}
        for split, pool in self.pools.items():
            if len(pool) < num_ways:
                raise MetaRLError(f"{split} has {len(pool)} classes; a {num_ways}-way task needs {num_ways}")

    def sampler(self, split: str):
        pool = self.pools[split]

        def sample(rng: np.random.Generator, num_tasks: int) -> list[Task]:
            return [{"classes": [pool[i] for i in rng.choice(len(pool), self.num_ways, replace=False)]}
                    for _ in range(num_tasks)]

        return sample

    def _images(self, key: str) -> tuple[torch.Tensor, int]:
        name, angle = key.rsplit("@", 1)
        for characters in self.characters.values():
            if name in characters:
                return characters[name], int(angle) // 90
        raise MetaRLError(f"class {key!r} is in neither split of this data set")

    def make_batch(self, tasks: Sequence[Task], rng: np.random.Generator, num_shots: int,
                   num_query: int) -> FewShotBatch:
        """K = ``num_shots`` support and ``num_query`` query images per class, drawn without
        replacement from the class's drawings; support ``[B, N*K, 1, s, s]``, class-major."""
        support, query = [], []
        for task in tasks:
            task_support, task_query = [], []
            for key in task["classes"]:
                images, quarter_turns = self._images(key)
                if images.shape[0] < num_shots + num_query:
                    raise MetaRLError(
                        f"class {key!r} has {images.shape[0]} images; {num_shots}-shot with {num_query} "
                        "query images needs num_shots + num_query of them"
                    )
                chosen = images[rng.choice(images.shape[0], num_shots + num_query, replace=False)]
                chosen = torch.rot90(chosen, quarter_turns, dims=(-2, -1))
                task_support.append(chosen[:num_shots])
                task_query.append(chosen[num_shots:])
            support.append(torch.cat(task_support))
            query.append(torch.cat(task_query))
        num_classes = {len(task["classes"]) for task in tasks}
        if len(num_classes) != 1:
            raise MetaRLError(f"a batch's tasks must have the same number of classes; got {sorted(num_classes)}")
        labels = torch.arange(num_classes.pop())
        B = len(tasks)
        return FewShotBatch(
            torch.stack(support).unsqueeze(2), labels.repeat_interleave(num_shots).expand(B, -1).clone(),
            torch.stack(query).unsqueeze(2), labels.repeat_interleave(num_query).expand(B, -1).clone(),
            len(labels),
        )


def make_omniglot(*, path: str = "", num_ways: int = 5, rotations: bool = False, image_size: int = 28,
                  num_test_tasks: int = 100, name: str = "Omniglot") -> FewShotTaskSource:
    if not path:
        raise MetaRLError(
            "the Omniglot source needs env_options.path: a directory holding images_background and "
            "images_evaluation (nothing is downloaded); or use the source Glyphs"
        )
    tasks = OmniglotTasks(path, num_ways=num_ways, rotations=rotations, image_size=image_size)
    return FewShotTaskSource(
        name=name,
        description=f"{num_ways}-way classification, {'rotated ' if rotations else ''}characters of {path}",
        citation="Lake et al. 2015; the N-way K-shot protocol of Vinyals et al. 2016",
        sample_tasks=tasks.sampler("images_background"),
        sample_test_tasks=tasks.sampler("images_evaluation"),
        make_batch=tasks.make_batch,
        input_shape=(1, image_size, image_size),
        num_test_tasks=num_test_tasks,
        num_classes=num_ways,
    )


def make_glyphs(*, path: str = "", num_ways: int = 5, rotations: bool = False, image_size: int = 28,
                num_test_tasks: int = 100) -> FewShotTaskSource:
    """The generated glyph set (:mod:`.glyphs`), at ``path`` or the cached default."""
    return make_omniglot(path=path or str(default_glyphs_path()), num_ways=num_ways, rotations=rotations,
                         image_size=image_size, num_test_tasks=num_test_tasks, name="Glyphs")


register_source(SourceSpec("Omniglot", "N-way K-shot classification, Omniglot layout at a path you give",
                           make_omniglot, classification=True))
register_source(SourceSpec("Glyphs", "N-way K-shot classification on a generated glyph set (Omniglot layout)",
                           make_glyphs, classification=True))
