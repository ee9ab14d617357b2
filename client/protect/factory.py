"""One place that builds a protector from a method name, authorized models, a preset and
overrides — what ``photoveil protect``, ``evaluate``, ``export`` and ``bench`` all call.

The config is built (and so validated) before any model loads: a bad value fails in
milliseconds with the field and its accepted range.

Example::

    >>> prot = build_protector("pmt", ["faceapi-resnet34"], "mid", {"steps": 50, "seed": 0})
    >>> prot = build_protector("fmd", ["faceapi-resnet34"], "mid", {"eps": 8})   # shipped gallery
    >>> prot = build_protector("generator", preset="high")                       # shipped face.pt
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from photoveil.client.protect.base import PRESET_NAMES, Protector, ProtectorConfig
from photoveil.client.protect.configs import CONFIGS
from photoveil.errors import InvalidInput

METHODS = tuple(CONFIGS)


def build_config(method: str, preset: str | None = "mid", overrides: Mapping[str, Any] | None = None
                 ) -> ProtectorConfig:
    """The validated config of ``method``: the preset's values (None: the Config defaults)
    with ``overrides`` on top.

    Raises:
        InvalidInput: unknown method or preset, a field the method does not have, or a
            value outside its accepted range.
    """
    from photoveil.client.protect import get_protector

    if method not in CONFIGS:
        raise InvalidInput(f"unknown protection method {method!r}; accepted: {', '.join(METHODS)}")
    ablation = tuple(get_protector(method).ABLATION_PRESETS) if preset is not None and preset not in PRESET_NAMES else ()
    if preset is not None and preset not in PRESET_NAMES and preset not in ablation:
        raise InvalidInput(f"unknown preset {preset!r}; accepted: {', '.join(PRESET_NAMES + ablation)}")
    overrides = dict(overrides or {})
    config_cls = CONFIGS[method]
    fields = set(config_cls.__dataclass_fields__)
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)} {'does' if len(unknown) == 1 else 'do'} not apply to method "
                           f"{method!r}; its settings: {', '.join(sorted(fields))}")
    try:
        config = config_cls(**overrides) if preset is None else get_protector(method).preset_config(preset, **overrides)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"bad {method} settings: {exc}") from None
    _check_device(getattr(config, "device", "cpu"))
    return config


def _check_device(device: str) -> None:
    """InvalidInput unless ``device`` names a torch device this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidInput(f"device {device!r} is not a torch device; accepted: cpu, cuda, cuda:N, mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r}: no CUDA device on this machine; use cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInput(f"device {device!r}: no MPS device on this machine; use cpu")


def build_protector(method: str, models: Sequence[Any] = (), preset: str | None = "mid",
                    overrides: Mapping[str, Any] | None = None, gallery=None, *,
                    size: tuple[int, int] | None = None, cache_dir=None) -> Protector:
    """The protector of ``method`` for authorized ``models``.

    Args:
        method: ``pmt`` | ``fmd`` | ``generator``.
        models: authorized face recognizers (registry names or loaded ``FaceNet`` s); PMT
            takes one or more (MR-PMT), FMD exactly one, the generator none.
        preset: ``low`` | ``mid`` | ``high``, or None for the Config defaults.
        overrides: Config fields that replace the preset's values (``seed``, ``steps`` ...).
            A generator ``checkpoint`` that is an exported artifact folder runs the .pte.
        gallery: FMD's enrolled identities ``(images [M,3,H,W], labels [M])``; default the
            shipped sample faces, one identity each.
        size: the image size ``(H, W)`` the protector gets; a PMT model of another input
            size sees the images resized (MR-PMT over models of different sizes).
        cache_dir: face-model cache.
    """
    config = build_config(method, preset, overrides)
    models = list(models)
    if method == "generator":
        if models:
            raise InvalidInput("the generator protects without an authorized model; give no --model")
        return _generator(config, preset, overrides or {})
    if not models:
        raise InvalidInput(f"{method} needs an authorized model (e.g. faceapi-resnet34)")
    try:
        if method == "pmt":
            from photoveil.client.protect.pmt import PMTProtector

            nets = [_load(m, cache_dir) for m in models]
            return PMTProtector([_pmt_model(n, config, size) for n in nets], config, cache_dir=cache_dir)
        from photoveil.client.protect.fmd import FMDProtector

        if len(models) != 1:
            raise InvalidInput("fmd protects for one authorized model; give a single model")
        net = _load(models[0], cache_dir)
        if size is not None and tuple(net.spec.input_size) != tuple(size):
            raise InvalidInput(f"FMD images must be at the authorized model's input size "
                               f"{tuple(net.spec.input_size)}, got {tuple(size)}")
        classifier, _, _ = fmd_classifier(net, config.split, gallery, cache_dir=cache_dir)
        return FMDProtector(classifier, config)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"bad {method} settings: {exc}") from None


