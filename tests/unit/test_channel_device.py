"""Channel (pulses and receivers) and BlockDevice (a FIFO device with fixed per-page latency)."""
from __future__ import annotations

from emu.kernel.channel import Channel
import errno

from emu.kernel.device import BlockDevice, fail_nth

# ---- Channel ----

def drain(ch: Channel) -> list:
    out = []
    while (p := ch.receive()) is not None:
        out.append(p.payload)
    return out


def test_empty_channel_has_nothing_to_receive():
    ch = Channel()
    assert ch.receive() is None and ch.peek_priority() is None


def test_pulses_are_received_highest_priority_first():
    ch = Channel()
    ch.send(10, "mid")
    ch.send(3, "low")
    ch.send(40, "high")
    assert drain(ch) == ["high", "mid", "low"]


def test_pulses_of_equal_priority_are_received_in_send_order():
    ch = Channel()
    for i in range(5):
        ch.send(10, i)
    ch.send(20, "urgent")
    ch.send(10, 5)
    assert drain(ch) == ["urgent", 0, 1, 2, 3, 4, 5]


def test_pulse_carries_its_priority():
    ch = Channel()
    ch.send(17, "x")
    pulse = ch.receive()
    assert (pulse.priority, pulse.payload) == (17, "x")


def test_peek_priority_is_the_next_pulse_priority():
    ch = Channel()
    ch.send(5, "a")
    ch.send(9, "b")
    assert ch.peek_priority() == 9
    ch.receive()
    assert ch.peek_priority() == 5


def test_send_without_a_waiting_receiver_returns_none():
    ch = Channel()
    assert ch.send(10, "a") is None


def test_send_returns_the_waiting_receivers_in_fifo_order():
    ch = Channel()
    ch.receivers.extend(["server1", "server2"])
    assert ch.send(10, "a") == "server1"
    assert ch.send(10, "b") == "server2"
    assert ch.send(10, "c") is None
    assert drain(ch) == ["a", "b", "c"]


def test_pulses_sent_are_counted():
    ch = Channel()
    for _ in range(3):
        ch.send(1, None)
    ch.receive()
    assert ch.pulses_sent == 3


# ---- BlockDevice ----

def submit(dev: BlockDevice, now: int, pages: int, write: bool) -> int:
    done = dev.submit(now, pages, write, "page_in")
    assert done.ok and done.request.pages == pages and done.request.write == write
    return done.done_at


def test_idle_device_completes_after_the_latency():
    dev = BlockDevice(read_page_cycles=100, write_page_cycles=250)
    assert submit(dev, 1000, pages=1, write=False) == 1100


def test_latency_scales_with_pages_and_direction():
    dev = BlockDevice(read_page_cycles=100, write_page_cycles=250)
    assert submit(dev, 0, pages=3, write=False) == 300
    assert submit(dev, 1000, pages=2, write=True) == 1500


def test_request_submitted_while_busy_queues_behind_the_first():
    dev = BlockDevice(read_page_cycles=100, write_page_cycles=250)
    first = submit(dev, 0, pages=1, write=False)
    second = submit(dev, 30, pages=1, write=False)
    assert (first, second) == (100, 200)


def test_request_after_the_device_went_idle_starts_at_once():
    dev = BlockDevice(read_page_cycles=100, write_page_cycles=250)
    submit(dev, 0, pages=1, write=False)
    assert submit(dev, 500, pages=1, write=False) == 600


def test_device_counters():
    dev = BlockDevice(read_page_cycles=100, write_page_cycles=250)
    submit(dev, 0, pages=2, write=False)
    submit(dev, 10, pages=1, write=True)
    submit(dev, 1000, pages=1, write=False)
    assert (dev.pages_read, dev.pages_written) == (3, 1)
    assert dev.busy_cycles == 2 * 100 + 250 + 100
    assert dev.busy_until == 1100


def test_requests_are_numbered_and_a_failure_policy_picks_the_failing_ones():
    dev = BlockDevice(100, 250, fails=fail_nth(2, write=True))
    done = [dev.submit(0, 1, write, "msync") for write in (False, True, True, True)]
    assert [d.request.request_id for d in done] == [1, 2, 3, 4]
    assert [d.errno for d in done] == [0, 0, errno.EIO, 0]          # the 2nd write fails
    assert not done[2].ok and done[2].done_at == 100 + 2 * 250      # it still takes its time
