"""Moved to :mod:`h2eal_core.experiments.hardware.sensitivity`; this re-export keeps old imports working."""

from .hardware.sensitivity import *  # noqa: F401,F403
