"""The `clinai` command line: operators' commands (`up`, `serve`, `projections`,
`tail`) in `app`, the event log printer in `tail`."""

from services.cli.app import main

__all__ = ["main"]
