"""The copy's task graph run by the real scheduler, with fake work: which task follows
which, and in what order the ready ones go."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from render_rotator.postgres.archive import PG_CLASS, PG_CONSTRAINT, TocEntry
from render_rotator.postgres.catalog import Constraint, SourceCatalog, SourceTable
from render_rotator.postgres.planning import Chunk, plan_chunks
from render_rotator.postgres.scheduler import Scheduler, TaskKind
from render_rotator.postgres.taskgraph import CopyTasks

MB = 1 << 20


class FakeWork:
    """Records what each task asked for, in order; moves no data."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._parts: dict[int, int] = {}
        self.costs: dict[str, tuple[int, int]] = {}  # build -> (cost, parallel workers)

    def _record(self, call: str) -> None:
        with self._lock:
            self.calls.append(call)

    def copy_chunk(self, chunk: Chunk) -> int:
        self._record(f"copy {chunk.label}")
        return 10

    def copy_batch(self, tables: list[SourceTable]) -> list[int]:
        self._record("batch " + ",".join(t.name for t in tables))
        return [1 for _ in tables]

    def table_loaded(self, table: SourceTable, rows: int) -> bool:
        with self._lock:
            left = self._parts.get(table.oid, 1) - 1
            self._parts[table.oid] = left
        return left <= 0

    def build(
        self, entries: Sequence[TocEntry], what: str, parallel: int = 0, cost: int = 0
    ) -> None:
        self._record(what)
        with self._lock:
            self.costs[what] = (cost, parallel)

    def rows_final(self, tables: Sequence[SourceTable]) -> None:
        self._record("final " + ",".join(t.name for t in tables))

    def analyze(self, tables: Sequence[SourceTable]) -> None:
        self._record("analyze " + ",".join(t.name for t in tables))

    def copy_large_objects(self, part: int, parts: int) -> int:
        self._record(f"blobs {part}/{parts}")
        return 0

    def copy_large_object_comments(self) -> None:
        self._record("blob comments")


def catalog(tables: list[SourceTable], **extra: object) -> SourceCatalog:
    fields: dict[str, object] = dict(
        tables=tables,
        sequences=[],
        large_objects=0,
        encoding="UTF8",
        server_num=180000,
        index_table={},
        index_cost={},
        constraints={},
    )
    fields.update(extra)
    return SourceCatalog(**fields)  # type: ignore[arg-type]


def test_index_builds_follow_their_table_then_analyze_then_the_foreign_key() -> None:
    orders = SourceTable(1, "public", "orders", 100 * MB, 12_800)
    items = SourceTable(2, "public", "items", 200 * MB, 25_600)
    pkey = TocEntry("10; 2606 100 CONSTRAINT", 10, PG_CONSTRAINT, 100, "CONSTRAINT orders_pkey")
    idx = TocEntry("11; 1259 200 INDEX public items_idx", 11, PG_CLASS, 200, "INDEX items_idx")
    fk = TocEntry("12; 2606 300 FK CONSTRAINT public items fk", 12, PG_CONSTRAINT, 300, "FK items")
    plan = catalog(
        [items, orders],
        index_table={200: 2, 101: 1},
        index_cost={200: 50 * MB, 101: 20 * MB},
        constraints={
            100: Constraint(1, "p", 101, 0),
            300: Constraint(2, "f", 101, 1),
        },
    )
    work = FakeWork()
    graph = CopyTasks(work, plan, {1: [pkey], 2: [idx]}, [(fk, plan.constraints[300])], jobs=1)
    chunks, batches = plan_chunks(plan.tables, jobs=1, split_bytes=None, ctid_ranges=False)
    timeline = Scheduler(1).run(graph.initial(chunks, batches), graph.after)
    calls = work.calls
    # the costlier table first; each table's index right after its data (indexes outrank data)
    assert calls[:4] == [
        "copy public.items",
        "final items",  # summed beside its CREATE INDEX (no exclusive build awaits it)
        "building INDEX items_idx",
        "analyze items",
    ]
    assert calls.index("copy public.orders") < calls.index(f"building {pkey.desc}")
    # a table with keys only is summed once they are built (ALTER TABLE, an exclusive lock
    # its read would hold off), and every table exactly once
    assert calls.index(f"building {pkey.desc}") < calls.index("final orders")
    assert sorted(c for c in calls if c.startswith("final")) == ["final items", "final orders"]
    assert calls[-1] == "building FK items"  # once both tables are loaded and analyzed
    assert {t.kind for t in timeline} == {"data", "index", "analyze", "foreign-key"}
    assert next(t for t in timeline if t.kind == "foreign-key").parent == "ANALYZE public.orders"
    # each build is told its own cost, which sizes its maintenance_work_mem
    assert work.costs["building INDEX items_idx"] == (50 * MB, 0)
    assert work.costs[f"building {pkey.desc}"] == (20 * MB, 0)


