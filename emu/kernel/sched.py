"""The scheduler: QNX rules on one CPU, and the one place where thread states change.

- priorities 1-255, a FIFO ready queue per priority; the highest non-empty queue runs;
- a thread that becomes ready joins the END of its priority's queue;
- a thread preempted by a higher-priority one goes back to the HEAD of its queue (a kernel
  thread preempted in the middle of a step of its body, as a server that takes a pulse of
  lower priority is, finishes the step and may block in it: it leaves its queue then);
- SCHED_RR threads run for a time slice, then go to the end of their queue if
  another thread of the same priority is ready; SCHED_FIFO threads run until
  they block, yield or are preempted.

Invariants (asserted): a blocked thread is woken exactly once (its wait token
is consumed); only the running thread blocks (or a kernel thread preempted in the step it
blocks in); a queued thread is READY.

What the Linux ABI shows (sched_getscheduler, sched_getparam, sched_getattr) is kept
apart from the QNX model, as a `SchedAttr` per thread, and `qnx_params` maps one onto
the other:

- SCHED_OTHER, SCHED_BATCH and SCHED_IDLE threads report priority 0 and run round robin
  at the profile's default priority (10), as every QNX thread starts;
- SCHED_FIFO and SCHED_RR threads report Linux's priorities 1-99 and run at the same
  number in QNX's range (so a real-time thread below 10 runs below the default);
- SCHED_DEADLINE threads report their runtime, deadline and period and run round robin at
  `DEADLINE_PRIORITY`, above every real-time priority, as Linux's deadline class is above
  its real-time class. emu neither orders them by deadline nor throttles them when their
  runtime is spent: a deadline thread runs until it blocks or yields, or its slice ends and
  another deadline thread is ready;
- a thread created while another runs (clone, fork) inherits its creator's attributes; one
  that asked for SCHED_RESET_ON_FORK gives its children SCHED_OTHER at the default priority
  (and nice 0 for a negative nice) instead, and the flag is not inherited.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Callable

from emu.kernel.process import BLOCKED_STATES, SchedPolicy, Thread, ThreadState
from emu.trace.events import (EventBus, Preempt, PriorityChange, SchedParams, StateChange,
                              ThreadCreate)

MIN_PRIORITY, MAX_PRIORITY = 1, 255

# Linux's policies (include/uapi/linux/sched.h); SchedPolicy names the ones QNX runs
SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE, SCHED_DEADLINE = 0, 1, 2, 3, 5, 6
LINUX_POLICIES = frozenset({SCHED_OTHER, SCHED_FIFO, SCHED_RR, SCHED_BATCH, SCHED_IDLE,
                            SCHED_DEADLINE})
REALTIME_POLICIES = frozenset({SCHED_FIFO, SCHED_RR})
MAX_RT_PRIORITY = 99            # Linux's MAX_RT_PRIO - 1: FIFO and RR take 1-99
DEADLINE_PRIORITY = MAX_RT_PRIORITY + 1     # the QNX priority of SCHED_DEADLINE threads
DEFAULT_PRIORITY = 10           # QNX's default priority (the profile's default_priority)
BW_SHIFT = 20                   # Linux's fixed point for bandwidths (runtime / period)


@dataclass(frozen=True)
class SchedAttr:
    """A thread's scheduling as the Linux ABI reports it (struct sched_attr, less the nice
    value, which is the thread's `res.nice`)."""

    policy: int = SCHED_OTHER
    priority: int = 0               # sched_priority: 1-99 under FIFO and RR, else 0
    reset_on_fork: bool = False     # SCHED_RESET_ON_FORK / SCHED_FLAG_RESET_ON_FORK
    runtime: int = 0                # SCHED_DEADLINE: ns of CPU time per period,
    deadline: int = 0               # ns from the start of a period to its deadline,
    period: int = 0                 # ns of a period
    dl_flags: int = 0               # SCHED_FLAG_RECLAIM | SCHED_FLAG_DL_OVERRUN
    normal_priority: int = DEFAULT_PRIORITY    # the QNX priority of SCHED_OTHER for it

    @property
    def bandwidth(self) -> int:
        """A deadline thread's share of the CPU, runtime / period << BW_SHIFT (Linux's
        to_ratio); 0 for every other policy."""
        if self.policy != SCHED_DEADLINE or not self.period:
            return 0
        return (self.runtime << BW_SHIFT) // self.period

    def for_child(self) -> SchedAttr:
        """What a thread created by one with these attributes gets (Linux's sched_fork)."""
        if not self.reset_on_fork:
            return self
        if self.policy in REALTIME_POLICIES or self.policy == SCHED_DEADLINE:
            return SchedAttr(normal_priority=self.normal_priority)
        return replace(self, reset_on_fork=False)


