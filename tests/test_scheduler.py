"""The copy's scheduler, with fake tasks: order, dependencies, locks, failure, timeline."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

import pytest

from render_rotator.postgres.scheduler import (
    Scheduler,
    Task,
    TaskKind,
    TaskTiming,
    critical_path,
)


class FakeClock:
    """Time advances only when a fake task says so: timelines are exact, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def task(
    label: str,
    log: list[str],
    *,
    priority: float = 0.0,
    kind: TaskKind = TaskKind.DATA,
    run: Callable[[], bool] | None = None,
    locks: tuple[int, ...] = (),
    exclusive: bool = False,
) -> Task:
    def record() -> bool:
        log.append(label)
        return True

    return Task(kind, label, priority, run or record, locks=locks, exclusive=exclusive)


def no_followers(_task: Task) -> Iterable[Task]:
    return []


def test_one_worker_runs_ready_tasks_highest_priority_first_ties_in_order() -> None:
    log: list[str] = []
    tasks = [
        task("low", log, priority=1),
        task("high", log, priority=5),
        task("mid-a", log, priority=3),
        task("mid-b", log, priority=3),
    ]
    Scheduler(1).run(tasks, no_followers)
    assert log == ["high", "mid-a", "mid-b", "low"]


def test_followers_run_after_their_parent_and_outrank_waiting_work() -> None:
    log: list[str] = []

    def after(done: Task) -> list[Task]:
        if done.label == "data":
            return [task("index", log, priority=10, kind=TaskKind.INDEX)]
        return []

    tasks = [task("data", log, priority=2), task("other", log, priority=1)]
    timeline = Scheduler(1).run(tasks, after)
    assert log == ["data", "index", "other"]
    index = next(t for t in timeline if t.label == "index")
    assert index.parent == "data"
    assert index.kind == "index"


def test_unfinished_work_makes_nothing_ready() -> None:
    """A task returning False (one range of a split table) does not trigger `after`."""
    log: list[str] = []
    seen: list[str] = []

    def after(done: Task) -> list[Task]:
        seen.append(done.label)
        return []

    partial = task("part 1/2", log, run=lambda: False)
    Scheduler(1).run([partial, task("part 2/2", log)], after)
    assert seen == ["part 2/2"]


def test_two_workers_run_side_by_side() -> None:
    """With two workers, the second task starts while the first still runs."""
    first_started = threading.Event()
    second_started = threading.Event()

    def first() -> bool:
        first_started.set()
        assert second_started.wait(10), "the second task never ran beside the first"
        return True

    def second() -> bool:
        assert first_started.wait(10)
        second_started.set()
        return True

    log: list[str] = []
    Scheduler(2).run(
        [task("a", log, priority=2, run=first), task("b", log, priority=1, run=second)],
        no_followers,
    )
    assert second_started.is_set()


def test_an_exclusive_task_never_runs_beside_another_on_its_table() -> None:
    """A foreign key (exclusive on both tables) waits for the index build on one of them,
    and a task on another table fills the second worker meanwhile."""
    release = threading.Event()
    running: set[str] = set()
    overlaps: list[tuple[str, str]] = []
    order: list[str] = []
    guard = threading.Lock()

    def work(label: str, hold: bool = False) -> Callable[[], bool]:
        def run() -> bool:
            with guard:
                overlaps.extend((label, other) for other in running)
                running.add(label)
                order.append(label)
            if hold:
                assert release.wait(10)
            with guard:
                running.discard(label)
            if label == "unrelated":
                release.set()
            return True

        return run

    log: list[str] = []
    tasks = [
        task("index on 1", log, priority=9, run=work("index on 1", hold=True), locks=(1,)),
        task("fk 1->2", log, priority=8, run=work("fk 1->2"), locks=(1, 2), exclusive=True),
        task("unrelated", log, priority=1, run=work("unrelated"), locks=(3,)),
    ]
    Scheduler(2).run(tasks, no_followers)
    assert order.index("unrelated") < order.index("fk 1->2")
    assert ("fk 1->2", "index on 1") not in overlaps
    assert ("index on 1", "fk 1->2") not in overlaps


