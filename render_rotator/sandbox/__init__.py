"""The local sandbox: throwaway PostgreSQL clusters and a Render API emulator on top of them."""

from render_rotator.sandbox.cluster import Cluster
from render_rotator.sandbox.emulator import EmulatorAPIError, Faults, RenderEmulator
from render_rotator.sandbox.seed import Scenario, seed_demo

__all__ = ["Cluster", "EmulatorAPIError", "Faults", "RenderEmulator", "Scenario", "seed_demo"]
