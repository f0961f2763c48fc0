"""The rotation workflow: phases, journal, strategies, status."""

from render_rotator.rotation.report import RotationReport, RotationResult
from render_rotator.rotation.status import status
from render_rotator.rotation.workflow import resume, rotate

__all__ = ["RotationReport", "RotationResult", "resume", "rotate", "status"]
