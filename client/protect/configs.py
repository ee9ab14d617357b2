"""The config dataclasses of the protection methods: the single source of their
defaults, accepted ranges and help, for the protectors, the presets and every command's
CLI flags (:mod:`.flags`).

Kept free of torch, so building the CLI stays fast. Pixel quantities are in 0-255 units,
as in the papers.
"""
from __future__ import annotations

from dataclasses import dataclass

from photoveil.client.protect.base import ProtectorConfig, param

INITS = ("gaussian", "sort", "blur")
AUGMENTS = ("noise", "affine", "mix", "none")
KERNELS = ("gaussian", "linear", "none")
OPTIMIZERS = ("sign", "momentum")
SCHEDULES = ("constant", "linear", "cosine")
MATCHES = ("augmented", "clean")


@dataclass
class PMTConfig(ProtectorConfig):
    """PMT hyper-parameters (pixel quantities in 0-255 units).

    Attributes:
        steps: signed-gradient iterations K, 1..10000.
        step_size: alpha per step, (0, 64].
        init: starting image: ``gaussian`` (mid-grey + N(0, init_sigma^2)), ``sort`` (the
            original's pixels randomly permuted), ``blur`` (Gaussian blur of the original,
            std ``init_sigma`` / 4 pixels).
        init_sigma: noise std of the ``gaussian`` init, (0, 255].
        augment: ``noise`` | ``affine`` | ``mix`` | ``none`` (T in Alg. 2).
        aug_sigma: std of the ``noise`` augmentation, [0, 128].
        aug_affine: max rotation (degrees) of the ``affine`` augmentation; shifts up to
            ``aug_affine / 150`` of the image, scale up to ``aug_affine / 150``.
        split: named split point of the authorized model(s): the end of ``E_c``
            (None: each model's default PMT split; ``"deep"``: each model's deeper split,
            ``block64_3`` of faceapi-resnet34, whose more invariant features let ``x~``
            carry less of the face).
        layers: extra, shallower split points aggregated with the split point
            (multi-layer aggregation; empty = off).
        upload: split point whose features :meth:`features` returns for the upload-features
            case (None: the split point itself). A point shallower than ``split`` uploads the
            features of the obfuscated *image* there, which are far from the original's
            (only the deeper ``split`` features are matched), so an attacker who inverts them
            gets the noise-like ``x~`` back instead of the face; the server runs the rest of
            the network from ``upload``.
        pool: AvgPool kernel of the aggregation, 1..8 (1 = no pooling); only with ``layers``
            (the split point alone is matched unpooled).
        kernel: gradient smoothing ``gaussian`` | ``linear`` | ``none``.
        kernel_length: half-length k of the kernel (size 2k+1), 1..15.
        optimizer: the update: ``sign`` (``x -= alpha sign(W g)``, Alg. 1) or ``momentum``
            (MI-FGSM: ``m = mu m + W g / mean|W g|``, ``x -= alpha sign(m)``), which keeps
            moving along a consistent direction and reaches the same feature loss in far
            fewer steps.
        momentum: ``mu`` of the momentum optimizer, [0, 1).
        schedule: step size per step: ``constant`` (alpha every step), ``linear`` or
            ``cosine`` decay from alpha to ``final_step * alpha`` at the last step (large
            steps first, fine ones at the end).
        final_step: the decays' last step size as a fraction of ``step_size``, [0, 1].
        match: what ``E_c(T(x~))`` is matched to: ``augmented`` (``E_c(T(x))``, the same
            augmentation applied to the original each step: one more shallow forward per
            step) or ``clean`` (``E_c(x)``, computed once per image and passed into every step).
        stop_loss: early stop once every image's feature loss ``J`` (relative squared error of
            the matched features) is <= this, checked after every program call; 0 = off, [0, 10].
        steps_per_call: steps one step-program call runs (the host calls it
            ``ceil(steps / steps_per_call)`` times), 1..10.
        highpass: std in pixels of a Gaussian low-pass removed from every update
            (``x -= alpha (s - G * s)``, ``s`` the update's sign), so the steps leave the
            image's coarse structure, what an out-of-focus eye sees, at the start image's;
            0 = off (the paper's update), [0, 16].
        device: torch device.
    """

    steps: int = param(100, lo=1, hi=10000, help="signed-gradient iterations K")
    step_size: float = param(0.5, lo=0.0, hi=64.0, low_open=True, help="alpha per step (0-255 units)")
    init: str = param("gaussian", choices=INITS, help="starting image x~_0")
    init_sigma: float = param(60.0, lo=0.0, hi=255.0, low_open=True,
                              help="noise std of the gaussian init (0-255 units)")
    augment: str = param("noise", choices=AUGMENTS, help="augmentation T drawn afresh each step")
    aug_sigma: float = param(8.0, lo=0.0, hi=128.0, help="std of the noise augmentation (0-255 units)")
    aug_affine: float = param(3.0, lo=0.0, hi=30.0, help="max rotation (degrees) of the affine augmentation")
    split: str | None = param(None, help="split point ending the shallow model (see `photoveil models list`; "
                                         "'deep': the model's deeper split)")
    layers: tuple[str, ...] = param(default_factory=tuple, help="extra, shallower split points aggregated "
                                                                "with the split point")
    upload: str | None = param(None, help="split point whose features are uploaded (default: the split); a "
                                          "shallower one sends the obfuscated image's features, which do not "
                                          "invert to the face")
    pool: int = param(2, lo=1, hi=8, help="AvgPool kernel of multi-layer aggregation (1 = none)")
    kernel: str = param("gaussian", choices=KERNELS, help="translation-invariant gradient smoothing")
    kernel_length: int = param(1, lo=1, hi=15, help="half-length k of the smoothing kernel (size 2k+1)")
    optimizer: str = param("sign", choices=OPTIMIZERS, help="update rule: signed gradient, or MI-FGSM momentum")
    momentum: float = param(0.9, lo=0.0, hi=0.999, help="mu of the momentum optimizer")
    schedule: str = param("constant", choices=SCHEDULES, help="step-size schedule over the steps")
    final_step: float = param(0.1, lo=0.0, hi=1.0, help="last step size of a decaying schedule, as a fraction of "
                                                        "step_size")
    match: str = param("augmented", choices=MATCHES, help="match E_c(T(x)) each step (augmented) or E_c(x) "
                                                          "computed once (clean)")
    stop_loss: float = param(0.0, lo=0.0, hi=10.0, help="early stop when every image's feature loss J is <= "
                                                        "this (0 = off)")
    steps_per_call: int = param(1, lo=1, hi=10, help="steps per step-program call")
    highpass: float = param(0.0, lo=0.0, hi=16.0, help="std (pixels) of the low-pass removed from every update, "
                                                       "so x~ keeps the start image's coarse structure (0 = off)")
    device: str = "cpu"

    def __post_init__(self) -> None:
        self.layers = tuple(self.layers)
        super().__post_init__()

    def step_sizes(self) -> list[float]:
        """alpha of every step (0-255 units), per :attr:`schedule`."""
        import math

        n, a = self.steps, self.step_size
        if self.schedule == "constant" or n == 1:
            return [a] * n
        lo = a * self.final_step
        frac = [i / (n - 1) for i in range(n)]
        if self.schedule == "linear":
            return [a + (lo - a) * f for f in frac]
        return [lo + (a - lo) * 0.5 * (1 + math.cos(math.pi * f)) for f in frac]


