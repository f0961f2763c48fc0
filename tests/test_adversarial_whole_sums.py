"""Adversarial checks of today's whole-table sums (fingerprint_like, drift, the copy's
_name_ranges): a difference the first (whole) reading saw must never be dropped."""

from __future__ import annotations

import pytest

from render_rotator.errors import VerificationError
from render_rotator.postgres import copy as copymod
from render_rotator.postgres import fingerprint as fpmod
from render_rotator.postgres.copy import copy_database
from render_rotator.postgres.fingerprint import Fingerprint, take_fingerprint
from render_rotator.postgres.progress import CopyProgressReport
from render_rotator.postgres.url import parse_url
from render_rotator.sandbox.cluster import Cluster
from tests.sample_data import RANGED_TABLE, ranged_sums, unique_name

BIG = RANGED_TABLE + "CREATE SEQUENCE counter; SELECT setval('counter', 10);"


def test_drift_keeps_a_sequence_difference_the_first_reading_saw(
    pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ranged table differs in both readings, so fingerprint_like returns the second
    reading whole: a sequence (or definition, setting, large object) difference seen only by
    the first reading disappears from the drift report."""
    ranged_sums(monkeypatch)
    name = unique_name("adv_seq")
    url = pg.create_database(name)
    try:
        pg.execute(BIG, dbname=name)
        stored = Fingerprint.from_dict(take_fingerprint(url).to_dict(digests=True))
        assert len(stored.tables["public.big"].chunks) > 2
        pg.execute("UPDATE big SET body = 'changed' WHERE id = 10000", dbname=name)
        pg.execute("SELECT setval('counter', 99)", dbname=name)

        real = fpmod.take_fingerprint
        readings: list[Fingerprint] = []

        def undo_the_sequence_after_the_first(*args: object, **kwargs: object) -> Fingerprint:
            readings.append(real(*args, **kwargs))  # type: ignore[arg-type]
            if len(readings) == 1:
                pg.execute("SELECT setval('counter', 10)", dbname=name)
            return readings[-1]

        monkeypatch.setattr(fpmod, "take_fingerprint", undo_the_sequence_after_the_first)
        diffs, tables = fpmod.drift(url, stored)
        monkeypatch.setattr(fpmod, "take_fingerprint", real)
        assert len(readings) == 2 and tables == ["public.big"]
        first = fpmod.compare_fingerprints(stored, readings[0])
        assert any(d.startswith("sequence public.counter") for d in first), first
        # the first reading's difference must stand
        assert any(d.startswith("sequence public.counter") for d in diffs), diffs
    finally:
        pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_copys_verification_keeps_a_sequence_difference_the_first_reading_saw(
    pg: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same in the copy's own verification (_name_ranges adopts both second readings)."""
    ranged_sums(monkeypatch)
    name = unique_name("adv_cs")
    source = pg.create_database(name)
    differs = unique_name("adv_ct")
    target = pg.create_database(differs)
    try:
        pg.execute(BIG, dbname=name)
        assert fpmod.key_ranges(source).tables["public.big"].chunks

        def change(event: CopyProgressReport) -> None:
            if event.phase == "verify" and not changed:
                pg.execute("UPDATE big SET body = 'changed' WHERE id = 10000", dbname=differs)
                pg.execute("SELECT setval('counter', 99)", dbname=differs)
                changed.append(True)

        changed: list[bool] = []
        real = copymod.take_fingerprint
        target_readings: list[Fingerprint] = []

        def undo_after_the_targets_first(*args: object, **kwargs: object) -> Fingerprint:
            out = real(*args, **kwargs)  # type: ignore[arg-type]
            if parse_url(args[0]).dbname == differs:  # type: ignore[arg-type]
                target_readings.append(out)
                if len(target_readings) == 1:
                    pg.execute("SELECT setval('counter', 10)", dbname=differs)
            return out

        monkeypatch.setattr(copymod, "take_fingerprint", undo_after_the_targets_first)
        with pytest.raises(VerificationError) as caught:
            copy_database(source, target, jobs=2, verify=True, progress=change)
        differences = caught.value.differences
        assert len(target_readings) == 2, len(target_readings)
        # the target's first (whole) reading saw the sequence moved; the source holds 10
        assert target_readings[0].sequences["public.counter"] == (99, True)
        assert any(d.startswith("table public.big") for d in differences), differences
        assert any(d.startswith("sequence public.counter") for d in differences), differences
    finally:
        for n in (name, differs):
            pg.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
