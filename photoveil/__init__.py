"""photoveil: protect photos on the phone before upload.

A provider publishes a protection artifact (a perturbation generator, or the shallow
front of its recognition model); the phone runs it through ExecuTorch and uploads only
the protected image or its shallow features. See README.md and docs/architecture.md.
"""

__version__ = "0.1.0"
