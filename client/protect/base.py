"""The protector base class every protection method (generator, PMT, FMD) derives from.

A protector turns a batch of images ``[N, C, H, W]`` (float, finite, in [0, 1]; C is 3 for
RGB photos, ``in_channels`` says otherwise) into protected images of the same shape, also
in [0, 1]. The base class owns what all methods share:

* input validation (``protect`` is a template method: validate, chunk into
  ``config.batch_size``, call the method's ``_protect`` per chunk, concatenate);
* a ``Config`` dataclass per method with a ``seed`` that becomes a ``torch.Generator``
  handed to ``_protect``. Fields declared with :func:`param` carry their range, choices
  and help: ``__post_init__`` validates them, and :mod:`.flags` makes the CLI flags of
  every command from them (the dataclass is the single source of defaults and ranges);
* presets ``low | mid | high`` (``from_preset``), where explicit overrides always win;
* a registry: ``@register_protector`` and ``get_protector(method)``.

Writing a method::

    @dataclass
    class NoiseConfig(ProtectorConfig):
        sigma: float = param(0.1, lo=0.0, hi=1.0, low_open=True, help="noise std")

    @register_protector
    class NoiseProtector(Protector):
        method = "noise"
        Config = NoiseConfig
        PRESETS = {"low": {"sigma": 0.05}, "mid": {"sigma": 0.1}, "high": {"sigma": 0.3}}

        def _protect(self, images, rng):
            return images + self.config.sigma * torch.randn(
                images.shape, generator=rng, device=images.device)

    p = NoiseProtector.from_preset("high", seed=0)
    out = p.protect(torch.rand(8, 3, 32, 32))   # clamped to [0, 1] by the base class
"""
from __future__ import annotations

import abc
import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from photoveil.errors import InvalidInput, NotFound

if TYPE_CHECKING:  # torch is imported lazily so `photoveil --help` stays fast
    import torch

PRESET_NAMES = ("low", "mid", "high")
# The preset `photoveil protect` and `photoveil demo` use unless told otherwise (README,
# "Unauthorized recognizers re-align the upload"): pmt high (mid leaves faceres 0.16 and
# mobileface 0.21 top-1 on unseen identities; high 0.07 / 0.09 at 0.96x authorized), fmd
# mid (eps 16), generator high (strength 1).
RECOMMENDED_PRESETS = {"pmt": "high", "fmd": "mid", "generator": "high"}
# Methods shipped with photoveil; their modules are imported on first lookup.
BUILTIN_METHODS = ("generator", "pmt", "fmd")


