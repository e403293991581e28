"""Page-selection traces recorded on real models, and what the HB model derives from them."""

from .format import PageTrace, load_trace, validate_trace

__all__ = ["PageTrace", "load_trace", "validate_trace"]
