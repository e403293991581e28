"""Page-selection traces recorded on real models, and what the HB model derives from them.

- :mod:`.format`: :class:`PageTrace` (the ``.npz`` format), :func:`load_trace`, :func:`validate_trace`.
- :mod:`.record`: record traces on a real model under the H2EAL policy (``python -m h2eal_core.traces record``).
- :mod:`.stats`: statistics that matter to the HB model (positions, overlap, union, busiest bank).
- :mod:`.fit`: a generator fitted to a trace, and uniform random pages, with the same interface.
- :mod:`.library`: the committed traces and fits; :func:`selection_trace` is the HB model's entry point.
"""

from .format import PAGE_ORDERS, PageTrace, load_trace, selected_page_count, validate_trace

__all__ = ["PAGE_ORDERS", "PageTrace", "load_trace", "selected_page_count", "validate_trace"]
