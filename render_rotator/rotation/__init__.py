"""The rotation workflow: phases, journal, strategies."""
