"""Small helpers shared by the notebooks: one setup call, parameter checks, paths, table display.

Notebooks stay thin: parameters, one call into an experiment function, a figure, the numbers.
Everything a notebook needs beyond that lives here or in :mod:`h2eal_core.experiments`.

**Parameters.** Every notebook has one cell tagged ``parameters`` whose lines read
``name: type = value  # comment``. :func:`parse_parameters_cell` reads that cell with :mod:`ast`
(never by executing it), and :func:`check_parameters` checks a set of values against it: unknown
names are refused with a did-you-mean, values of the wrong type are refused (booleans only
``true``/``false``; an integer is fine for a ``float``), and every value is checked against the
domain of its name in :data:`PARAMETER_DOMAINS` (a context length must be a positive integer, a
model must be a known shape, a folder must exist...). The reproduction runner and
``python -m h2eal_core run`` do this before any kernel starts; :func:`setup`, the first call of
every notebook, does it again inside the kernel, so a direct ``papermill`` call with a misspelt
or out-of-range parameter fails in its first cell, before any model is loaded.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import logging
import os
import random
import re
import sys
import tokenize
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .validation import (
    ParameterError,
    check_choice,
    check_declared_type,
    check_known_name,
    check_list,
    check_number,
)

logger = logging.getLogger(__name__)

#: Figure width in inches that reads well both in JupyterLab and in the HTML report.
FIGURE_WIDTH_IN = 7.0

#: First line of the cell papermill injects after the ``parameters`` cell.
INJECTED_HEADER = "# Parameters"


# ---- the typed parameters cell ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DeclaredParameter:
    """One line ``name: type = value  # comment`` of a notebook's parameters cell."""

    name: str
    type_name: str
    default: Any
    comment: str
    line: int


def _comments_by_line(source: str) -> dict[int, str]:
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        pass
    return comments


