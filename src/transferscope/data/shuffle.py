"""Block-shuffled images (paper 003, section 3.1, Figures 1 and 3).

To separate feature reuse from the low-level statistics of the pixels, the target images are
cut into equal square blocks and the blocks are put back in another order. The order is one
permutation drawn once from a seed and applied to every image of the data set, so the task
stays learnable (the same pixel always lands at the same place) while the visual structure
above the block scale is destroyed.

* ``block_size = b`` (an int): ``b x b`` blocks are permuted, each block keeping its content
  and all its channels. ``b = 1`` moves single pixels, their three channels together; ``b``
  equal to the image side leaves the image unchanged (one block).
* ``block_size = "*"``: the ``C*H*W`` values are permuted jointly, so a value can also move
  to another channel (the paper's special case "*").

Every variant only moves values, so the multiset of values of an image is preserved: this is
the "low-level statistics" that survive shuffling. The paper trains on shuffled images without
random crops and flips (footnote 3), so pair this with a deterministic resize/crop.
"""

from __future__ import annotations

import numpy as np
import torch

from transferscope.errors import ConfigError

__all__ = ["BlockShuffle"]


class BlockShuffle:
    """Permute ``block_size x block_size`` blocks of a ``(..., C, H, W)`` tensor.

    A torchvision-style transform: put it after the conversion to a tensor (for example after
    ``v2.ToDtype`` / ``v2.Normalize`` in an evaluation transform). The permutation depends
    only on ``seed`` and on the number of blocks, so every image of one size gets the same
    permutation, and two instances with equal arguments behave identically.

    Args:
        block_size: side of the square blocks in pixels (an int >= 1), or ``"*"`` to permute
            all values across channels.
        seed: seeds the permutation (numpy ``default_rng``).

    Raises:
        ConfigError: a block size that is not a positive int or ``"*"``, or (when called) an
            image whose height or width is not a multiple of the block size.

    Example:
        >>> t = BlockShuffle(2, seed=0)
        >>> x = torch.arange(48.).reshape(3, 4, 4)
        >>> y = t(x)
        >>> torch.equal(y.flatten().sort().values, x.flatten().sort().values)
        True
        >>> torch.equal(BlockShuffle(4, seed=0)(x), x)
        True
    """

    def __init__(self, block_size: int | str, seed: int = 0):
        if isinstance(block_size, str) and block_size.strip() != "*":
            try:
                block_size = int(block_size)
            except ValueError:
                raise ConfigError(f"block_size must be a positive int or '*', got "
                                  f"{block_size!r}") from None
        if isinstance(block_size, str):
            block_size = "*"
        elif isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
                or block_size < 1:
            raise ConfigError(f"block_size must be a positive int or '*', got {block_size!r}")
        else:
            block_size = int(block_size)
        self.block_size: int | str = block_size
        self.seed = int(seed)
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, count: int) -> torch.Tensor:
        """The fixed permutation of ``count`` blocks (or values): output ``i`` takes input
        ``permutation(count)[i]``. An identity draw is redrawn, so with two or more blocks
        the image always changes."""
        if count not in self._perms:
            rng = np.random.default_rng(self.seed)
            perm = rng.permutation(count)
            while count > 1 and (perm == np.arange(count)).all():  # a shuffle must move
                perm = rng.permutation(count)
            self._perms[count] = torch.from_numpy(perm.astype(np.int64))
        return self._perms[count]

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if not isinstance(img, torch.Tensor) or img.dim() < 3:
            raise ConfigError(f"BlockShuffle needs a (C, H, W) tensor, got "
                              f"{type(img).__name__} {tuple(getattr(img, 'shape', ()))}; put it "
                              "after the conversion to a tensor in the transform")
        *lead, c, h, w = img.shape
        if self.block_size == "*":
            flat = img.reshape(*lead, c * h * w)
            return flat[..., self.permutation(c * h * w)].reshape(img.shape)
        b = self.block_size
        if h % b or w % b:
            raise ConfigError(f"image size {h}x{w} is not divisible by the shuffle block size "
                              f"{b}; resize/crop to a multiple of {b} before BlockShuffle or "
                              "choose a block size that divides the image size")
        gh, gw = h // b, w // b
        x = img.reshape(*lead, c, gh, b, gw, b)
        nl = len(lead)
        # (..., gh, gw, c, b, b): one row per block
        x = x.permute(*range(nl), nl + 1, nl + 3, nl, nl + 2, nl + 4)
        x = x.reshape(*lead, gh * gw, c, b, b)[..., self.permutation(gh * gw), :, :, :]
        x = x.reshape(*lead, gh, gw, c, b, b).permute(*range(nl), nl + 2, nl, nl + 3, nl + 1,
                                                       nl + 4)
        return x.reshape(img.shape).contiguous()

    def describe(self) -> str:
        """A stable description (enters cache keys through ``describe_transform``)."""
        return f"BlockShuffle(block_size={self.block_size!r}, seed={self.seed})"

    __repr__ = describe

    def __eq__(self, other) -> bool:
        return isinstance(other, BlockShuffle) and (other.block_size, other.seed) == \
            (self.block_size, self.seed)

    def __hash__(self) -> int:
        return hash((BlockShuffle, self.block_size, self.seed))