def test_the_first_failure_stops_the_rest_and_is_raised() -> None:
    stopped = threading.Event()
    log: list[str] = []

    class Killed(Exception):
        """What a task sees when `stop` killed its processes."""

    def fails() -> bool:
        raise RuntimeError("COPY failed on table a")

    def killed_by_stop() -> bool:
        assert stopped.wait(10), "stop() was never called"
        raise Killed("killed")

    tasks = [
        task("long", log, priority=3, run=killed_by_stop),
        task("bad", log, priority=2, run=fails),
        task("never", log, priority=1),
    ]
    scheduler = Scheduler(2, stop=stopped.set, echoes=(Killed,))
    with pytest.raises(RuntimeError, match="COPY failed on table a"):
        scheduler.run(tasks, no_followers)
    assert "never" not in log
    assert stopped.is_set()


def test_an_echo_alone_is_still_raised() -> None:
    """A task killed with nothing else failing (an outside kill) still fails the run."""

    class Killed(Exception):
        pass

    def killed() -> bool:
        raise Killed("killed from outside")

    with pytest.raises(Killed):
        Scheduler(1, echoes=(Killed,)).run([task("a", [], run=killed)], no_followers)


def test_past_the_deadline_the_run_stops_with_the_timeout_error() -> None:
    clock = FakeClock()
    stopped = threading.Event()
    log: list[str] = []

    def slow() -> bool:
        clock.advance(100)
        assert stopped.wait(10), "stop() was never called after the deadline"
        raise InterruptedError("killed")

    scheduler = Scheduler(
        1,
        stop=stopped.set,
        deadline=50,
        timeout_error=lambda: TimeoutError("the copy did not finish within 50s"),
        echoes=(InterruptedError,),
        clock=clock,
    )
    with pytest.raises(TimeoutError, match="within 50s"):
        scheduler.run([task("slow", log, run=slow), task("next", log)], no_followers)
    assert "next" not in log


def test_timeline_records_ready_start_end_and_what_a_task_waited_for() -> None:
    clock = FakeClock()

    def takes(seconds: float) -> Callable[[], bool]:
        def run() -> bool:
            clock.advance(seconds)
            return True

        return run

    def after(done: Task) -> list[Task]:
        if done.label == "data":
            return [Task(TaskKind.INDEX, "index", 10, takes(3))]
        return []

    tasks = [Task(TaskKind.DATA, "data", 2, takes(2)), Task(TaskKind.BATCH, "batch", 1, takes(1))]
    timeline = Scheduler(1, clock=clock, origin=0).run(tasks, after)
    assert [(t.label, t.ready, t.began, t.ended) for t in timeline] == [
        ("data", 0, 0, 2),
        ("index", 2, 2, 5),
        ("batch", 0, 5, 6),
    ]
    batch = timeline[2]
    assert batch.blocked_by == "index"  # the last task to end while it waited
    assert [t.label for t in critical_path(timeline)] == ["batch"]
    assert timeline[1].to_dict()["kind"] == "index"


def test_critical_path_follows_parents_back_from_the_last_to_end() -> None:
    timeline = [
        TaskTiming("data", "t", 0, 0, 4, None),
        TaskTiming("index", "t_idx", 4, 4, 9, "t"),
        TaskTiming("analyze", "ANALYZE t", 9, 9, 10, "t_idx"),
        TaskTiming("batch", "small", 0, 4, 6, None),
    ]
    assert [t.label for t in critical_path(timeline)] == ["t", "t_idx", "ANALYZE t"]
    assert critical_path([]) == []


def test_grant_adjusts_the_task_being_picked_with_what_still_waits() -> None:
    seen: list[tuple[str, list[str]]] = []

    def grant(picked: Task, waiting: list[Task] | tuple[Task, ...], jobs: int) -> None:
        seen.append((picked.label, [t.label for t in waiting]))
        picked.parallel = jobs

    log: list[str] = []
    timeline = Scheduler(1, grant=grant).run(
        [task("a", log, priority=2), task("b", log, priority=1)], no_followers
    )
    assert seen == [("a", ["b"]), ("b", [])]
    assert [t.parallel for t in timeline] == [1, 1]


def test_jobs_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Scheduler(0)


def test_a_failing_after_stops_the_run_and_is_raised() -> None:
    """A broken task graph fails the copy instead of hanging it."""
    stopped = threading.Event()
    log: list[str] = []

    def after(done: Task) -> list[Task]:
        raise KeyError(done.label)

    with pytest.raises(KeyError, match="first"):
        Scheduler(1, stop=stopped.set).run(
            [task("first", log, priority=2), task("second", log, priority=1)], after
        )
    assert log == ["first"]
    assert stopped.is_set()
