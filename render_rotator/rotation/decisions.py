"""What a phase may ask of the runner instead of acting beyond its own step.

A phase returns True (done), False (skipped: nothing to do) or one of these; a helper deep
inside a phase whose state change needs the decision saved with it records it with `ask`.
Only the runner (rotation/workflow.py) moves between phases, switches strategy and writes
phase records, so every change of course is recorded in one place (`RotationState.decisions`)
and the phase table shows each phase for what happened to it.

- `FallBackToDeleteFirst`: provision found the free slot taken (strategy auto): the runner
  records the switch, runs delete-old (after the verified backup, through the guard), then
  provision again.
- `RedoPhases`: completed phases must run again (a new database recorded in the journal has
  vanished before any target used it: provision, copy and verify again).
- `AlreadyDone`: phases that an interrupted run finished, proven again now (the copy of a
  new database that targets already use): recorded as done without running them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

from render_rotator.rotation.state import Decision as DecisionRecord
from render_rotator.rotation.state import RotationState


@dataclass(frozen=True)
class FallBackToDeleteFirst:
    reason: str
    kind: ClassVar[str] = "fall back to delete-first"
    gives_way: ClassVar[bool] = True  # the phase is not done: it runs again afterwards


@dataclass(frozen=True)
class RedoPhases:
    phases: tuple[str, ...]
    reason: str
    kind: ClassVar[str] = "redo"
    gives_way: ClassVar[bool] = False


@dataclass(frozen=True)
class AlreadyDone:
    phases: tuple[str, ...]
    reason: str
    kind: ClassVar[str] = "already done"
    gives_way: ClassVar[bool] = False


Decision = FallBackToDeleteFirst | RedoPhases | AlreadyDone
#: what a phase returns
Outcome = bool | None | Decision | list[Decision]


def record(decision: Decision, phase: str, at: str) -> DecisionRecord:
    """The decision as the state saves it (not yet applied)."""
    phases = list(getattr(decision, "phases", ()))
    return DecisionRecord(
        kind=decision.kind, phase=phase, at=at, reason=decision.reason, phases=phases
    )


def ask(state: RotationState, decision: Decision, phase: str) -> None:
    """Record a decision from inside a phase, saved with the state change that called for
    it (the phase's next journal write); the runner acts on it when the phase returns."""
    state.decide(record(decision, phase, datetime.now(UTC).isoformat(timespec="seconds")))


def decisions_of(outcome: Outcome) -> list[Decision]:
    if isinstance(outcome, list):
        return outcome
    if isinstance(outcome, (FallBackToDeleteFirst, RedoPhases, AlreadyDone)):
        return [outcome]
    return []
