"""Moved to :mod:`h2eal_core.experiments.hardware.mapping`; this re-export keeps old imports working."""

from .hardware.mapping import *  # noqa: F401,F403
