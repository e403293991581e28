"""Moved to :mod:`h2eal_core.experiments.hardware.grid`; this re-export keeps old imports working."""

from .hardware.grid import *  # noqa: F401,F403
