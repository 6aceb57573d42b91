"""How the user commands write: `rich` on a terminal (progress bars, a live status line,
tables), plain lines when stdout is not one (piped, redirected, in a script), and JSON
alone with `--json`."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import orjson
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

__all__ = ["Ui"]

Advance = Callable[[int], None]


class Ui:
    def __init__(
        self, *, json: bool = False, out: TextIO | None = None, err: TextIO | None = None
    ) -> None:
        self.json = json
        # file=None: rich writes to sys.stdout as it is then, so that a line printed
        # while a bar or spinner runs (Live redirects sys.stdout) goes above it.
        self.out = Console(file=out, highlight=False, soft_wrap=True)
        self.err = Console(file=err, stderr=True, highlight=False, soft_wrap=True)
        # Bars and spinners only for a person watching a terminal.
        self.live = self.out.is_terminal and not json

    def say(self, text: str, *, style: str | None = None) -> None:
        """A line for the user (nothing with --json, where stdout is the document)."""
        if not self.json:
            self.out.print(text, markup=False, style=style)

    def note(self, text: str) -> None:
        """A side remark, on stderr (never mixed into what a script reads)."""
        self.err.print(text, markup=False, style="dim")

    def write(self, text: str) -> None:
        """Text as it comes (a log), without a newline added."""
        if not self.json:
            self.out.file.write(text)
            self.out.file.flush()

    def document(self, value: Any) -> None:
        """The --json output: one JSON document on stdout."""
        self.out.file.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")
        self.out.file.flush()

    def table(self, columns: Sequence[str], rows: Sequence[Sequence[Any]], keep: int = 1) -> None:
        """Rows under `columns`; the first `keep` columns (ids, names: what the user
        copies into the next command) are never shortened on a terminal."""
        cells = [["" if c is None else str(c) for c in row] for row in rows]
        if not self.live:  # tab-separated, for cut and awk
            self.out.file.write("\t".join(columns).upper() + "\n")
            for row in cells:
                self.out.file.write("\t".join(row) + "\n")
            return
        table = Table(header_style="bold")
        for index, name in enumerate(columns):
            kept = index < keep
            widest = max((len(row[index]) for row in cells), default=0) if kept else None
            table.add_column(name, no_wrap=kept, min_width=widest)
        for row in cells:
            table.add_row(*row, style=None)
        self.out.print(table)

    @contextlib.contextmanager
    def progress(self, description: str, total: int) -> Iterator[Advance]:
        """A transfer's bar (bytes, speed, time left) on stderr; yields `advance(n)`,
        which may be called from another thread."""
        if not self.live:
            yield lambda _n: None
            return
        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=self.err,
            transient=False,
        )
        with bar:
            task = bar.add_task(description, total=total)
            yield lambda n: bar.advance(task, n)

    @contextlib.contextmanager
    def status(self, text: str) -> Iterator[Callable[[str], None]]:
        """A live status line (a spinner) on a terminal; otherwise each change is a
        plain line on stderr. Yields `update(text)`."""
        if not self.live:
            self.note(text)
            yield self.note
            return
        with self.err.status(text) as shown:
            yield lambda new: shown.update(new)