def test_a_split_table_is_indexed_once_all_its_ranges_are_in() -> None:
    big = SourceTable(1, "public", "big", 300 * MB, 38_400)
    idx = TocEntry("11; 1259 200 INDEX public big_idx", 11, PG_CLASS, 200, "INDEX big_idx")
    plan = catalog([big], index_table={200: 1}, index_cost={200: 10 * MB})
    work = FakeWork()
    graph = CopyTasks(work, plan, {1: [idx]}, [], jobs=2)
    chunks, batches = plan_chunks(plan.tables, jobs=2, split_bytes=100 * MB, ctid_ranges=True)
    assert len(chunks) == 3
    for chunk in chunks:
        work._parts[chunk.table.oid] = chunk.parts
    Scheduler(2).run(graph.initial(chunks, batches), graph.after)
    build = work.calls.index("building INDEX big_idx")
    assert sorted(work.calls[:build]) == [*(f"copy {c.label}" for c in chunks), "final big"]
    assert work.calls.index("final big") > max(work.calls.index(f"copy {c.label}") for c in chunks)


def test_a_batch_of_small_tables_ranks_by_its_cost_among_the_big_tables() -> None:
    """Small tables with heavy indexes do not wait behind every big table."""
    huge = SourceTable(1, "public", "huge", 400 * MB, 51_200)
    light = SourceTable(2, "public", "light", 20 * MB, 2_560)
    smalls = [
        SourceTable(10 + i, "public", f"s{i}", 4 * MB, 512, index_cost=40 * MB) for i in range(4)
    ]
    plan = catalog([huge, light, *smalls])
    graph = CopyTasks(FakeWork(), plan, {}, [], jobs=2)
    chunks, batches = plan_chunks(plan.tables, jobs=2, split_bytes=None, ctid_ranges=False)
    tasks = graph.initial(chunks, batches)
    order = [t.label for t in sorted(tasks, key=lambda t: -t.priority)]
    assert order == ["public.huge", "4 small tables", "public.light"]


def test_data_priorities_stay_below_analyze_and_keys_however_many_tables() -> None:
    """With thousands of tables, loading more data never outranks indexing what is loaded."""
    tables = [SourceTable(i, "public", f"t{i}", (i + 1) * 9 * MB, 2_000) for i in range(6000)]
    graph = CopyTasks(FakeWork(), catalog(tables), {}, [], jobs=2)
    chunks, batches = plan_chunks(tables, jobs=2, split_bytes=None, ctid_ranges=False)
    tasks = graph.initial(chunks, batches)
    assert all(graph.DATA <= t.priority < graph.ANALYZE for t in tasks)
    biggest = max(tasks, key=lambda t: t.priority)
    assert biggest.label == "public.t5999"


def test_large_objects_come_last_and_their_comments_after_every_part() -> None:
    table = SourceTable(1, "public", "t", 10 * MB, 1_280)
    plan = catalog([table], large_objects=5)
    work = FakeWork()
    graph = CopyTasks(work, plan, {}, [], jobs=2)
    chunks, batches = plan_chunks(plan.tables, jobs=2, split_bytes=None, ctid_ranges=False)
    tasks = graph.initial(chunks, batches)
    assert [t.kind for t in tasks].count(TaskKind.BLOBS) == 2
    Scheduler(1).run(tasks, graph.after)
    assert work.calls[-3:] == ["blobs 0/2", "blobs 1/2", "blob comments"]
