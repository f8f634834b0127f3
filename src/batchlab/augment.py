"""Data augmentation of training batches: a random crop of each image padded with zeros, then a horizontal
flip with probability 1/2 (torchvision's ``RandomCrop(size, padding=p)`` and ``RandomHorizontalFlip()``),
the augmentation the published CIFAR-10 batch-size results train with (4 pixels of padding and flips).
The data are standardized, so the zeros of the padding are the training set's mean.

Both are applied to a whole batch at once on the device where the data live: the batch is padded once and
every image's window (mirrored or not) is read with one indexing of rows and columns; no loop over examples.

The draws come from a counter-based stream: before each step a generator on the data's device is seeded
from the run's seed, a constant of this stream (so they are not the draws of the initialization or the
data order) and the step. The draws of step ``t`` then depend only on (seed, ``t``, batch size): a resumed
run draws what the uninterrupted run draws, with nothing in its checkpoint, and a member of a batched pack
draws what its run alone draws. Evaluation never augments.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Mixed into every step's seed, so the augmentation stream is neither the initialization's (seeded with
# the run's seed) nor the data order's (seed + 1_000_003) nor the noise scale's.
STREAM = 0x3C6EF372FE94F82B
_MASK = 2**64 - 1


def _mix(x: int) -> int:
    """splitmix64's finalizer: nearby inputs give unrelated 64-bit outputs (a CPU generator reads only the
    low 32 bits of its seed, and these differ too)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def step_seed(seed: int, step: int) -> int:
    """The seed of a run's augmentation draws at optimizer step ``step`` (0-based)."""
    return _mix((_mix(seed ^ STREAM) + step) & _MASK)


def choices(padding: int, flip: bool) -> int:
    """How many ways one image can be augmented: (2 padding + 1)^2 windows, times 2 with flips."""
    return (2 * padding + 1) ** 2 * (2 if flip else 1)


def draw(generator: torch.Generator, seed: int, step: int, n: int, padding: int, flip: bool) -> torch.Tensor:
    """The augmentation codes (n,) of a run's ``n`` images at ``step``, on the generator's device: one
    uniform integer per image standing for its window and flip (see :func:`decode`). One call per run and
    step: re-seeding is cheap, and one kernel draws window and flip together."""
    generator.manual_seed(step_seed(seed, step))
    return torch.randint(0, choices(padding, flip), (n,), generator=generator, device=generator.device)


def decode(codes: torch.Tensor, padding: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The window offsets (n, 2), row and column each in 0..2 padding, and the flips (n,) (None without
    flips) that ``codes`` stand for."""
    flips = None
    if flip:
        flips, codes = codes % 2 == 1, codes // 2
    side = 2 * padding + 1
    return torch.stack([codes // side, codes % side], 1), flips


def crop_flip(x: torch.Tensor, padding: int, offsets: torch.Tensor, flips: torch.Tensor | None) -> torch.Tensor:
    """Images ``x`` (N, C, H, W) padded with ``padding`` zeros on each side, each cut to its H x W window at
    ``offsets`` (N, 2) (row, column of its top left corner in the padded image) and mirrored left to right
    where ``flips`` (N,) is true. Values are copied, never computed: bitwise the pixels of the padded image."""
    n, c, h, w = x.shape
    if padding == 0:  # flips alone (or nothing): no padding, no indexing
        return x if flips is None else torch.where(flips[:, None, None, None], x.flip(-1), x)
    padded = F.pad(x, (padding, padding, padding, padding))  # (N, C, H + 2p, W + 2p)
    cols = torch.arange(w, device=x.device)
    if flips is not None:  # a mirrored window reads its columns from right to left
        cols = torch.where(flips[:, None], w - 1 - cols, cols)  # (N, W)
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[:, 1:] + cols  # (N, W)
    # each output pixel's place in its padded image, shared by the channels (expand: no copy); one gather
    # is several times faster than advanced indexing with four index tensors
    where = (rows[:, :, None] * (w + 2 * padding) + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return padded.flatten(2).gather(2, where).view(n, c, h, w)


class Augmenter:
    """The augmentation of the training batches of runs with seeds ``seeds`` (one run, or the members of a
    batched pack) and the spec's ``augmentation`` settings, drawn with one generator on ``device``."""

    def __init__(self, settings: dict, seeds: list[int], device: torch.device):
        self.padding, self.flip = int(settings["crop_padding"]), bool(settings["flip"])
        self.seeds = [int(s) for s in seeds]
        self.generator = torch.Generator(device=device)

    def __call__(self, x: torch.Tensor, step: int) -> torch.Tensor:
        """The augmented batch of ``step``: ``x`` (K * B, C, H, W) holds the K runs' batches one after
        another; each run's B images get that run's draws."""
        b = len(x) // len(self.seeds)
        codes = [draw(self.generator, seed, step, b, self.padding, self.flip) for seed in self.seeds]
        offsets, flips = decode(codes[0] if len(codes) == 1 else torch.cat(codes), self.padding, self.flip)
        return crop_flip(x, self.padding, offsets, flips)


def for_specs(specs: list[dict], device: torch.device) -> Augmenter | None:
    """The augmenter of a run (``[spec]``) or of a pack's members, or None where they train without
    augmentation (the training step then does nothing extra)."""
    settings = specs[0].get("augmentation")
    if any(s.get("augmentation") != settings for s in specs):
        raise ValueError("the runs of a pack share their augmentation (it is set per dataset)")
    return Augmenter(settings, [s["seed"] for s in specs], device) if settings else None
