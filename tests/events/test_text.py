"""Text Postgres can store (`events.text`) and the codec refusing events that hold other
text, so that no such event reaches the log."""

from __future__ import annotations

import pytest

from events import (
    EventStore,
    ModelCreated,
    UnstorableTextError,
    encode_event,
    json_problem,
    new_id,
    scrub_text,
    text_problem,
)
from tests._events import job_requested, new_event


def _model(name: str, description: str = "") -> ModelCreated:
    return new_event(
        ModelCreated,
        new_id("mdl"),
        correlation_id="corr",
        owner="usr_test",
        name=name,
        description=description,
    )


def test_text_problem_names_nul_and_lone_surrogates_and_passes_the_rest() -> None:
    assert text_problem("a\x00b") == "contains a NUL character (\\u0000)"
    assert text_problem("é\ud800") == "contains a lone surrogate (\\ud800)"
    for fine in ("", "plain", "é 😀 \u2028", "\\u0000 written out"):
        assert text_problem(fine) is None


def test_json_problem_gives_the_path_of_the_bad_text() -> None:
    where = json_problem({"x": ["ok", {"y": "b\x00"}]})
    assert where == "$.x[1].y contains a NUL character (\\u0000)"
    assert json_problem({"k\udc80": 1}) == "a key in $ contains a lone surrogate (\\udc80)"
    assert json_problem({"x": "\\u0000", "n": [1, 2.5, None, True]}) is None


def test_json_problem_names_integers_outside_the_64_bit_range() -> None:
    """orjson (the read models' and the API's JSON) refuses them: such a result was
    stored in the log, quarantined by the projector, and its job stayed `running`."""
    too_big = "is an integer outside the 64-bit range (send it as a string)"
    assert json_problem({"x": [1, 2**64]}) == f"$.x[1] {too_big}"
    assert json_problem({"x": -(2**63) - 1}) == f"$.x {too_big}"
    assert json_problem({"x": [2**64 - 1, -(2**63), 10**18, "12345678901234567890123"]}) is None


def test_scrub_text_replaces_only_what_cannot_be_stored() -> None:
    assert scrub_text("a\x00b\udc80c") == "a\ufffdb\ufffdc"
    clean = "nothing to do é"
    assert scrub_text(clean) is clean


@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_the_codec_refuses_an_event_with_unstorable_text(bad: str) -> None:
    with pytest.raises(UnstorableTextError) as caught:
        encode_event(_model("fine", description=bad))
    assert caught.value.where.startswith("$.description contains a ")
    assert encode_event(_model("fine", description="a\\u0000b"))  # written-out escape is text


def test_the_codec_refuses_an_event_with_an_integer_orjson_cannot_write() -> None:
    requested = job_requested(new_id("job"), "usr_test", correlation_id="c", params={"n": 2**70})
    with pytest.raises(UnstorableTextError) as caught:
        encode_event(requested)
    assert caught.value.where.startswith("$.params.n is an integer outside the 64-bit range")
    fine = job_requested(new_id("job"), "usr_test", correlation_id="c", params={"n": 2**63})
    assert encode_event(fine)


async def test_an_append_with_a_nul_never_reaches_the_log(store: EventStore) -> None:
    before = await store.stream_last_seq()
    with pytest.raises(UnstorableTextError):
        await store.append(_model("a\x00b"), expected=0)
    requested = job_requested(
        new_id("job"), "usr_test", correlation_id="corr", params={"p": ["\x00"]}
    )
    with pytest.raises(UnstorableTextError) as caught:
        await store.append_batch([(_model("ok"), 0), (requested, 0)])
    assert caught.value.where == "$.params.p[0] contains a NUL character (\\u0000)"
    assert await store.stream_last_seq() == before
