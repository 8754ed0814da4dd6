"""The networks of the few-shot papers, initialised from an explicit generator.

* regression: the 1-40-40-1 ReLU MLP of MAML's sinusoid experiment;
* classification: the 4-block convolutional embedding of Vinyals et al. (2016) used by MAML,
  Reptile and Prototypical Networks (3x3 conv, batch norm, ReLU, 2x2 max-pool per block).

Batch norm keeps no running statistics: it always normalises with the statistics of the batch it
sees (one task's support or query set), as MAML's reference implementation does; so a model
behaves the same in training and evaluation and runs under ``torch.func.vmap`` over tasks.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from metarl.tasks import MetaRLError


@contextlib.contextmanager
def seeded(generator: torch.Generator) -> Iterator[None]:
    """Build modules inside: their default initialisation draws from a seed taken from
    ``generator``, and the global RNG is left as it was (no hidden global state)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def regression_mlp(hidden_sizes: Sequence[int] = (40, 40), *, generator: torch.Generator) -> nn.Module:
    """``x [..., 1] -> y [..., 1]`` with ReLU hidden layers."""
    sizes = [1, *hidden_sizes]
    layers: list[nn.Module] = []
    with seeded(generator):
        for i, o in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(i, o), nn.ReLU()]
        layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


def conv_block(in_channels: int, out_channels: int, *, pool: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.BatchNorm2d(out_channels, track_running_stats=False),
        nn.ReLU(),
    ]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class ConvEmbedding(nn.Module):
    """``images [M, C, H, W] -> features [M, D]`` (or feature maps with ``flatten=False``).

    ``num_pooled`` of the ``num_blocks`` blocks halve the resolution (Relation Networks pool only
    the first two, keeping maps to compare).
    """

    def __init__(self, input_shape: Sequence[int], *, channels: int = 32, num_blocks: int = 4,
                 num_pooled: int | None = None, flatten: bool = True, generator: torch.Generator):
        super().__init__()
        num_pooled = num_blocks if num_pooled is None else num_pooled
        with seeded(generator):
            self.blocks = nn.Sequential(*[
                conv_block(input_shape[0] if i == 0 else channels, channels, pool=i < num_pooled)
                for i in range(num_blocks)
            ])
        self.flatten = flatten
        if min(input_shape[1:]) < 2 ** num_pooled:
            raise MetaRLError(f"images of {tuple(input_shape[1:])} pixels are too small for {num_pooled} "
                              f"pooling blocks; accepted: at least {2 ** num_pooled} pixels a side")
        with torch.no_grad():
            self.output_shape = tuple(self.blocks(torch.zeros(2, *input_shape)).shape[1:])
        self.output_dim = int(torch.tensor(self.output_shape).prod())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.blocks(images)
        return features.flatten(1) if self.flatten else features


def classifier(input_shape: Sequence[int], num_classes: int, *, channels: int,
               generator: torch.Generator) -> nn.Module:
    """The conv embedding followed by a linear layer to ``num_classes`` logits (MAML, Reptile)."""
    embedding = ConvEmbedding(input_shape, channels=channels, generator=generator)
    with seeded(generator):
        head = nn.Linear(embedding.output_dim, num_classes)
    return nn.Sequential(embedding, head)


def model_for(input_shape: Sequence[int], num_classes: int | None, *, hidden_sizes: Sequence[int],
              channels: int, generator: torch.Generator) -> nn.Module:
    """The paper's network for a source: the sinusoid MLP (``num_classes`` None) or the conv
    classifier."""
    if num_classes is None:
        return regression_mlp(hidden_sizes, generator=generator)
    return classifier(input_shape, num_classes, channels=channels, generator=generator)
