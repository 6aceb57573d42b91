"""The `clinai` command line: the parser and operators' commands (`up`, `serve`,
`projections`, `tail`) in `app`, the event log printer in `tail`; the user commands
(`login`, `push`, `run`, `predict`, the listings) in `user` and the modules it names."""

from services.cli.app import main

__all__ = ["main"]
