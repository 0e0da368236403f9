"""Tests of the encoder's memo: results remembered by key, computed once, also when started ahead in a thread;
and work started in the background."""
import threading

import pytest

from vaezip.memo import background, forget, remembered


def test_results_are_remembered_and_computed_once_also_ahead():
    calls, release = [], threading.Event()

    @remembered(lambda x: x, size=2)
    def slow_square(x):
        release.wait(10)
        calls.append(x)
        return x * x

    slow_square.ahead(3)                    # runs in the background, waiting for the event
    assert calls == []
    release.set()
    assert slow_square(3) == 9 and slow_square(3) == 9 and calls == [3]
    assert slow_square(4) == 16 and slow_square(5) == 25 and calls == [3, 4, 5]
    assert slow_square(3) == 9 and calls == [3, 4, 5, 3]    # only the last 2 are remembered
    forget()
    assert slow_square(3) == 9 and calls == [3, 4, 5, 3, 3]


def test_a_call_naming_a_default_finds_the_result_of_one_leaving_it_out():
    calls = []

    @remembered(lambda x, power: (x, power))
    def raised(x, power=2):
        calls.append((x, power))
        return x ** power

    assert raised(3) == 9 and raised(3, 2) == 9 and calls == [(3, 2)]
    assert raised(3, 3) == 27 and calls == [(3, 2), (3, 3)]


def test_failures_are_raised_to_the_caller_and_not_remembered():
    calls = []

    @remembered(lambda x: x)
    def fragile(x):
        calls.append(x)
        if len(calls) == 1:
            raise ValueError("first try fails")
        return x

    with pytest.raises(ValueError, match="first try"):
        fragile(1)
    assert fragile(1) == 1 and fragile(1) == 1 and calls == [1, 1]


def test_background_work_runs_in_another_thread_and_raises_in_the_caller():
    release, threads = threading.Event(), []

    def work():
        release.wait(10)
        threads.append(threading.current_thread())
        return 42

    result = background(work)
    assert not result.done()                # started, held by the event: the caller goes on meanwhile
    release.set()
    assert result.result(10) == 42 and threads[0] is not threading.current_thread() and threads[0].daemon
    with pytest.raises(ZeroDivisionError):
        background(lambda: 1 // 0).result(10)
