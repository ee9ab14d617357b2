"""tools/target_drift.py: the drift figures and the provider's adapter check (docs/methods.md)."""
import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F

_spec = importlib.util.spec_from_file_location("target_drift", Path(__file__).parents[1] / "tools" / "target_drift.py")
target_drift = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(target_drift)


def _faces(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(d, generator=g) * 3  # descriptors share most of their direction
    return F.normalize(mean + torch.randn(n, d, generator=g), dim=1), torch.arange(n)


def test_an_adapter_undoes_a_shared_rotation_but_not_per_face_noise():
    e, y = _faces(400)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=torch.Generator().manual_seed(1)))
    rotated = e @ q
    fit, held = slice(0, 300), slice(300, 400)
    r = target_drift.drift(e[held], rotated[held], y[held],
                           adapter=target_drift.fit_adapter(rotated[fit], e[fit]))
    assert r["centred_cos"] < 0.5 and r["adapted_centred_cos"] > 0.99

    noisy = F.normalize(e + 0.3 * torch.randn(e.shape, generator=torch.Generator().manual_seed(2)), dim=1)
    r = target_drift.drift(e[held], noisy[held], y[held], adapter=target_drift.fit_adapter(noisy[fit], e[fit]))
    assert r["adapted_centred_cos"] < r["centred_cos"] + 0.1  # nothing systematic to undo
    assert r["plain_cos"] > r["centred_cos"]  # the shared direction hides the turn from the plain cosine
