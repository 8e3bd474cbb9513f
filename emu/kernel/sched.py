"""The scheduler: QNX rules on one CPU, and the one place where thread states change.

- priorities 1-255, a FIFO ready queue per priority; the highest non-empty queue runs;
- a thread that becomes ready joins the END of its priority's queue;
- a thread preempted by a higher-priority one goes back to the HEAD of its queue;
- SCHED_RR threads run for a time slice, then go to the end of their queue if
  another thread of the same priority is ready; SCHED_FIFO threads run until
  they block, yield or are preempted.

Invariants (asserted): a blocked thread is woken exactly once (its wait token
is consumed); only the running thread blocks; a queued thread is READY.
"""
from __future__ import annotations

from collections import deque
from typing import Callable

from emu.kernel.process import BLOCKED_STATES, SchedPolicy, Thread, ThreadState
from emu.trace.events import (EventBus, Preempt, PriorityChange, SchedParams, StateChange,
                              ThreadCreate)

MIN_PRIORITY, MAX_PRIORITY = 1, 255


class Scheduler:
    """Ready queues, the running thread and every state transition."""

    def __init__(self, bus: EventBus, now: Callable[[], int], time_slice: int) -> None:
        """A scheduler timing transitions with `now()` and slicing RR threads by `time_slice`."""
        self.bus = bus
        self.now = now
        self.time_slice = time_slice
        self.current: Thread | None = None
        self._queues: dict[int, deque[Thread]] = {}
        self._priorities: list[int] = []      # priorities that have a queue, highest first
        self.preemptions = 0

    # ---- the one place where states change ----

    def _transition(self, thread: Thread, new: ThreadState) -> None:
        old = thread.state
        assert old is not ThreadState.DEAD, f"thread {thread.tid} is dead"
        now = self.now()
        if old is ThreadState.RUNNING:
            thread.cpu_cycles += now - thread.running_since
        elif new is ThreadState.RUNNING:
            thread.running_since = now
        thread.state = new
        if self.bus.wants(StateChange):
            self.bus.publish(StateChange(now, thread.process.pid, thread.tid, old, new))

    def cpu_time(self, thread: Thread) -> int:
        """Cycles `thread` has spent RUNNING so far."""
        running = self.now() - thread.running_since if thread.state is ThreadState.RUNNING else 0
        return thread.cpu_cycles + running

    # ---- becoming ready ----

    def admit(self, thread: Thread) -> None:
        """A new thread starts READY at the end of its queue, with a fresh slice."""
        thread.slice_left = self.time_slice
        thread.state = ThreadState.READY
        self._created(thread)
        self._queue(thread.priority).append(thread)
        cur = self.current
        if cur is not None and thread.priority > cur.priority:
            self._preempt(cur, "priority")

    def admit_blocked(self, thread: Thread, state: ThreadState) -> object:
        """A new thread starts blocked in `state` (a server waiting to receive); returns its token."""
        assert state in BLOCKED_STATES
        token = object()
        thread.wait_token = token
        thread.state = state
        self._created(thread)
        return token

    def _created(self, thread: Thread) -> None:
        if self.bus.wants(ThreadCreate):
            self.bus.publish(ThreadCreate(self.now(), thread.process.pid, thread.tid,
                                          thread.state, thread.priority, thread.policy.name,
                                          thread.name))

    def wake(self, thread: Thread, token: object, result: int | None = None) -> None:
        """End `thread`'s wait identified by `token` (exactly once); it joins the end of its queue."""
        assert thread.state in BLOCKED_STATES, f"waking thread {thread.tid} in {thread.state}"
        assert thread.wait_token is token, f"thread {thread.tid} woken twice or by a stale waker"
        thread.wait_token = None
        if result is not None:
            thread.pending_result = result
        thread.slice_left = self.time_slice
        self._enqueue(thread, head=False)

    def is_waiting_on(self, thread: Thread, token: object) -> bool:
        """Whether `thread` is still blocked on the wait identified by `token`."""
        return thread.wait_token is token and thread.state in BLOCKED_STATES

    def _enqueue(self, thread: Thread, head: bool) -> None:
        self._transition(thread, ThreadState.READY)
        queue = self._queue(thread.priority)
        if head:
            queue.appendleft(thread)
        else:
            queue.append(thread)
        cur = self.current
        if cur is not None and thread.priority > cur.priority:
            self._preempt(cur, "priority")

    def _preempt(self, thread: Thread, reason: str) -> None:
        """Put the running thread back on its queue (head for priority, end for its slice)."""
        assert thread is self.current
        self.current = None
        self.preemptions += 1
        if self.bus.wants(Preempt):
            self.bus.publish(Preempt(self.now(), thread.process.pid, thread.tid, reason))
        if reason == "slice":
            thread.slice_left = self.time_slice
        self._enqueue(thread, head=reason == "priority")

    # ---- leaving the CPU ----

    def block(self, thread: Thread, state: ThreadState) -> object:
        """Block the running thread in `state`; returns the token its single waker must present."""
        assert thread is self.current, f"only the running thread blocks (tid {thread.tid})"
        assert state in BLOCKED_STATES
        self.current = None
        token = object()
        thread.wait_token = token
        self._transition(thread, state)
        return token

    def yield_cpu(self, thread: Thread) -> None:
        """sched_yield: the running thread goes to the end of its queue."""
        assert thread is self.current
        self.current = None
        self._enqueue(thread, head=False)

    def kill(self, thread: Thread) -> None:
        """Make any thread DEAD (off the queues, never to run again)."""
        if thread.state is ThreadState.DEAD:
            return
        if thread.state is ThreadState.READY:
            self._queues[thread.priority].remove(thread)
        if thread is self.current:
            self.current = None
        thread.wait_token = None
        self._transition(thread, ThreadState.DEAD)

    def slice_used(self, thread: Thread, cycles: int) -> None:
        """Charge `cycles` of running to the thread's slice; at expiry an RR thread still running
        gives way to the next ready thread of its priority (end of the queue, fresh slice)."""
        thread.slice_left -= cycles
        if thread.slice_left > 0 or thread is not self.current:
            return
        if thread.policy is not SchedPolicy.FIFO and self._queues.get(thread.priority):
            self._preempt(thread, "slice")
        else:
            thread.slice_left = self.time_slice

    # ---- choosing ----

    def dispatch(self) -> Thread | None:
        """The thread to run now: the running one, else the head of the highest ready queue."""
        if self.current is not None:
            return self.current
        for prio in self._priorities:
            queue = self._queues[prio]
            if queue:
                thread = queue.popleft()
                self.current = thread
                self._transition(thread, ThreadState.RUNNING)
                return thread
        return None

    def _queue(self, priority: int) -> deque[Thread]:
        queue = self._queues.get(priority)
        if queue is None:
            queue = self._queues[priority] = deque()
            self._priorities = sorted(self._queues, reverse=True)
        return queue

    def has_ready(self, min_priority: int) -> bool:
        """Whether a READY thread of priority `min_priority` or higher is queued."""
        for prio in self._priorities:
            if prio < min_priority:
                return False
            if self._queues[prio]:
                return True
        return False

    def set_params(self, thread: Thread, policy: SchedPolicy, priority: int) -> None:
        """Set a thread's own policy and (base) priority; it runs at that priority now."""
        thread.policy = policy
        thread.base_priority = priority
        if self.bus.wants(SchedParams):
            self.bus.publish(SchedParams(self.now(), thread.process.pid, thread.tid,
                                         policy.name, priority))
        self.set_priority(thread, priority, "set")

    def set_priority(self, thread: Thread, priority: int, reason: str = "set") -> None:
        """Change a thread's current priority (`reason`: "inherit", "restore" or "set"),
        re-queueing it (end of the new queue) if it is ready."""
        assert MIN_PRIORITY <= priority <= MAX_PRIORITY
        if thread.priority == priority:
            return
        if self.bus.wants(PriorityChange):
            self.bus.publish(PriorityChange(self.now(), thread.process.pid, thread.tid,
                                            thread.priority, priority, reason))
        if thread.state is ThreadState.READY:
            self._queues[thread.priority].remove(thread)
            thread.priority = priority
            self._queue(priority).append(thread)
            cur = self.current
            if cur is not None and priority > cur.priority:
                self._preempt(cur, "priority")
            return
        thread.priority = priority
        if thread is self.current:
            higher = any(q for p, q in self._queues.items() if p > priority)
            if higher:
                self._preempt(thread, "priority")
