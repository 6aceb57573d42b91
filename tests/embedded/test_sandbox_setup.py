from __future__ import annotations

import pytest

from services.embedded.sandbox_setup import check_bwrap, main

SANDBOX_REASON = check_bwrap()


def test_missing_bwrap_is_reported() -> None:
    assert check_bwrap("/nonexistent/bwrap") == "bubblewrap is not installed"


@pytest.mark.skipif(SANDBOX_REASON is not None, reason=SANDBOX_REASON or "")
def test_working_bwrap(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_bwrap() is None
    assert main() == 0
    assert "bubblewrap works" in capsys.readouterr().out