def _generator(config, preset: str | None, overrides: Mapping[str, Any]) -> Protector:
    from photoveil.client.protect.generator import GeneratorProtector

    checkpoint = Path(config.checkpoint).expanduser()
    if checkpoint.is_dir():  # an exported program: run what the phone runs
        from photoveil.client.runtime import PteGenerator

        values = {**(GeneratorProtector.PRESETS[preset] if preset else {}), **overrides}
        values.pop("checkpoint", None)
        return PteGenerator(checkpoint, **values)
    return GeneratorProtector(config)


def _load(model, cache_dir):
    if isinstance(model, str):
        from photoveil.facemodels import registry

        return registry.load(model, cache_dir=cache_dir)
    return model


def _pmt_model(net, config, size):
    """``net`` itself, or (``size`` differs from its input size) its taps behind a resize."""
    hw = tuple(net.spec.input_size) if getattr(net, "spec", None) is not None else None
    if size is None or hw is None or hw == tuple(size):
        return net
    from torch import nn

    from photoveil.imageops import ResizeTo
    from photoveil.client.protect.pmt import check_upload
    from photoveil.client.protect.shallow import ShallowModel, from_facenet

    split = net.spec.split_point(config.split)
    if config.upload:
        check_upload(net.spec, split, config.upload)
    taps = from_facenet(net, [*config.layers, split])
    segments = list(taps.segments)
    segments[0] = nn.Sequential(ResizeTo(hw), segments[0])
    return ShallowModel(segments, taps.name, taps.points)


def default_gallery(size: int, cache_dir=None):
    """The shipped sample faces (``photoveil/assets/faces``, centre-aligned at ``size``) as
    ``(images [M,3,size,size], labels [M])``: FMD's enrolled identities by default."""
    import torch

    from photoveil.data.faces import FaceDataset
    from photoveil.paths import ASSETS

    ds = FaceDataset(ASSETS / "faces", size, alignment="center", cache_dir=cache_dir)
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    labels = torch.tensor([ds[i][1] for i in range(len(ds))])
    return images, labels


def fmd_classifier(model="faceapi-resnet34", split: str | None = None, gallery=None, cache_dir=None):
    """FMD's authorized classifier: a recognizer (name or ``FaceNet``) with a head over
    enrolled identities ``gallery = (images, labels)`` (default :func:`default_gallery`),
    its feature map at ``split`` (None: :data:`~photoveil.client.protect.fmd.FMD_SPLITS`,
    else the model's default split). Returns ``(classifier, model id, split)``."""
    from photoveil.client.protect.fmd import GalleryClassifier, feature_layer
    from photoveil.imageops import resize_to

    net = _load(model, cache_dir)
    spec = net.spec
    point = feature_layer(spec, split)
    images, labels = gallery if gallery is not None else default_gallery(spec.input_size[0], cache_dir)
    images = resize_to(images, tuple(spec.input_size))
    return GalleryClassifier.from_facenet(net, point, images, labels), spec.name, point
