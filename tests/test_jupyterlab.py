"""``make lab`` serves the notebooks and runs them through kernel sessions, as a person would.

Starts JupyterLab with the README's command, ``make lab`` (headless options through ``LAB_OPTS``,
nothing else added: defect 4 was a test that added ``--allow-root`` itself while ``make lab``
failed as root), as the current user and, when that is root, also as an unprivileged user. Lists
the notebooks through the contents API, opens a notebook as JupyterLab does (its cells read through
the contents API, a kernel session through the sessions API) and executes its cells over the
kernel's websocket channel (overriding the output folders right after the parameters cell, as
papermill does), then shuts the server down. Two notebooks: ``tab4_comparison`` (figure and table
files) and the interactive ``hb_explorer`` (issue 13: its widgets' views and models arrive over the
channel, and moving a slider from the client side redraws the plot).
"""

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid

import nbformat
import pytest

websocket = pytest.importorskip("websocket")

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(base: str, token: str, path: str, method: str = "GET", body: dict | None = None):
    req = urllib.request.Request(
        f"{base}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        text = resp.read().decode()
        return json.loads(text) if text else None


def _unprivileged_user_can_run_the_venv() -> bool:
    """True when this is root, ``runuser`` exists and ``nobody`` may execute the venv's interpreter
    (a venv built on root's own Python, e.g. under /root/.pyenv, is not executable by others)."""
    if os.geteuid() != 0 or not shutil.which("runuser"):
        return False
    python = os.path.realpath(os.path.join(os.path.dirname(__file__), "..", ".venv", "bin", "python"))
    return subprocess.run(["runuser", "-u", "nobody", "--", "test", "-x", python], capture_output=True).returncode == 0


USERS = ["current"] + (["nobody"] if _unprivileged_user_can_run_the_venv() else [])


@pytest.fixture(scope="module", params=USERS)
def lab_server(repo, request):
    port, token = _free_port(), secrets.token_hex(16)
    opts = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.open_browser=False"
    home = tempfile.mkdtemp(prefix="lab-home-")
    os.chmod(home, 0o777)
    env = {**{k: v for k, v in os.environ.items() if k != "MPLBACKEND"}, "HOME": home, "JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"), "JUPYTER_CONFIG_DIR": os.path.join(home, "config"),
           "JUPYTER_DATA_DIR": os.path.join(home, "data"), "IPYTHONDIR": os.path.join(home, "ipython")}
    cmd = ["make", "-s", "lab", f"LAB_OPTS={opts}"]
    if request.param == "nobody":
        cmd = ["runuser", "-u", "nobody", "--", "env", *(f"{k}={env[k]}" for k in ("HOME", "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR",
                                                                                   "JUPYTER_DATA_DIR", "IPYTHONDIR")), *cmd]
    log_path = os.path.join(home, "lab.log")
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=repo, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                _api(base, token, "/api/status")
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"make lab ({request.param}) exited: " + open(log_path).read()[-2000:])
                time.sleep(0.5)
        else:
            raise RuntimeError("jupyter lab did not start: " + open(log_path).read()[-2000:])
        yield base, token, port, home
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


def _send(ws, session_id: str, msg_type: str, content: dict) -> str:
    """Send a shell message over the kernel's websocket channel, as JupyterLab does; its msg_id."""
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session_id, "msg_type": msg_type, "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "content": content,
    }))
    return msg_id


def _collect(ws, msg_id: str, timeout_s: float, wait_reply: bool) -> dict:
    """The messages a request caused, until the kernel is idle again (and, if asked, its shell reply):
    ``status`` (of the reply), ``error``, ``outputs`` (display/result data bundles) and ``comms``
    (widget model states by comm id, from ``comm_open`` and ``comm_msg`` updates)."""
    deadline = time.time() + timeout_s
    result = {"status": None, "error": None, "outputs": [], "comms": {}}
    idle = replied = False
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "error":
            result["error"] = content
        elif kind in ("display_data", "execute_result"):
            result["outputs"].append(content["data"])
        elif kind == "comm_open":
            result["comms"][content["comm_id"]] = dict(content["data"].get("state", {}))
        elif kind == "comm_msg" and content["data"].get("method") == "update":
            result["comms"].setdefault(content["comm_id"], {}).update(content["data"].get("state", {}))
        elif kind == "execute_reply":
            result["status"], replied = content["status"], True
        elif kind == "status" and content["execution_state"] == "idle":
            idle = True
        if idle and (replied or not wait_reply):
            return result
    raise TimeoutError(f"no idle status within {timeout_s} s for message {msg_id}")


def _execute(ws, session_id: str, code: str, timeout_s: float = 120) -> dict:
    content = {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False}
    return _collect(ws, _send(ws, session_id, "execute_request", content), timeout_s, wait_reply=True)


def _notebooks_prefix(base: str, token: str) -> str:
    """``jupyter lab notebooks/`` serves that folder as the root (``""``); an older layout, the repo."""
    names = {item["name"] for item in _api(base, token, "/api/contents/")["content"]}
    return "notebooks/" if "notebooks" in names and "tab4_comparison.ipynb" not in names else ""


