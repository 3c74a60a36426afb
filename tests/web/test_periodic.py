"""The portal's background rounds (web.periodic): a round that raises does not end the rounds,
and none runs after stop."""

from __future__ import annotations

import threading

import pytest

from web.periodic import Periodic


def test_a_round_that_fails_is_logged_and_the_rounds_go_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    third = threading.Event()

    def work() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise RuntimeError("a bug in one round")
        if len(rounds) == 3:
            third.set()

    periodic = Periodic("test-rounds", work, 0.01, first_after_s=0)
    periodic.start()
    periodic.start()  # a second start is no second thread
    try:
        assert third.wait(10)
    finally:
        periodic.stop()
    assert "test-rounds: a round failed" in caplog.text and "a bug in one round" in caplog.text
    done = len(rounds)
    assert not threading.Event().wait(0.1)
    assert len(rounds) == done, "no round after stop"
    assert not any(thread.name == "test-rounds" for thread in threading.enumerate())


def test_stop_before_the_first_round_means_no_round() -> None:
    rounds: list[int] = []
    periodic = Periodic("test-never", lambda: rounds.append(1), 3600)
    periodic.start()
    periodic.stop()
    assert rounds == []
    periodic.start()  # and it can start again
    periodic.stop()
    assert rounds == []
