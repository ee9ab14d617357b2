"""U-Net perturbation generator of Ye et al., "Protective Perturbation Generator" (MMSys'22).

The paper's generator is the Lightning-Bolts U-Net (Ronneberger et al. 2015) with 5 levels
(4 down-samplings), ``features_start=32``, transposed-conv up-sampling and biased 3x3
convolutions followed by BatchNorm + ReLU. With 3 input and 3 output channels that is
exactly 7,766,051 parameters (31.06 MB in fp32), the paper's "7.766 M, 31 MB".

The network outputs a perturbation ``delta = U(x)`` and the protected image is
``x' = clamp(x + delta, 0, 1)`` (Algorithm 1). The paper puts no tanh/epsilon bound on
``delta``: the perturbation is meant to be *large* (low SSIM to the original), only the
pixel range is enforced.

Inputs of any height/width are accepted: they are padded (edge replication, bottom/right)
to a multiple of ``2**depth`` and the output is cropped back, so the network is fully
convolutional. ``torch.export`` traces it for a fixed input shape (what an ExecuTorch
.pte is made for; one program per shape in the artifact manifest).

Example::

    >>> net = UNetGenerator(in_channels=3, width=0.25)
    >>> x = torch.rand(2, 3, 37, 50)
    >>> net(x).shape                      # protected image, same shape, in [0, 1]
    torch.Size([2, 3, 37, 50])
"""
from __future__ import annotations

import torch
from torch import nn

PAPER_BASE_FEATURES = 32  # features_start of the paper's U-Net at width 1.0
PAPER_DEPTH = 4  # number of 2x down-samplings (Bolts num_layers=5)


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) x 2; keeps the spatial size."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_ch, out_ch, 3, padding=1),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Down(nn.Module):
    """2x2 max-pool then DoubleConv: halves H, W."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Up(nn.Module):
    """2x transposed-conv up-sampling, concat with the skip connection, DoubleConv."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_ch, in_ch // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_ch // 2 + out_ch, out_ch)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNetGenerator(nn.Module):
    """Protective-perturbation U-Net: ``forward(x) = clamp(x + U(x), 0, 1)``.

    Args:
        in_channels: image channels (3 for RGB, 1 for Fashion-MNIST).
        out_channels: perturbation channels; defaults to ``in_channels`` (must equal it,
            or be 1 to broadcast one perturbation map over all channels).
        width: channel multiplier; 1.0 is the paper's 32-64-128-256-512 (7.766 M params).
        depth: number of 2x down-samplings (paper: 4); inputs are padded to ``2**depth``.

    Shapes: ``[N, in_channels, H, W]`` in [0, 1] -> same shape in [0, 1], any H, W >= 1.

    Example::

        >>> g = UNetGenerator(in_channels=1, width=0.25)
        >>> g.perturbation(torch.rand(4, 1, 32, 32)).shape
        torch.Size([4, 1, 32, 32])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int | None = None,
        width: float = 1.0,
        depth: int = PAPER_DEPTH,
    ) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f"in_channels must be an int >= 1, got {in_channels!r}")
        if out_channels not in (1, in_channels):
            raise ValueError(
                f"out_channels must be 1 or in_channels ({in_channels}), got {out_channels!r}"
            )
        if not 0.0 < float(width) <= 8.0:
            raise ValueError(f"width must be in (0, 8], got {width!r}")
        if not isinstance(depth, int) or not 1 <= depth <= 6:
            raise ValueError(f"depth must be an int in [1, 6], got {depth!r}")
        base = max(1, round(PAPER_BASE_FEATURES * float(width)))
        chans = [base * 2**k for k in range(depth + 1)]

        self.in_channels, self.out_channels = in_channels, out_channels
        self.width, self.depth = float(width), depth
        self.inc = DoubleConv(in_channels, chans[0])
        self.downs = nn.ModuleList(Down(chans[k], chans[k + 1]) for k in range(depth))
        self.ups = nn.ModuleList(Up(chans[k], chans[k - 1]) for k in range(depth, 0, -1))
        self.outc = nn.Conv2d(chans[0], out_channels, kernel_size=1)

    def config(self) -> dict:
        """Constructor arguments; ``UNetGenerator(**g.config())`` rebuilds the architecture."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "width": self.width,
            "depth": self.depth,
        }

    def perturbation(self, x: torch.Tensor) -> torch.Tensor:
        """The raw perturbation ``delta = U(x)``, same H, W as ``x`` (unbounded)."""
        h, w = x.shape[-2], x.shape[-1]
        m = 2**self.depth
        # Pad bottom/right to a multiple of 2**depth so every skip connection lines up.
        pad_h, pad_w = (m - h % m) % m, (m - w % m) % m
        skips = [self.inc(_replicate_pad(x, pad_h, pad_w))]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        y = self.outc(y)
        return y[..., :h, :w] if pad_h or pad_w else y  # a no-op crop would export as a copy

    def protect(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        """``clamp(x + strength * U(x), 0, 1)``: the protected image (strength 1.0 = as trained)."""
        return torch.clamp(x + strength * self.perturbation(x), 0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.protect(x)


def _replicate_pad(x: torch.Tensor, bottom: int, right: int) -> torch.Tensor:
    """Repeat the last row / column ``bottom`` / ``right`` times (``F.pad(mode="replicate")``,
    written as a broadcast + concat: that form lowers into XNNPACK, the pad op does not; and
    unlike reflect it works for inputs smaller than the pad)."""
    if bottom:
        x = torch.cat([x, x[:, :, -1:, :] * torch.ones(1, 1, bottom, 1, dtype=x.dtype, device=x.device)], dim=2)
    if right:
        x = torch.cat([x, x[:, :, :, -1:] * torch.ones(1, 1, 1, right, dtype=x.dtype, device=x.device)], dim=3)
    return x


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


CHECKPOINT_FORMAT = "photoveil-generator/1"


def save_generator(path, net: UNetGenerator, **meta) -> None:
    """Write a compact generator checkpoint: architecture config, fp32 weights and ``meta``
    (training config, measured figures; plain Python values only).

    Loadable with ``torch.load(path, weights_only=True)``; see :func:`load_generator`.
    """
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().clone() if v.is_floating_point() else v.detach().cpu().clone()
             for k, v in net.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "unet": net.config(), "state_dict": state, "meta": meta}, path)


def load_generator(path, map_location="cpu") -> tuple[UNetGenerator, dict]:
    """Load a :func:`save_generator` checkpoint (weights_only) -> (net in eval mode, meta).

    Raises:
        NotFound: no file at ``path``.
        InvalidInput: the file is not a photoveil generator checkpoint.
    """
    from pathlib import Path

    from photoveil.errors import InvalidInput, NotFound

    path = Path(path)
    if not path.is_file():
        raise NotFound(f"generator checkpoint {str(path)!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors: not a torch file, or unsafe content
        raise InvalidInput(f"{str(path)!r} is not a loadable generator checkpoint: {exc}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise InvalidInput(
            f"{str(path)!r} is not a photoveil generator checkpoint (expected format {CHECKPOINT_FORMAT!r}; "
            "a Lightning .ckpt is converted by `photoveil generator train`, which writes generator.pt)"
        )
    net = UNetGenerator(**ckpt["unet"])
    net.load_state_dict(ckpt["state_dict"])
    return net.eval(), dict(ckpt.get("meta") or {})
