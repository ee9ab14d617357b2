"""CLI flags made from the method config dataclasses, so every command (``protect``,
``evaluate``, ``export``, ``bench``) accepts the same flags for the same method, with the
dataclass's help, choices and accepted range.

Every flag defaults to None ("take the preset's value"); :func:`method_overrides` returns
the fields the user gave and refuses flags that belong to another method.

Example::

    >>> parser = argparse.ArgumentParser()
    >>> add_method_flags(parser, ("pmt", "fmd"))
    >>> args = parser.parse_args(["--steps", "50", "--eps", "8"])
    >>> method_overrides(args, "fmd", ("pmt", "fmd"))
    {'steps': 50, 'eps': 8.0}
"""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from photoveil.client.protect.base import PRESET_NAMES, RECOMMENDED_PRESETS, accepted
from photoveil.client.protect.configs import CONFIGS
from photoveil.errors import InvalidInput


def _flag_fields(method: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(CONFIGS[method]) if f.metadata.get("flag")]


def add_preset_flag(parser, default: str | None = "mid", allow_none: bool = False,
                    recommended: bool = False) -> None:
    """``--preset``; with ``recommended`` it accepts and defaults to ``recommended``: each
    method's entry of :data:`RECOMMENDED_PRESETS` (:func:`resolve_preset`)."""
    choices = (*PRESET_NAMES, "none") if allow_none else PRESET_NAMES
    if recommended:
        choices, default = ("recommended", *choices), "recommended"
    rec = ", ".join(f"{m} {v}" for m, v in RECOMMENDED_PRESETS.items())
    parser.add_argument("--preset", choices=choices, default=default,
                        help="hyper-parameter preset; explicit flags override it"
                             + (f"; recommended = {rec} (the default)" if recommended else "")
                             + ("; none = the Config defaults" if allow_none else ""))


def resolve_preset(method: str, preset: str | None) -> str | None:
    """``recommended`` -> the method's recommended preset; any other name unchanged."""
    return RECOMMENDED_PRESETS.get(method, "mid") if preset == "recommended" else preset


def add_method_flags(parser: argparse.ArgumentParser, methods: Sequence[str]) -> None:
    """One argument group per method, one ``--field-name`` flag per config field (a field
    several methods share, like ``steps``, gets one flag in the first group)."""
    owners: dict[str, list[str]] = {}
    for m in methods:
        for f in _flag_fields(m):
            owners.setdefault(f.name, []).append(m)
    done: set[str] = set()
    for m in methods:
        group = parser.add_argument_group(f"{m} settings (default: the preset's)")
        for f in _flag_fields(m):
            if f.name in done:
                continue
            done.add(f.name)
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            note = ", ".join(x for x in (accepted(f), f"{CONFIGS[m].__name__} default {default!r}") if x)
            shared = f" [{' | '.join(owners[f.name])}]" if len(owners[f.name]) > 1 else ""
            kwargs: dict[str, Any] = {"dest": f.name, "default": None,
                                      "help": f"{f.metadata.get('help', '')} ({note}){shared}"}
            if f.metadata.get("choices"):
                kwargs["choices"] = f.metadata["choices"]
            elif str(f.type).startswith("tuple"):
                kwargs["nargs"] = "*"
                kwargs["metavar"] = "POINT"
            elif f.type in ("int", int):
                kwargs["type"] = int
            elif f.type in ("float", float):
                kwargs["type"] = float
            group.add_argument(f"--{f.name.replace('_', '-')}", **kwargs)


def method_overrides(args: argparse.Namespace, method: str, methods: Sequence[str]) -> dict[str, Any]:
    """The config fields of ``method`` given on the command line.

    Raises:
        InvalidInput: a flag of another of ``methods`` was given (it would be ignored).
    """
    own = {f.name for f in _flag_fields(method)}
    others = {f.name for m in methods for f in _flag_fields(m)} - own
    given = {n for n in others if getattr(args, n, None) is not None}
    if given:
        flags = ", ".join(f"--{n.replace('_', '-')}" for n in sorted(given))
        users = sorted({m for m in methods for f in _flag_fields(m) if f.name in given})
        raise InvalidInput(f"{flags} {'does' if len(given) == 1 else 'do'} not apply to --method {method} "
                           f"(only to {', '.join(users)})")
    out = {n: getattr(args, n) for n in own if getattr(args, n, None) is not None}
    if "layers" in out:
        out["layers"] = tuple(out["layers"])
    return out


def preset_arg(args: argparse.Namespace) -> str | None:
    """``--preset`` with ``none`` meaning the Config defaults."""
    return None if args.preset == "none" else args.preset