NORMAL = SchedAttr()


def qnx_params(attr: SchedAttr) -> tuple[SchedPolicy, int]:
    """The QNX policy and priority a thread with Linux attributes `attr` runs at."""
    if attr.policy in REALTIME_POLICIES:
        return SchedPolicy(attr.policy), attr.priority
    if attr.policy == SCHED_DEADLINE:
        return SchedPolicy.RR, DEADLINE_PRIORITY
    return SchedPolicy(attr.policy), attr.normal_priority


def policy_name(policy: int) -> str:
    """A Linux policy's name without its SCHED_ prefix (OTHER, FIFO, ..., DEADLINE)."""
    return "DEADLINE" if policy == SCHED_DEADLINE else SchedPolicy(policy).name


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
        self._attrs: dict[Thread, SchedAttr] = {}   # Linux's view of threads that changed it
        self._preempted_server: Thread | None = None   # a kernel thread preempted mid-step
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
        """A new thread starts READY at the end of its queue, with a fresh slice; one created
        by the running thread inherits its Linux scheduling attributes (reset on fork)."""
        reset = self._inherit(thread)
        thread.slice_left = self.time_slice
        thread.state = ThreadState.READY
        self._created(thread)
        if reset and thread.res.nice < 0:       # after ThreadCreate: its hooks copy the nice
            thread.res.nice = 0
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

    def _inherit(self, child: Thread) -> bool:
        """Give `child` the attributes of the thread creating it (the running one, as for
        ResourceHooks.thread_created); True if they were reset on fork."""
        creator = self.current
        if creator is None or creator is child or creator.is_kernel_thread:
            return False
        attr = self._attrs.get(creator)
        if attr is None:
            return False
        inherited = attr.for_child()
        self._attrs[child] = inherited
        if inherited is not attr:
            child.policy, child.base_priority = qnx_params(inherited)
            child.priority = child.base_priority
        return attr.reset_on_fork

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
        if thread.is_kernel_thread:
            self._preempted_server = thread
        self.preemptions += 1
        if self.bus.wants(Preempt):
            self.bus.publish(Preempt(self.now(), thread.process.pid, thread.tid, reason))
        if reason == "slice":
            thread.slice_left = self.time_slice
        self._enqueue(thread, head=reason == "priority")

    # ---- leaving the CPU ----

    def block(self, thread: Thread, state: ThreadState) -> object:
        """Block the running thread (or a kernel thread preempted in the step it is in) in
        `state`; returns the token its single waker must present."""
        assert state in BLOCKED_STATES
        if thread is self._preempted_server:    # still in the step it was preempted in
            self._preempted_server = None
            self._queues[thread.priority].remove(thread)
        else:
            assert thread is self.current, f"only the running thread blocks (tid {thread.tid})"
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
        if thread is self._preempted_server:
            self._preempted_server = None
        thread.wait_token = None
        self._attrs.pop(thread, None)
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
        self._preempted_server = None
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
        """Set a thread's own QNX policy and (base) priority; it runs at that priority now
        (Linux's view of it follows: that policy, and the priority if FIFO or RR)."""
        rt = policy in (SchedPolicy.FIFO, SchedPolicy.RR)
        normal = self.attr(thread).normal_priority if rt else priority
        self._set(thread, SchedAttr(int(policy), priority if rt else 0, normal_priority=normal),
                  policy, priority)

    def attr(self, thread: Thread) -> SchedAttr:
        """A thread's scheduling as Linux reports it (SCHED_OTHER if never changed)."""
        return self._attrs.get(thread, NORMAL)

    def set_attr(self, thread: Thread, attr: SchedAttr) -> None:
        """Give a thread Linux attributes `attr`; it runs at their QNX policy and priority
        (`qnx_params`) now."""
        self._set(thread, attr, *qnx_params(attr))

    def deadline_bandwidth(self, without: Thread | None = None) -> int:
        """The CPU share (<< BW_SHIFT) that deadline threads other than `without` reserve."""
        return sum(a.bandwidth for t, a in self._attrs.items() if t is not without)

    def _set(self, thread: Thread, attr: SchedAttr, policy: SchedPolicy, priority: int) -> None:
        self._attrs[thread] = attr
        thread.policy = policy
        thread.base_priority = priority
        if self.bus.wants(SchedParams):
            self.bus.publish(SchedParams(self.now(), thread.process.pid, thread.tid,
                                         policy_name(attr.policy), priority))
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
