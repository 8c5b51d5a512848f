"""A reference vision transformer for MNIST, shipped trained, to show what featvis shows of
the models people bring today: patch tokens, a class token, attention and MLP neurons.

A pre-norm ViT (Dosovitskiy et al. 2021) in the layout of timm's, under fixed module names
(``D`` = ``width``, 17 tokens: the class token, then the 16 patches row by row)::

    patch_embed          Conv2d(1, D, 7, stride=7)       D x 4 x 4 (the patch grid)
    blocks.i.norm1       LayerNorm(D)                    17 x D
    blocks.i.attn.qkv    Linear(D, 3D)                   17 x 3D
    blocks.i.attn.proj   Linear(D, D)                    17 x D
    blocks.i.attn        multi-head self-attention       17 x D
    blocks.i.norm2       LayerNorm(D)                    17 x D
    blocks.i.mlp.fc1     Linear(D, 2D)                   17 x 2D  (the MLP neurons)
    blocks.i.mlp.act     GELU                            17 x 2D
    blocks.i.mlp.fc2     Linear(2D, D)                   17 x D
    blocks.i             the residual block              17 x D
    norm                 LayerNorm(D)                    17 x D
    class_token          the class token's features      D
    head                 Linear(D, classes)              logits

Every token layer has its units (features) on the last axis and the 17 tokens as positions,
as featvis's unit-axis rules read it; a token's patch is the patch embedding's cell.
:func:`reference_vit` gives the model with the weights shipped in the package
(``scripts/train_reference.py vit`` reproduces them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..params import check_int
from .classifier import Classifier, shipped

__all__ = ["ReferenceViT", "reference_vit", "WEIGHTS"]

WEIGHTS = "reference_vit.safetensors"   # in featvis/_weights/
MAX_WIDTH = 1024                        # features a config may ask for
MAX_DEPTH = 64                          # blocks a config may ask for
PATCH = 7                               # 28 x 28 pixels: a 4 x 4 grid of 7 x 7 patches


class Attention(nn.Module):
    """Multi-head self-attention on ``(N, T, D)`` tokens: one ``qkv`` Linear, softmax of the
    scaled dot products per head, one ``proj`` Linear."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = F.scaled_dot_product_attention(q, k, v)            # (N, heads, T, d / heads)
        return self.proj(mixed.transpose(1, 2).reshape(n, t, d))


class MLP(nn.Module):
    """``fc1``, GELU, ``fc2`` on every token."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, hidden), nn.GELU(), \
            nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, width: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.norm2, self.mlp = nn.LayerNorm(width), MLP(width, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ClassToken(nn.Module):
    """The class token of ``(N, T, D)`` tokens: ``(N, D)``, the features the head reads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0]


class ReferenceViT(Classifier):
    """The reference ViT (see the module docstring for its layers); ``config`` is
    ``{"width": D, "depth": L, "heads": h, "classes": k}`` (default 64, 3, 4, 10), the MLP
    ``2D`` wide. Training, accuracy and checkpoints:
    :class:`~featvis.models.classifier.Classifier`."""

    kind = "vit"
    input_shape = (1, 28, 28)

    def __init__(self, width: int = 64, depth: int = 3, heads: int = 4, classes: int = 10, *,
                 seed: int | None = 0) -> None:
        super().__init__()
        width, depth = check_int("width", width), check_int("depth", depth)
        heads, classes = check_int("heads", heads), check_int("classes", classes)
        if width > MAX_WIDTH or depth > MAX_DEPTH or classes > MAX_WIDTH or width % heads:
            raise ValueError(f"width must be at most {MAX_WIDTH} and a multiple of heads, "
                             f"depth at most {MAX_DEPTH}, classes at most {MAX_WIDTH}; got "
                             f"width={width}, heads={heads}, depth={depth}, classes={classes}")
        self.config = {"width": width, "depth": depth, "heads": heads, "classes": classes}
        grid = (self.input_shape[1] // PATCH) * (self.input_shape[2] // PATCH)
        with torch.random.fork_rng(devices=[], enabled=seed is not None):
            self.patch_embed = nn.Conv2d(self.input_shape[0], width, PATCH, stride=PATCH)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid, width))
            self.blocks = nn.Sequential(*(Block(width, heads, 2 * width)
                                          for _ in range(depth)))
            self.norm = nn.LayerNorm(width)
            self.class_token = ClassToken()
            self.head = nn.Linear(width, classes)
        if seed is not None:
            self.reset_parameters(seed)

    @classmethod
    def config_keys(cls) -> tuple[str, ...]:
        return ("width", "depth", "heads", "classes")

    def _reset_others(self, generator: torch.Generator | None) -> None:
        """The class token and position embeddings: ``N(0, 0.02^2)`` (timm's scale)."""
        with torch.no_grad():
            for p in (self.cls_token, self.pos_embed):
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)

    def extra_repr(self) -> str:
        c = self.config
        return f"width={c['width']}, depth={c['depth']}, heads={c['heads']}, patch={PATCH}"

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """The tokens ``(N, 1 + patches, D)`` entering the first block."""
        patches = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(len(x), -1, -1)
        return torch.cat([cls, patches], 1) + self.pos_embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``(N, classes)`` of images ``(N, 1, 28, 28)``, from the class token."""
        return self.head(self.class_token(self.norm(self.blocks(self.tokens(x)))))


def reference_vit(pretrained: bool = True, *, seed: int = 0,
                  device: str | torch.device = "cpu") -> ReferenceViT:
    """The reference ViT: with the weights shipped in the package, in eval mode
    (``pretrained=True``), or freshly initialised from ``seed``, in train mode."""
    return shipped(ReferenceViT, WEIGHTS, "scripts/train_reference.py vit", pretrained, seed,
                   device)

