"""A browsable HTML report of one profile's executed notebooks.

``python -m h2eal_core report --profile default`` renders every executed notebook under
``build/<profile>/notebooks/`` to HTML (nbconvert) and writes an ``index.html`` with, per
notebook: the paper item, a thumbnail of its figure, the profile, the runtime and the parameters
it ran with (from papermill's provenance metadata). Figures are copied next to the pages so the
report folder can be zipped and opened anywhere.
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from pathlib import Path

from .io import repo_root, write_text_atomic
from .reproduce import Registry, Runner, load_registry, missing_optional_inputs

logger = logging.getLogger(__name__)

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 6px 8px; vertical-align: top; text-align: left; font-size: 0.9em; }
img.thumb { max-width: 260px; max-height: 170px; border: 1px solid #ccc; }
code { font-size: 0.85em; } .missing { color: #a00; } .params { max-width: 320px; word-break: break-word; }
"""


def _parameters_text(params: dict) -> str:
    shown = {k: v for k, v in params.items() if k not in ("figures_dir", "results_dir")}
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(shown.items())) or "(defaults)"


def _relative_value(value, root: str):
    """A parameter value with this machine's repository path replaced by the notebooks' ``../``."""
    if isinstance(value, str):
        return value.replace(root + os.sep, ".." + os.sep).replace(root, "..")
    if isinstance(value, list):
        return [_relative_value(v, root) for v in value]
    return value


def relative_paths(nb, root: str | os.PathLike | None = None) -> None:
    """Rewrite absolute paths under the repository in ``nb``'s injected cell and parameters."""
    root = str(Path(root or repo_root()).resolve())
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.source = _relative_value(cell.source, root)
    meta = nb.metadata.get("papermill", {})
    if isinstance(meta.get("parameters"), dict):
        meta["parameters"] = {k: _relative_value(v, root) for k, v in meta["parameters"].items()}
    for key in ("input_path", "output_path", "cwd"):  # papermill's provenance
        if isinstance(meta.get(key), str):
            meta[key] = _relative_value(meta[key], root)


def build_report(profile: str = "default", *, out_dir: str | os.PathLike | None = None, registry: Registry | None = None,
                 build_dir: str | os.PathLike | None = None, out_root: str | os.PathLike | None = None) -> Path:
    """Render the executed notebooks of ``profile`` and return the path of ``index.html``."""
    import nbformat
    from nbconvert import HTMLExporter

    registry = registry or load_registry()
    runner = Runner(registry, profile, build_dir=build_dir, out_root=out_root, progress=False)
    out = Path(out_dir) if out_dir else runner.build_dir / "report"
    (out / "figures").mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter()
    rows = []
    for spec in registry.notebooks.values():
        executed = runner.executed_dir / f"{spec.name}.ipynb"
        if not executed.is_file():
            status = "planned" if not spec.built else "not run yet"
            rows.append(
                f"<tr><td>{html.escape(spec.paper_item)}</td><td>{html.escape(spec.title)}</td>"
                f"<td class='missing'>{spec.name}: {status}</td><td></td><td></td><td></td></tr>"
            )
            continue
        nb = nbformat.read(executed, as_version=4)
        relative_paths(nb, registry.root)
        missing = missing_optional_inputs(nb)
        body, _ = exporter.from_notebook_node(nb)
        write_text_atomic(out / f"{spec.name}.html", body)
        meta = nb.metadata.get("papermill", {})
        seconds = meta.get("duration")
        thumb = ""
        png = runner.figures_dir / f"{spec.name}.png"
        if png.is_file():
            shutil.copyfile(png, out / "figures" / png.name)
            thumb = f"<a href='{spec.name}.html'><img class='thumb' src='figures/{png.name}' alt='{spec.name}'></a>"
        rows.append(
            f"<tr><td>{html.escape(spec.paper_item)}</td><td>{html.escape(spec.title)}</td>"
            f"<td><a href='{spec.name}.html'><code>{spec.name}</code></a></td><td>{thumb}</td>"
            f"<td>{'' if seconds is None else f'{seconds:.1f} s'}</td>"
            f"<td class='params'><code>{html.escape(_parameters_text(meta.get('parameters', {})))}</code>"
            + "".join(
                f"<div class='missing'>optional input missing: {html.escape(str(m.get('what')))} "
                f"(<code>{html.escape(str(m.get('path')))}</code>): {html.escape(str(m.get('consequence')))}</div>"
                for m in missing
            )
            + "</td></tr>"
        )
    index = f"""<!doctype html><html><head><meta charset="utf-8"><title>H2EAL reproduction: {profile} profile</title>
<style>{_STYLE}</style></head><body>
<h1>H2EAL reproduction report: <code>{html.escape(profile)}</code> profile</h1>
<p>{html.escape(runner.profile.description)}. Each row is one notebook run by
<code>python -m h2eal_core reproduce --profile {html.escape(profile)}</code>; click a thumbnail for the executed notebook.</p>
<table><tr><th>paper item</th><th>content</th><th>notebook</th><th>figure</th><th>runtime</th><th>parameters</th></tr>
{''.join(rows)}
</table></body></html>
"""
    index_path = write_text_atomic(out / "index.html", index)
    logger.info("report written to %s", index_path)
    return index_path
