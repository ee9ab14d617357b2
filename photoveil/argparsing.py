"""The argument parser every ``photoveil`` command line is built on."""
from __future__ import annotations

import argparse


class OneLineParser(argparse.ArgumentParser):
    """A bad command line exits 2 with one line, ``prog: error: ...`` (argparse's own error
    prints the whole usage block first); ``-h`` still shows the usage. Subparsers inherit
    the class, so every subcommand reads the same."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


__all__ = ["OneLineParser"]
