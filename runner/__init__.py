"""Runs inside a sandbox next to the user's ``predict.py``: standard library only.

``python -m runner [--check] [--sandboxed] [package_dir]`` loads the package and serves
jobs over the framed protocol described in :mod:`runner.protocol`. A model imports
`File` and `Input` from here to declare typed inputs (:mod:`runner.inputs`).
"""

from runner.inputs import File, Input

__all__ = ["File", "Input"]