def parse_parameters_cell(source: str, *, where: str = "parameters cell") -> dict[str, DeclaredParameter]:
    """The typed parameters declared in ``source`` (a cell of ``name: type = value  # comment`` lines).

    Raises :class:`ParameterError` when the cell is not such a cell (a statement that is not an
    annotated assignment of a literal).
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ParameterError(f"{where}:{exc.lineno}", (exc.text or "").strip(), "valid Python", exc.msg) from None
    comments = _comments_by_line(source)
    declared: dict[str, DeclaredParameter] = {}
    for node in tree.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None):
            raise ParameterError(
                f"{where}:{node.lineno}", ast.get_source_segment(source, node), "lines of the form 'name: type = value  # comment'"
            )
        try:
            default = ast.literal_eval(node.value)
        except ValueError:
            raise ParameterError(
                f"{where}:{node.lineno}", ast.get_source_segment(source, node.value), "a literal default value"
            ) from None
        name = node.target.id
        declared[name] = DeclaredParameter(name, ast.unparse(node.annotation), default, comments.get(node.lineno, ""), node.lineno)
    return declared


def _looks_like_parameters_cell(source: str) -> dict[str, DeclaredParameter] | None:
    try:
        declared = parse_parameters_cell(source)
    except ParameterError:
        return None
    return declared or None


def notebook_parameters(path: str | os.PathLike) -> dict[str, DeclaredParameter]:
    """The declared parameters of the notebook at ``path`` (its cell tagged ``parameters``)."""
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ParameterError(str(path), len(cells), "exactly one cell tagged 'parameters'")
    return parse_parameters_cell(cells[0].source, where=f"{path.name} parameters cell")


def injected_names(source: str) -> list[str]:
    """Names assigned in a papermill-injected cell (``# Parameters`` then ``name = value`` lines)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        names += [t.id for t in targets if isinstance(t, ast.Name)]
    return names


# ---- the domain of each parameter name ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Domain:
    """What values a parameter of this name may take, across every notebook that declares it.

    ``check(name, value)`` raises :class:`ParameterError` for a value outside the domain;
    ``invalid`` is one value of the right type outside it (the generated tests inject it).
    """

    allowed: str
    check: Callable[[str, Any], Any]
    invalid: Any


def _int_at_least(minimum: int):
    return lambda n, v: check_number(n, v, minimum=minimum, integer=True)


def _minus_one_or_at_least(minimum: int):
    def check(n, v):
        if v == -1 and not isinstance(v, bool):
            return v
        if isinstance(v, int) and not isinstance(v, bool) and v >= minimum:
            return v
        raise ParameterError(n, v, f"-1 (automatic) or an integer >= {minimum}")

    return check


def _positive_float(n, v):
    return check_number(n, v, minimum=0, min_inclusive=False)


def _ratio_or_auto(n, v):
    if v == -1:
        return v
    return check_number(n, v, minimum=0, maximum=1, min_inclusive=False)


def _resolve(value: str) -> Path:
    from .io import resolve_repo_path

    return resolve_repo_path(value)


def _output_folder(n, v):
    if not isinstance(v, str) or not v.strip():
        raise ParameterError(n, v, "a folder path (created when missing), not empty")
    if _resolve(v).is_file():
        raise ParameterError(n, v, "a folder path, not an existing file")
    return v


def _optional_folder_path(n, v):
    """'' (skip) or a folder path that may not exist yet; an existing file is refused."""
    if v and _resolve(v).is_file():
        raise ParameterError(n, v, "'' or a folder path, not an existing file")
    return v


def _optional_existing_folder(n, v):
    if v and not _resolve(v).is_dir():
        raise ParameterError(n, v, "'' or an existing folder (paths relative to notebooks/ or the repository)")
    return v


def _optional_existing_file(n, v):
    if v and not _resolve(v).is_file():
        raise ParameterError(n, v, "'' or an existing file (paths relative to notebooks/ or the repository)")
    return v


def _model_shape(n, v):
    from .models.shape import list_model_shapes

    if isinstance(v, str) and v.endswith((".yaml", ".yml")) and _resolve(v).is_file():
        return v
    return check_choice(n, v, list_model_shapes())


def _model(n, v):
    """A model shape name, a built-in model, or an existing local model folder."""
    from .models.loading import BUILTIN_MODELS
    from .models.shape import list_model_shapes

    known = list(BUILTIN_MODELS) + [m for m in list_model_shapes() if m not in BUILTIN_MODELS]
    if v in known or (isinstance(v, str) and v and _resolve(v).is_dir()):
        return v
    from .validation import suggest

    raise ParameterError(n, v, "one of " + ", ".join(repr(m) for m in known) + " or an existing local model folder", suggest(v, known))


def _hardware(n, v):
    from .config import resolve_named_file
    from .io import data_dir

    if isinstance(v, str) and v.endswith((".yaml", ".yml")) and _resolve(v).is_file():
        return v
    resolve_named_file(v, data_dir() / "hardware", n)
    return v


def _task(n, v):
    from .tasks import TASKS

    return check_choice(n, v, TASKS)


def _method(n, v):
    from .experiments.accuracy import METHODS

    return check_choice(n, v, METHODS)


def _prefill(n, v):
    from .experiments.accuracy import PREFILL_MODES

    return check_choice(n, v, PREFILL_MODES)


def _knob(n, v):
    from .experiments.hw_sensitivity import DESIGN_SPACE

    return check_choice(n, v, list(DESIGN_SPACE))


def _design(n, v):
    from .experiments.related_designs import load_related_designs

    return check_choice(n, v, list(load_related_designs()["design"]))


def _point(n, v):
    name, _, ctx = str(v).partition("@")
    if not ctx.isdigit() or int(ctx) < 1:
        raise ParameterError(n, v, "'model@context', e.g. 'llama-3.2-1b@32768'")
    _model_shape(n, name)
    return v


def _list_of(item: Callable, *, min_length: int = 1):
    return lambda n, v: check_list(n, v, item, min_length=min_length)


def _kind(n, v):
    return check_choice(n, v, ["model", "dataset"])


def _any_bool(n, v):  # the type check already allows only True/False
    return v


def _year(n, v):
    return check_number(n, v, minimum=2000, maximum=2100, integer=True)


def _tolerance(n, v):
    return check_number(n, v, minimum=0, maximum=1)


def _layout(n, v):
    """A write-time KV layout ``granularity[:width]``, e.g. ``token``, ``page``, ``page:16``."""
    try:
        from .hardware.designs import KV_LAYOUTS
    except ImportError:  # pragma: no cover - older hardware package
        KV_LAYOUTS = ("page", "token")
    granularity, _, width = str(v).partition(":")
    if granularity not in KV_LAYOUTS or (width and (not width.isdigit() or int(width) < 1)):
        from .validation import suggest

        raise ParameterError(n, v, "granularity[:width] with granularity one of " + ", ".join(map(repr, KV_LAYOUTS)) + " and width >= 1",
                             suggest(granularity, KV_LAYOUTS))
    return v


def _traces(n, v):
    """``auto``, ``''`` (none), a recording name under data/traces/ or an existing path."""
    from .io import data_dir

    if v in ("auto", "") or _resolve(v).exists() or (data_dir() / "traces" / v).exists():
        return v
    raise ParameterError(n, v, "'auto', '' (none), a recording in data/traces/ or an existing path")


#: Page selections the scheduler study can draw (h2eal_core.traces: uniform random, fitted generator, recorded).
PAGE_SELECTIONS = ("uniform", "fitted", "recorded")


def _page_selection(n, v):
    return check_choice(n, v, PAGE_SELECTIONS)


def _design_space(n, v):
    """A design space: a name in data/dse/ or a .yaml path."""
    from .config import resolve_named_file
    from .io import data_dir

    if isinstance(v, str) and v.endswith((".yaml", ".yml")) and _resolve(v).is_file():
        return v
    resolve_named_file(v, data_dir() / "dse", n)
    return v


def _scheduler_address(n, v):
    if v == "" or re.fullmatch(r"(tcp|tls|inproc|ucx)://[\w.\-\[\]:]+(:\d+)?", str(v)):
        return v
    raise ParameterError(n, v, "'' (local) or a Dask scheduler address such as 'tcp://host:8786'")


def _at_least_float(minimum: float):
    return lambda n, v: check_number(n, v, minimum=minimum)


def _gqa(n, v):
    from .attention.config import GQA_MODES

    return check_choice(n, v, GQA_MODES)


def _study_model(n, v):
    """A model of the accuracy frontier's presets, or an existing local model folder."""
    from .experiments.frontier import MODEL_PRESETS

    if isinstance(v, str) and v not in MODEL_PRESETS and _resolve(v).is_dir():
        return v
    return check_choice(n, v, list(MODEL_PRESETS))


def _gate_folder(n, v):
    """An existing folder holding full_attention_heads.tsv."""
    if isinstance(v, str) and (_resolve(v) / "full_attention_heads.tsv").is_file():
        return v
    raise ParameterError(n, v, "an existing folder with full_attention_heads.tsv (python -m h2eal_core.identify)")


_POSITIVE_INT = Domain("an integer >= 1", _int_at_least(1), 0)
_NONNEGATIVE_INT = Domain("an integer >= 0", _int_at_least(0), -1)
_CONTEXTS = Domain("a non-empty list of context lengths (integers >= 1, tokens)", _list_of(_int_at_least(1)), [4096, 0])
_SHAPES_OR_ALL = Domain("a list of model shapes in data/models/ (empty: all)", _list_of(_model_shape, min_length=0), ["llama-9b"])
_SHAPES = Domain("a non-empty list of model shapes in data/models/", _list_of(_model_shape), ["llama-9b"])
_SHAPE = Domain("a model shape in data/models/ (or a .yaml path)", _model_shape, "llama-9b")
_BOOL = Domain("true or false", _any_bool, "yes")

#: The domain of every notebook parameter, by name. A name means the same thing in every notebook
#: that declares it; a test checks that every declared parameter has an entry here.
PARAMETER_DOMAINS: dict[str, Domain] = {
    # outputs and seeds
    "figures_dir": Domain("a folder path (created when missing)", _output_folder, ""),
    "results_dir": Domain("a folder path (created when missing)", _output_folder, ""),
    "cache_dir": Domain("a folder path (created when missing)", _output_folder, ""),
    "seed": _NONNEGATIVE_INT,
    "random_heads_seed": _NONNEGATIVE_INT,
    # inputs
    "hardware": Domain("a configuration in data/hardware/ or a .yaml path", _hardware, "no_such_hardware"),
    "gates_dir": Domain("'' or an existing folder of identified gates", _optional_existing_folder, "../data/head_patterns/no-such-model"),
    "duo_patterns_dir": Domain("'' (skip) or a folder path (optional input: may be absent)", _optional_folder_path, "../README.md"),
    "records_dir": Domain("'' (remeasure) or a folder path", _optional_folder_path, "../README.md"),
    "trends_csv": Domain("'' (the project's data) or an existing CSV file", _optional_existing_file, "no_such_trends.csv"),
    "accuracy_results": Domain("'' (skip) or an existing CSV file", _optional_existing_file, "../data/results/no_such.csv"),
    "head_sparsity_results": Domain("'' (skip) or an existing CSV file", _optional_existing_file, "../data/results/no_such.csv"),
    "frontier_results": Domain("'' (skip) or an existing CSV file", _optional_existing_file, "../data/results/no_such.csv"),
    "identified_gate_dirs": Domain("a non-empty list of folders with identified gates", _list_of(_gate_folder),
                                   ["../data/head_patterns/no-such-model"]),
    # models
    "model": Domain("a model shape, a built-in model or an existing local model folder", _model, "llama-9b"),
    "models": _SHAPES_OR_ALL,
    "heads_model": _SHAPE,
    "mapping_model": _SHAPE,
    "sparsity_model": _SHAPE,
    "overflow_model": _SHAPE,
    "footprint_models": _SHAPES,
    "type_models": _SHAPES,
    "space_models": _SHAPES_OR_ALL,
    "band_models": _SHAPES_OR_ALL,
    "summary_models": _SHAPES_OR_ALL,
    "points": Domain("a non-empty list of 'model@context'", _list_of(_point), ["llama-3.2-1b"]),
    # contexts and lengths (tokens)
    "contexts": _CONTEXTS,
    "summary_contexts": _CONTEXTS,
    "band_contexts": _CONTEXTS,
    "space_contexts": _CONTEXTS,
    "pattern_contexts": _CONTEXTS,
    "lengths": _CONTEXTS,
    "context_len": _POSITIVE_INT,
    "heads_context_len": _POSITIVE_INT,
    "sparsity_context": _POSITIVE_INT,
    "type_context": _POSITIVE_INT,
    "context": _POSITIVE_INT,
    "overflow_context": _POSITIVE_INT,
    "length": _POSITIVE_INT,
    "batch_tokens": _POSITIVE_INT,
    # sparse attention
    "sink": _NONNEGATIVE_INT,
    "local": _POSITIVE_INT,
    "budget": _POSITIVE_INT,
    "page_size": _POSITIVE_INT,
    "retrieval_ratio": Domain("-1 (automatic) or a share in (0, 1]", _ratio_or_auto, 1.5),
    "streaming_llm_local": Domain("-1 (budget - sink) or an integer >= 1", _minus_one_or_at_least(1), 0),
    "decode_tail": Domain("-1 (each sample's question tail) or an integer >= 1", _minus_one_or_at_least(1), 0),
    "prefill": Domain("'dense' or 'policy'", _prefill, "sparse"),
    "gqa": Domain("a GQA page-set mode: group_sum, group_max or per_query_head", _gqa, "by_head"),
    # samples and tasks
    "tasks": Domain("a non-empty list of task names (h2eal_core.tasks.TASKS)", _list_of(_task), ["passkeys"]),
    "task": Domain("a task name (h2eal_core.tasks.TASKS)", _task, "passkeys"),
    "methods": Domain("a non-empty list of accuracy methods", _list_of(_method), ["fastest"]),
    "n_samples": _POSITIVE_INT,
    # accuracy frontier (second-generation Table III)
    "study_models": Domain("a non-empty list of frontier models (h2eal_core.experiments.frontier.MODEL_PRESETS) or local folders",
                           _list_of(_study_model), ["llama-9b"]),
    "measure": _BOOL,
    "measure_tasks": Domain("a list of task names (empty: the model preset's)", _list_of(_task, min_length=0), ["passkeys"]),
    "measure_lengths": Domain("a list of prompt lengths >= 1 (empty: the model preset's)", _list_of(_int_at_least(1), min_length=0), [0]),
    "measure_budgets": Domain("a list of token budgets >= 1 (empty: 256-4096)", _list_of(_int_at_least(1), min_length=0), [0]),
    "measure_n_samples": Domain("-1 (the model preset's) or an integer >= 1", _minus_one_or_at_least(1), 0),
    "gap_samples": _NONNEGATIVE_INT,
    "n_queries": _POSITIVE_INT,
    "index": _NONNEGATIVE_INT,
    # schematic drawings
    "mask_positions": _POSITIVE_INT,
    "mask_sink": _NONNEGATIVE_INT,
    "mask_local": _POSITIVE_INT,
    "layer": _NONNEGATIVE_INT,
    "gantt_pes": _POSITIVE_INT,
    "gantt_tiles_per_pe": _POSITIVE_INT,
    # studies
    "exact_time_limit_s": Domain("a number of seconds > 0", _positive_float, 0.0),
    "bytes_per_element": Domain("a number of bytes > 0", _positive_float, 0.0),
    "tolerance": Domain("a relative tolerance in [0, 1]", _tolerance, -0.1),
    "since_year": Domain("a year from 2000 to 2100", _year, 1999),
    "kinds": Domain("a non-empty list of 'model' and/or 'dataset'", _list_of(_kind), ["models"]),
    "knobs": Domain("a list of design-space knobs (empty: all)", _list_of(_knob, min_length=0), ["colour"]),
    "designs": Domain("a list of designs of data/related_designs.csv (empty: all)", _list_of(_design, min_length=0), ["NoSuchDesign"]),
    "end_tolerance": Domain("a relative tolerance in [0, 1]", _tolerance, -0.1),
    "order_factor": Domain("a factor >= 1", _at_least_float(1.0), 0.5),
    # scheduler study
    "layouts": Domain("a non-empty list of layouts 'granularity[:width]'", _list_of(_layout), ["pages"]),
    "panel_layout": Domain("a layout 'granularity[:width]'", _layout, "page:0"),
    "traces": Domain("'auto', '' or recorded page traces", _traces, "no_such_traces"),
    "radius": _NONNEGATIVE_INT,
    "panel_model": _SHAPE,
    "width_model": _SHAPE,
    "exact_models": _SHAPES,
    "panel_context": _POSITIVE_INT,
    "exact_context": _POSITIVE_INT,
    "width_context": _POSITIVE_INT,
    "panel_layer": Domain("-1 (automatic) or a layer index >= 0", _minus_one_or_at_least(0), -2),
    "exact_layers": Domain("a non-empty list of layer indices >= 0", _list_of(_int_at_least(0)), [0, -1]),
    "pages": Domain("a non-empty list of page selections: " + ", ".join(PAGE_SELECTIONS), _list_of(_page_selection), ["random"]),
    "lp_bound_layers": _NONNEGATIVE_INT,
    "trace_contexts": Domain("a list of context lengths (integers >= 1; empty: none)", _list_of(_int_at_least(1), min_length=0), [0]),
    "detail_models": _SHAPES_OR_ALL,
    # design-space exploration
    "space": Domain("a design space in data/dse/ or a .yaml path", _design_space, "no_such_space"),
    "scheduler": Domain("'' or a Dask scheduler address", _scheduler_address, "localhost"),
    # switches
    "log_scale": _BOOL,
    "with_bands": _BOOL,
    "include_derived": _BOOL,
    "edge_only": _BOOL,
    "duo_gates": _BOOL,
}


def check_parameter(declared: DeclaredParameter, value: Any) -> Any:
    """``value`` checked for ``declared``'s type, then its name's domain; returns the value to use."""
    value = check_declared_type(declared.name, value, declared.type_name)
    domain = PARAMETER_DOMAINS.get(declared.name)
    if domain is not None:
        domain.check(declared.name, value)
    return value


def check_parameters(
    declared: Mapping[str, DeclaredParameter], values: Mapping[str, Any], *, notebook: str = "this notebook"
) -> dict[str, Any]:
    """Check ``values`` (a subset of the declared names) against the declared parameters.

    Unknown names are refused first (with a did-you-mean), then each value's type and domain.
    Returns the checked values (an ``int`` given for a ``float`` parameter becomes a float).
    """
    for name in values:
        check_known_name(name, list(declared), what=f"a parameter of {notebook}", value=values[name])
    return {name: check_parameter(declared[name], value) for name, value in values.items()}


def parse_cli_value(declared: DeclaredParameter, text: str) -> Any:
    """Read a command-line value ``text`` for ``declared`` by its declared type.

    ``int``/``float``: a number; ``bool``: ``true`` or ``false`` only; ``str``: the text as is;
    ``list``/``dict``: a YAML flow value such as ``[llama-3.2-1b, gemma-2b]`` (YAML 1.2
    booleans). Anything else raises :class:`ParameterError` naming the parameter.
    """
    from .config import parse_yaml_text

    base = declared.type_name.split("[", 1)[0].strip()
    if base == "str":
        return text
    if base == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        raise ParameterError(declared.name, text, "true or false (a boolean)")
    if base == "int":
        if re.fullmatch(r"[+-]?\d+", text.strip()):
            return int(text)
        raise ParameterError(declared.name, text, "an integer (int)")
    if base == "float":
        try:
            value = float(text)
        except ValueError:
            raise ParameterError(declared.name, text, "a number (float)") from None
        return value
    value = parse_yaml_text(text, where=f"value of {declared.name}")
    return check_declared_type(declared.name, value, declared.type_name)


def _check_calling_notebook(namespace: dict) -> None:
    """Check the parameters of the notebook whose kernel namespace is ``namespace``.

    The kernel's input history (``_ih``) holds the cells run so far: the last cell that reads as a
    typed parameters cell declares the parameters; cells after it that start with ``# Parameters``
    are papermill's injected values, whose names must be declared ones. Every declared parameter's
    current value is then checked. Outside IPython (no history) nothing is checked.
    """
    history = namespace.get("_ih") or namespace.get("In")
    if not isinstance(history, list) or not history:
        return
    cells = [str(c) for c in history]
    declared, at = None, -1
    for i in range(len(cells) - 1, -1, -1):
        declared = _looks_like_parameters_cell(cells[i])
        if declared:
            at = i
            break
    if not declared:
        logger.debug("no typed parameters cell in the kernel history: parameters not checked")
        return
    for source in cells[at + 1 :]:
        if source.lstrip().startswith(INJECTED_HEADER):
            for name in injected_names(source):
                check_known_name(name, list(declared), what="a parameter declared in the notebook's parameters cell", value=namespace.get(name))
    for name, decl in declared.items():
        if name in namespace:
            namespace[name] = check_parameter(decl, namespace[name])


def setup(seed: int = 0, *, log_level: str = "WARNING", check_parameters: bool = True) -> None:
    """Check the notebook's parameters, seed every RNG, pin the plotting style, route logging to stderr.

    Every notebook calls this first with its ``seed`` parameter. With ``check_parameters`` (the
    default) the calling notebook's parameters are checked (see :func:`_check_calling_notebook`):
    a misspelt injected name, a value of the wrong type or out of its domain raises
    :class:`ParameterError` here, before any model is loaded. Rerunning a notebook with the same
    parameters gives the same numbers.
    """
    check_choice("log_level", log_level, ["DEBUG", "INFO", "WARNING", "ERROR"])
    if check_parameters:
        _check_calling_notebook(sys._getframe(1).f_globals)
    check_number("seed", seed, minimum=0, integer=True)
    logging.basicConfig(level=getattr(logging, log_level), format="%(levelname)s %(name)s: %(message)s", force=True)
    logging.getLogger("h2eal_core").setLevel(getattr(logging, log_level))
    random.seed(seed)
    np.random.seed(seed)
    # torch costs seconds to import: seed it only where the notebook already uses it (import torch
    # before calling setup); package functions that use torch take and apply their own seed.
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "h2eal"
    import seaborn as sns

    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    matplotlib.rcParams["figure.dpi"] = 100
    matplotlib.rcParams["savefig.dpi"] = 150


# ---- optional inputs ----------------------------------------------------------------------------

#: Key of the output metadata by which a notebook tells the runner and the report that an optional
#: input was absent (and which of its outputs were therefore not written).
MISSING_INPUT_KEY = "h2eal_missing_optional_input"


def optional_input_missing(what: str, path: str | os.PathLike, consequence: str, *, outputs: Iterable[str] = ()) -> str:
    """Say, in the notebook's visible output, that an optional input is absent and what that changes.

    ``outputs`` names the outputs (e.g. ``fig04_head_sparsity_duo_attention``) not written because
    of it: the reproduction runner keeps earlier copies of them instead of deleting them as stale,
    and the HTML report lists the missing input.
    """
    message = f"Optional input missing: {what} ({path}). {consequence}"
    record = {"what": what, "path": str(path), "consequence": consequence, "outputs": list(outputs)}
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({"text/plain": message}, raw=True, metadata={MISSING_INPUT_KEY: record})
            return message
    except ImportError:
        pass
    print(message)
    return message


def output_dirs(figures_dir: str | os.PathLike, results_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Create and return the figure and result folders a notebook was given."""
    figures, results = Path(figures_dir), Path(results_dir)
    figures.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    return figures, results


def rounded(df, digits: int = 3):
    """A copy of ``df`` with floats rounded for display (the CSV keeps full precision)."""
    return df.round(digits)
