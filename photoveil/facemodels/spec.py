"""``FaceModelSpec``: what a published face network is, where it comes from, how to feed it.

Kept apart from the registry (which builds the networks) so that the ``FaceNet`` wrapper
and other modules can refer to a spec without importing the loaders.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

ROLES = ("recognizer", "attribute", "detector", "landmarks")


@dataclass(frozen=True)
class FaceModelSpec:
    """What a network is, where it comes from and how to feed it.

    ``input_size`` is (H, W); ``input_range`` is what the *network itself* expects (the
    FaceNet wrapper maps ``[0,1]`` RGB to it, as described by ``normalisation``).
    ``split_points`` maps names to layer indices of ``FaceNet.split``; a model with split
    points names the one PMT/FMD cut at by default in ``default_split``.
    """

    name: str
    role: str
    package: str                 # npm "name@version"
    files: tuple[str, ...]       # paths inside the package (model.json/manifest first)
    input_size: tuple[int, int]
    channel_order: str           # order of the network's input channels
    input_range: str
    normalisation: str
    output: str
    output_size: int | dict[str, int]
    split_points: dict[str, int] = field(default_factory=dict)
    default_split: str | None = None  # end of the shallow model PMT/FMD use by default
    deep_split: str | None = None  # split "deep": the deeper E_c of PMT's high preset (None: default)
    licence: str = "MIT"
    architecture: str = ""
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: str = ""

    def resolve_split(self, split: str | None) -> str | None:
        """A split name as configs give it: None -> ``default_split`` (a spec that names none,
        such as a custom stand-in model, cuts at its first named point); ``"deep"`` ->
        ``deep_split`` (or the default where the model names none); else unchanged."""
        default = self.default_split or next(iter(self.split_points), None)
        if split is None:
            return default
        if split == "deep":
            return self.deep_split or default
        return split

    def split_point(self, split: str | None) -> str:
        """:meth:`resolve_split`, checked: InvalidInput unless it names a split point."""
        from photoveil.errors import InvalidInput

        point = self.resolve_split(split)
        if point is None or point not in self.split_points:
            raise InvalidInput(f"{self.name} has no split point {point!r}; named split points: "
                               f"{', '.join(self.split_points) or 'none'}")
        return point

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["files"] = list(self.files)
        d["labels"] = {k: list(v) for k, v in self.labels.items()}
        return d