FEATURE_LOSSES = ("mse", "nmse")
ALPHA_SCHEDULES = ("constant", "cosine")
FMD_UPDATES = ("sign", "l2")


@dataclass
class FMDConfig(ProtectorConfig):
    """FMD hyper-parameters (pixel quantities in 0-255 units).

    The paper's Alg. 1 / Eq. 5 is ``feature_loss="mse", lam=1, lam_emb=0, mu=0,
    alpha_schedule="constant", diversity=0`` with ``alpha=4, steps=100`` (the ``paper``
    ablation row, :data:`photoveil.client.protect.fmd.PAPER`); the defaults are the
    transfer-and-speed variant chosen by ``evaluate`` on a tuning draw (see docs).

    Attributes:
        eps: L-inf budget, (0, 255].
        alpha: step size (the first step's under ``alpha_schedule="cosine"``), (0, 255].
        steps: iterations N, 1..10000.
        lam: weight lambda of the authorized cross-entropy over the enrolled identities
            (the paper's L_p), [0, 1000].
        lam_emb: weight of the authorized *embedding* term ``cos(e(x*), e(x))``: keeps the
            authorized model's own descriptor (so verification, not only the argmax of the
            gallery head, holds), [0, 1000].
        feature_loss: ``mse`` (paper: mean squared difference of ``f_l``) | ``nmse``
            (``||f_l(x*) - f_l(x)||^2 / ||f_l(x)||^2`` per image: scale-free, so ``lam`` /
            ``lam_emb`` mean the same at every layer).
        mu: momentum of the signed update (MI-FGSM: ``g <- mu g + grad / mean|grad|``,
            step ``alpha sign(g)``), [0, 1); 0 = the paper's plain sign step.
        alpha_schedule: ``constant`` | ``cosine`` (alpha decays from ``alpha`` to
            ``alpha / 8`` over the steps).
        diversity: input diversity: each step the image (and the clean reference) is
            warped by a fresh random affine map of up to ``diversity`` relative shift and
            scale and ``60 * diversity`` degrees of rotation, [0, 0.3]; 0 = off.
        kernel: gradient smoothing before the sign (``gaussian`` | ``linear`` | ``none``; the
            TI kernel of :func:`photoveil.client.protect.ops.ti_kernel`): a spatially
            coherent perturbation, which transfers better and keeps more of the image's
            structure (SSIM) than per-pixel signs.
        kernel_length: half-length k of the kernel (size 2k+1), 1..15.
        update: ``sign`` (paper: ``alpha sign(g)``, every pixel moves by alpha) | ``l2``
            (``alpha g / rms(g)``: pixels move by their gradient's size, so the
            perturbation spends the eps-ball where it matters and keeps more SSIM).
        split: split point of a face recognizer whose feature map ``f_l`` is distorted
            (used where the classifier is built from a registry model; None: its default).
        device: torch device.
    """

    eps: float = param(16.0, lo=0.0, hi=255.0, low_open=True, help="L-inf budget (0-255 units)")
    alpha: float = param(6.0, lo=0.0, hi=255.0, low_open=True, help="step size (0-255 units)")
    steps: int = param(12, lo=1, hi=10000, help="iterations N")
    lam: float = param(0.0, lo=0.0, hi=1000.0, help="weight lambda of the authorized cross-entropy")
    lam_emb: float = param(1.0, lo=0.0, hi=1000.0, help="weight of the authorized embedding cosine term")
    feature_loss: str = param("nmse", choices=FEATURE_LOSSES, help="feature distortion loss: mse (paper) | "
                                                                  "nmse (normalised by the clean feature norm)")
    mu: float = param(0.9, lo=0.0, hi=0.999, help="momentum of the signed update (0 = plain sign step)")
    alpha_schedule: str = param("cosine", choices=ALPHA_SCHEDULES, help="step-size schedule over the steps")
    diversity: float = param(0.0, lo=0.0, hi=0.3, help="input diversity: max relative shift/scale of a random "
                                                       "affine warp per step (0 = off)")
    kernel: str = param("gaussian", choices=KERNELS, help="translation-invariant gradient smoothing")
    kernel_length: int = param(2, lo=1, hi=15, help="half-length k of the smoothing kernel (size 2k+1)")
    update: str = param("sign", choices=FMD_UPDATES, help="step direction: sign (paper) | l2 (alpha * g / rms(g))")
    split: str | None = param(None, help="split point of the authorized face model whose feature map is "
                                         "distorted (default: the model's default split)")
    device: str = "cpu"


@dataclass
class GeneratorConfig(ProtectorConfig):
    """Attributes (plus seed/batch_size/progress of ``ProtectorConfig``):

    checkpoint: a path to a generator checkpoint, or the name of a shipped one
        (``shipped_generators()``).
    strength: scale on the generator's perturbation, in (0, 1]; 1.0 = as trained.
    device: torch device to run on ("cpu", "cuda", ...).
    """

    checkpoint: str = param("face", help="generator checkpoint path or shipped name")
    strength: float = param(1.0, lo=0.0, hi=1.0, low_open=True, help="scale on the perturbation; 1.0 = as trained")
    device: str = "cpu"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.checkpoint:
            raise ValueError("checkpoint must be a path or a shipped generator name")


CONFIGS: dict[str, type[ProtectorConfig]] = {"pmt": PMTConfig, "fmd": FMDConfig, "generator": GeneratorConfig}
