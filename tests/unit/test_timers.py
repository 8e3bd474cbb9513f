"""TimerQueue: callbacks due at a cycle count, fired by (time, insertion) order."""
from __future__ import annotations

from emu.kernel.timers import TimerQueue


def recorder():
    fired: list[str] = []
    return fired, (lambda name: (lambda: fired.append(name)))


def test_empty_queue_has_nothing_due():
    q = TimerQueue()
    assert q.next_due() is None
    assert q.fire_due(10**9) == 0


def test_fires_in_time_order():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(30, cb("c"))
    q.at(10, cb("a"))
    q.at(20, cb("b"))
    assert q.fire_due(100) == 3
    assert fired == ["a", "b", "c"]


def test_ties_fire_in_insertion_order():
    q = TimerQueue()
    fired, cb = recorder()
    for name in "xyzw":
        q.at(5, cb(name))
    q.fire_due(5)
    assert fired == list("xyzw")


def test_fire_due_runs_only_due_timers():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(10, cb("early"))
    q.at(11, cb("late"))
    assert q.fire_due(10) == 1
    assert fired == ["early"]
    assert q.next_due() == 11


def test_fire_due_before_anything_is_due_runs_nothing():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(10, cb("a"))
    assert q.fire_due(9) == 0 and fired == []


def test_each_timer_fires_once():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(1, cb("a"))
    q.fire_due(5)
    assert q.fire_due(5) == 0 and fired == ["a"]


def test_cancelled_timer_never_fires():
    q = TimerQueue()
    fired, cb = recorder()
    t = q.at(10, cb("a"))
    q.at(10, cb("b"))
    t.cancel()
    assert q.fire_due(10) == 1
    assert fired == ["b"]


def test_next_due_skips_cancelled_timers():
    q = TimerQueue()
    _, cb = recorder()
    first = q.at(10, cb("a"))
    q.at(20, cb("b"))
    assert q.next_due() == 10
    first.cancel()
    assert q.next_due() == 20


def test_next_due_is_none_when_every_timer_is_cancelled():
    q = TimerQueue()
    q.at(10, lambda: None).cancel()
    assert q.next_due() is None


def test_cancelling_a_fired_timer_is_harmless():
    q = TimerQueue()
    t = q.at(1, lambda: None)
    q.fire_due(1)
    t.cancel()
    assert q.next_due() is None


def test_a_callback_may_set_a_timer_that_is_already_due():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(5, lambda: (fired.append("first"), q.at(5, cb("chained"))))
    q.at(6, cb("later"))
    assert q.fire_due(6) == 3
    assert fired == ["first", "chained", "later"]


def test_a_callback_setting_a_future_timer_leaves_it_pending():
    q = TimerQueue()
    fired, cb = recorder()
    q.at(5, lambda: q.at(50, cb("future")))
    q.fire_due(10)
    assert fired == [] and q.next_due() == 50
