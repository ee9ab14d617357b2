"""Measure the protectors: data abuse, attribute estimation, reconstruction, image quality
and robustness (``photoveil evaluate``).

* :mod:`.metrics` — strict accuracy (Eq. 10), identification top-1, CosSim (Eq. 11),
  SSIM / PSNR, UP(sigma, kappa), robustness transforms;
* :mod:`.reconstruction` — Level-1 decoder and Level-2 inversion attacks (Table 6);
* :mod:`.runner` — the evaluation driver (records, results.md, plots);
* :mod:`.cli` — the ``evaluate`` subcommand.

Only :mod:`.cli` is imported at CLI start-up; torch is imported when a command runs.
"""