@contextlib.contextmanager
def _run_in_session(base: str, token: str, port: int, path: str, out: str):
    """Open ``path`` as JupyterLab does and run its code cells; yields ``(results, ws, session_id)``,
    the result of each executed cell (with its ``source``), while the session and its websocket
    channel are still open (closed and deleted on exit).

    The cells come from the server (``GET /api/contents/<path>``), the kernel from a notebook
    session (``POST /api/sessions``); the output folders are set to ``out`` right after the
    parameters cell. A cell that fails fails the test with its traceback.
    """
    model = _api(base, token, f"/api/contents/{path}?type=notebook&content=1")
    assert model["type"] == "notebook" and model["path"] == path
    nb = nbformat.from_dict(model["content"])
    session = _api(base, token, "/api/sessions", "POST",
                   {"path": path, "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    assert session["path"] == path and session["kernel"]["name"] == "python3"
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{session['kernel']['id']}/channels?token={token}", timeout=120)
    results = []
    try:
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            reply = _execute(ws, session["id"], cell.source)
            assert reply["status"] == "ok", "\n".join((reply["error"] or {}).get("traceback", [])) or reply
            results.append({**reply, "source": cell.source})
            if "parameters" in cell.metadata.get("tags", []):
                override = f"figures_dir = {out!r}\nresults_dir = {out!r}"
                assert _execute(ws, session["id"], override)["status"] == "ok"
        yield results, ws, session["id"]
    finally:
        ws.close()
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")


def _out_dir(home: str, name: str) -> str:
    out = os.path.join(home, name)
    os.makedirs(out, mode=0o777)
    os.chmod(out, 0o777)  # writable by the unprivileged server user
    return out


def _lab_command(repo, *prefix) -> str:
    out = subprocess.run([*prefix, "make", "-s", "-n", "lab"], cwd=repo, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_make_lab_adds_allow_root_only_for_root(repo):
    line = _lab_command(repo)
    assert line.split()[1:3] == ["lab", "notebooks/"]
    assert ("--allow-root" in line) == (os.geteuid() == 0)
    if os.geteuid() == 0 and shutil.which("runuser"):  # the same Makefile read by an ordinary user
        assert "--allow-root" not in _lab_command(repo, "runuser", "-u", "nobody", "--")


def test_lab_serves_notebooks_and_runs_one(lab_server, repo):
    base, token, port, home = lab_server
    prefix = _notebooks_prefix(base, token)
    names = {item["name"] for item in _api(base, token, "/api/contents/" + prefix.rstrip("/"))["content"]}
    assert "tab4_comparison.ipynb" in names and "fig01_context_trends.ipynb" in names and "hb_explorer.ipynb" in names
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}), timeout=30) as resp:
        assert resp.status == 200 and b"JupyterLab" in resp.read()

    out = _out_dir(home, "out-tab4")
    with _run_in_session(base, token, port, prefix + "tab4_comparison.ipynb", out):
        pass
    assert os.path.isfile(os.path.join(out, "tab4_comparison.png")) and os.path.isfile(os.path.join(out, "tab4_comparison.csv"))


def _png_outputs(state: dict) -> list[str]:
    return [o["data"]["image/png"] for o in state.get("outputs", []) if "image/png" in o.get("data", {})]


def test_lab_opens_the_explorer_and_its_widgets_respond(lab_server):
    """``hb_explorer.ipynb`` through the server: every cell runs, the widget cell's view and the
    models it refers to arrive over the channel with the plot in the output widget, and moving the
    bank-bandwidth slider from the client side (a ``comm_msg`` update, what JupyterLab sends)
    redraws the plot."""
    base, token, port, home = lab_server
    out = _out_dir(home, "out-explorer")
    with _run_in_session(base, token, port, _notebooks_prefix(base, token) + "hb_explorer.ipynb", out) as (results, ws, session_id):
        views = [(r, o[WIDGET_VIEW]) for r in results for o in r["outputs"] if WIDGET_VIEW in o]
        assert len(views) == 1 and "explorer.widget()" in views[0][0]["source"], "the widget cell showed no widget view"
        cell, view = views[0]
        comms = cell["comms"]
        assert view["model_id"] in comms, "the view's widget model was never opened on the channel"
        box = comms[view["model_id"]]
        assert box["_model_name"] == "VBoxModel" and len(box["children"]) == 3
        controls = [c.removeprefix("IPY_MODEL_") for row in box["children"][:2] for c in comms[row.removeprefix("IPY_MODEL_")]["children"]]
        assert [comms[c]["description"] for c in controls] == [
            "model", "context", "banks/ch", "GB/s/bank", "budget", "retr. ratio", "baseline", "design"
        ]
        output_id = box["children"][2].removeprefix("IPY_MODEL_")
        assert comms[output_id]["_model_name"] == "OutputModel"
        before = _png_outputs(comms[output_id])
        assert len(before) == 1, "the output widget holds the default point's plot"
        assert any("image/png" in o for r in results for o in r["outputs"]), "the default point's figure was not shown"
        assert os.path.isfile(os.path.join(out, "hb_explorer.csv")) and os.path.isfile(os.path.join(out, "hb_explorer.png"))

        slider = comms[controls[3]]  # GB/s/bank, a SelectionSlider: the client moves its index
        new_index = (slider["index"] + 1) % len(slider["_options_labels"])
        msg_id = _send(ws, session_id, "comm_msg", {
            "comm_id": controls[3], "data": {"method": "update", "state": {"index": new_index}, "buffer_paths": []},
        })
        moved = _collect(ws, msg_id, 60, wait_reply=False)
        assert moved["error"] is None
        after = _png_outputs(moved["comms"].get(output_id, {}))
        assert len(after) == 1 and after != before, "moving the slider did not redraw the plot"