def param(default: Any = dataclasses.MISSING, *, lo: float | None = None, hi: float | None = None,
          low_open: bool = False, choices: tuple[str, ...] | None = None, help: str = "",
          flag: bool = True, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config field with its accepted values: ``[lo, hi]`` (``(lo, hi]`` if ``low_open``)
    or one of ``choices``; ``help`` is its CLI help; ``flag=False`` keeps it off the CLI."""
    meta = {"lo": lo, "hi": hi, "low_open": low_open, "choices": choices, "help": help, "flag": flag}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def accepted(f: dataclasses.Field) -> str:
    """What field ``f`` accepts, as its error messages and CLI help say it."""
    m = f.metadata
    if m.get("choices"):
        return "one of " + ", ".join(m["choices"])
    if m.get("lo") is not None or m.get("hi") is not None:
        kind = "an int " if f.type in ("int", int) else ""
        return f"{kind}in {'(' if m['low_open'] else '['}{m['lo']}, {m['hi']}]"
    return ""


def check_field(f: dataclasses.Field, value: Any) -> None:
    """ValueError naming the field and what it accepts unless ``value`` is accepted (None
    passes for optional fields)."""
    m = f.metadata
    if value is None and "None" in str(f.type):
        return
    if m.get("choices"):
        if value not in m["choices"]:
            raise ValueError(f"{f.name} must be {accepted(f)}; got {value!r}")
        return
    lo, hi = m.get("lo"), m.get("hi")
    if lo is None and hi is None:
        return
    is_int = f.type in ("int", int)
    ok = isinstance(value, int if is_int else (int, float)) and not isinstance(value, bool)
    ok = ok and (lo is None or (lo < value if m["low_open"] else lo <= value)) and (hi is None or value <= hi)
    if not ok:
        raise ValueError(f"{f.name} must be {accepted(f)}, got {value!r}")


@dataclass
class ProtectorConfig:
    """Settings every method has. Subclass it per method and add fields.

    Attributes:
        seed: seeds the ``torch.Generator`` passed to ``_protect`` (None: nondeterministic).
        batch_size: images processed per ``_protect`` call (bounds peak memory).
        progress: show a tqdm progress bar over the batches.
    """

    seed: int | None = None
    batch_size: int = 64
    progress: bool = False

    def __post_init__(self) -> None:
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise ValueError(f"seed must be None or an int >= 0, got {self.seed!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        for f in dataclasses.fields(self):
            if f.metadata:
                check_field(f, getattr(self, f.name))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Protector(abc.ABC):
    """Base class: ``protect(images[N, C, H, W] in [0, 1]) -> same shape in [0, 1]``.

    Subclasses set ``method``, ``Config`` (a ``ProtectorConfig`` subclass) and ``PRESETS``
    (``{"low": {...}, "mid": {...}, "high": {...}}``, values are Config fields) and
    implement ``_protect(images, rng)``. ``in_channels`` (default 3) may be set per
    instance, e.g. a Fashion-MNIST generator takes 1 channel.
    """

    method: ClassVar[str] = ""
    Config: ClassVar[type[ProtectorConfig]] = ProtectorConfig
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # further named settings (e.g. a method's earlier presets kept as ablation rows), usable
    # wherever a preset name is (``preset_config``, ``evaluate --sweep preset=...``)
    ABLATION_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    in_channels: int = 3

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Catch preset typos when the class is defined, not when a user picks the preset.
        if cls.PRESETS:
            if set(cls.PRESETS) != set(PRESET_NAMES):
                raise TypeError(f"{cls.__name__}.PRESETS must have keys {PRESET_NAMES}")
            fields = {f.name for f in dataclasses.fields(cls.Config)}
            for name, values in {**cls.PRESETS, **cls.ABLATION_PRESETS}.items():
                unknown = set(values) - fields
                if unknown:
                    raise TypeError(f"{cls.__name__}.PRESETS[{name!r}] has unknown fields {sorted(unknown)}")

    def __init__(self, config: ProtectorConfig | None = None) -> None:
        config = self.Config() if config is None else config
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}")
        self.config = config

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def preset_config(cls, name: str, **overrides: Any) -> ProtectorConfig:
        """``Config`` of preset ``name`` with ``overrides`` applied on top (overrides win)."""
        presets = {**cls.PRESETS, **cls.ABLATION_PRESETS}
        if name not in presets:
            known = ", ".join(presets) or "none defined"
            raise ValueError(f"unknown preset {name!r} for method {cls.method!r}; presets: {known}")
        return cls.Config(**{**presets[name], **overrides})

    @classmethod
    def from_preset(cls, name: str, *args: Any, **overrides: Any) -> Protector:
        """Build from preset ``name``; keyword overrides that are Config fields replace the
        preset's values, the other keywords (and ``args``) go to the constructor."""
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        cfg = {k: v for k, v in overrides.items() if k in fields}
        rest = {k: v for k, v in overrides.items() if k not in fields}
        return cls(*args, config=cls.preset_config(name, **cfg), **rest)

    # -- the template method ---------------------------------------------------------------
    def protect(self, images: torch.Tensor) -> torch.Tensor:
        """Protected images, same shape/dtype/device as ``images``, values in [0, 1].

        Raises:
            InvalidInput: ``images`` is not a finite float tensor [N, C, H, W] in [0, 1]
                with ``C == self.in_channels``.
        """
        import torch

        self.validate(images)
        rng = self.make_rng(images.device)
        outs = [self._protect(chunk, rng) for chunk in self.batches(images)]
        out = torch.cat(outs) if outs else images.clone()
        if out.shape != images.shape:
            raise RuntimeError(f"{type(self).__name__}._protect changed shape {tuple(images.shape)} -> {tuple(out.shape)}")
        return out.clamp(0.0, 1.0).to(images.dtype)

    @abc.abstractmethod
    def _protect(self, images: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        """Protect one validated chunk (at most ``config.batch_size`` images)."""

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Shallow features to upload instead of an image (methods that split a model)."""
        raise NotImplementedError(f"method {self.method!r} uploads images, not features")

    # -- helpers -----------------------------------------------------------------------------
    def validate(self, images: Any) -> None:
        """Raise InvalidInput unless ``images`` is a finite float [N, C, H, W] in [0, 1]."""
        import torch

        accepted = f"a float tensor [N, {self.in_channels}, H, W] with finite values in [0, 1]"
        if not isinstance(images, torch.Tensor):
            raise InvalidInput(f"images must be {accepted}, got {type(images).__name__}")
        if images.dim() != 4:
            raise InvalidInput(f"images must be {accepted}, got shape {tuple(images.shape)}")
        if images.shape[1] != self.in_channels:
            raise InvalidInput(f"images must be {accepted}, got {images.shape[1]} channels")
        if images.shape[2] < 1 or images.shape[3] < 1:
            raise InvalidInput(f"images must be {accepted}, got empty H x W {tuple(images.shape[2:])}")
        if not images.is_floating_point():
            raise InvalidInput(f"images must be {accepted}, got dtype {images.dtype} (divide uint8 by 255)")
        if images.numel() == 0:
            return
        if not torch.isfinite(images).all():
            raise InvalidInput(f"images must be {accepted}, got NaN or infinite values")
        lo, hi = images.min().item(), images.max().item()
        if lo < 0.0 or hi > 1.0:
            raise InvalidInput(f"images must be {accepted}, got values in [{lo:.4g}, {hi:.4g}]")

    def make_rng(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """A fresh generator seeded with ``config.seed`` (same seed -> same output)."""
        import torch

        if self.config.seed is None:
            return None
        return torch.Generator(device=device).manual_seed(self.config.seed)

    def batches(self, images: torch.Tensor):
        """Yield ``images`` in chunks of ``config.batch_size`` (tqdm bar if ``progress``)."""
        chunks = images.split(self.config.batch_size) if len(images) else ()
        if self.config.progress:
            from tqdm.auto import tqdm

            chunks = tqdm(chunks, desc=f"protect[{self.method}]", unit="batch")
        yield from chunks

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


# -- registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, type[Protector]] = {}


def register_protector(cls: type[Protector]) -> type[Protector]:
    """Class decorator: make ``cls`` available as ``get_protector(cls.method)``."""
    if not cls.method:
        raise TypeError(f"{cls.__name__} must set a non-empty `method`")
    other = _REGISTRY.get(cls.method)
    if other is not None and other.__qualname__ != cls.__qualname__:
        raise TypeError(f"method {cls.method!r} is already registered by {other.__name__}")
    _REGISTRY[cls.method] = cls
    return cls


def available_methods() -> list[str]:
    """Registered methods plus the built-in ones whose module is present."""
    import importlib.util

    present = {m for m in BUILTIN_METHODS if importlib.util.find_spec(f"{__package__}.{m}")}
    return sorted(set(_REGISTRY) | present)


def get_protector(method: str) -> type[Protector]:
    """The protector class for ``method`` (imports built-in method modules on demand).

    Raises:
        NotFound: ``method`` is not a registered protection method.
    """
    if method not in _REGISTRY and method in BUILTIN_METHODS:
        name = f"{__package__}.{method}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency, not a missing method module
                raise
    try:
        return _REGISTRY[method]
    except KeyError:
        raise NotFound(
            f"unknown protection method {method!r}; available: {', '.join(available_methods())}"
        ) from None
