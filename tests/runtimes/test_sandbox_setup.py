from __future__ import annotations

import pytest

from services.sandbox_setup import check_bwrap, main
from tests.runtimes.conftest import bwrap_unusable


def test_missing_bwrap_is_reported() -> None:
    assert check_bwrap("/nonexistent/bwrap") == "bubblewrap is not installed"


@pytest.mark.skipif(bwrap_unusable() is not None, reason=bwrap_unusable() or "")
def test_working_bwrap(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_bwrap() is None
    assert main() == 0
    assert "bubblewrap works" in capsys.readouterr().out
