"""On-device protection methods behind one API (see ``base.Protector``).

``get_protector("generator" | "pmt" | "fmd")`` returns the class; method modules are
imported on first use so importing this package stays light.
"""
from photoveil.client.protect.base import (
    PRESET_NAMES,
    Protector,
    ProtectorConfig,
    available_methods,
    get_protector,
    register_protector,
)

__all__ = [
    "PRESET_NAMES",
    "Protector",
    "ProtectorConfig",
    "available_methods",
    "get_protector",
    "register_protector",
]
