"""``h2eal_core.models`` exports what the README says (defect 4: the package ``__init__`` was empty)."""

import re
import subprocess
import sys


def test_readme_imports_work(repo):
    readme = (repo / "README.md").read_text()
    names = set(re.findall(r"h2eal_core\.models\.(\w+)\(", readme))
    assert {"load_model_shape"} <= names, names
    import h2eal_core.models as models

    for name in names | {"load_model", "list_model_shapes", "ModelShape"}:
        assert callable(getattr(models, name)), name
    assert models.load_model_shape("llama-3.2-1b").attention_type == "GQA"


def test_importing_models_does_not_import_torch():
    code = "import sys, h2eal_core.models as m; m.load_model_shape('gemma-2b'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
