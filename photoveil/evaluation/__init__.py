"""Measure the protectors: data abuse, attribute estimation, reconstruction, image quality
and robustness (``photoveil evaluate``).

One run protects a deterministic (seeded) subset of *test* identities with one method and
measures it with every selected attack:

* ``abuse`` — Eq. 10 strict accuracy (kappa = 0.2, see :mod:`.metrics` for the reading)
  and top-1 identification on the authorized and every unauthorized recognizer, protected
  and clean, as an authorized x evaluated matrix (the paper's Table 7);
* ``attributes`` — Eq. 11 CosSim of the gear (age / gender / race) and emotion outputs
  between original and protected (plus the expected-age absolute difference), with the
  paper's ``x + delta`` Gaussian-noise baseline (std 0.3) for comparison (Table 8);
* ``reconstruction`` — Level 1 (U-Net decoder trained on *train* identities) and Level 2
  (white-box TV inversion) on unprotected, random-noise and protected uploaded features
  (PMT's ``upload`` point, else the split point) of the (first) authorized model
  (Table 6), next to the SSIM floor of content-free images (grey, the mean training face);
* ``image`` (always) — SSIM, PSNR between original and protected, UP(sigma, kappa);
* ``robustness`` — the abuse metrics after each server-side transform (JPEG 95/75/50,
  0.5x down-scale and back, Gaussian blur sigma 1) applied to the protected upload;
* ``--sweep key=v1,v2,...`` — abuse + image metrics along one hyper-parameter (the
  privacy / utility curve).

Geometry. Every protected image is the original aligned for the (first) authorized model
at the authorized input size. A recognizer under evaluation compares the protected image,
resized to its own input size, with the clean images aligned natively for it (its own
template and size) — what an unauthorized service would hold. MR-PMT with authorized models
of different input sizes works on the largest size and each shallow model sees the image
resized (bilinear, differentiable) to its own size. Attribute models and image metrics
compare original and protected in the same (authorized) geometry, so only the protection
differs.

Records (``results.json``, ``--json``): ``method``, ``authorized`` (``+``-joined),
``evaluated_model``, ``metric``, ``value``, ``attack``, ``transform``, ``params`` (the
protector config, swept values, features kind), plus ``role`` (authorized | unauthorized |
attribute | image | aggregate | calibration) and ``n`` (images or pairs behind the value).
``clean_*`` metrics are the same measurement on unprotected images, ``relative_*`` =
protected / clean.

Modules:

* :mod:`.config` — :class:`~.config.EvalConfig` and ``--sweep`` parsing;
* :mod:`.data` — the seeded identity / image / pair selection;
* :mod:`.cache` — aligned faces (memory + disk) and clean embeddings;
* :mod:`.protectors` — the protector a run measures, built from the config;
* :mod:`.context` — the :class:`~.context.RunContext` every attack is given;
* :mod:`.attacks` — the attacks, one module each, registered by name;
* :mod:`.metrics` — strict accuracy (Eq. 10), identification top-1, CosSim (Eq. 11),
  SSIM / PSNR, UP(sigma, kappa), robustness transforms;
* :mod:`.reconstruction` — the Level-1 decoder and Level-2 inversion models (Table 6);
* :mod:`.report` — results.json, config.json, results.md and the plots;
* :mod:`.runner` — the driver (:class:`~.runner.Evaluation`);
* :mod:`.cli` — the ``evaluate`` subcommand.

Only :mod:`.cli` (and the attack names of :mod:`.attacks`) is imported at CLI start-up;
torch is imported when a command runs.
"""
