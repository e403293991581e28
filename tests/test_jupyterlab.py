"""``make lab`` serves the notebooks and runs one through a kernel session, as a person would.

Starts JupyterLab with the README's command, ``make lab`` (headless options through ``LAB_OPTS``,
nothing else added: defect 4 was a test that added ``--allow-root`` itself while ``make lab``
failed as root), as the current user and, when that is root, also as an unprivileged user. Lists
the notebooks through the contents API, opens a kernel session for a notebook and executes its
cells over the kernel's websocket channel (overriding the output folders right after the
parameters cell, as papermill does), then shuts the server down.
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

NOTEBOOK = "notebooks/tab4_comparison.ipynb"


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


@pytest.fixture(params=USERS)
def lab_server(repo, request):
    port, token = _free_port(), secrets.token_hex(16)
    opts = f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} --ServerApp.open_browser=False"
    home = tempfile.mkdtemp(prefix="lab-home-")
    os.chmod(home, 0o777)
    env = {**os.environ, "HOME": home, "JUPYTER_RUNTIME_DIR": os.path.join(home, "runtime"), "JUPYTER_CONFIG_DIR": os.path.join(home, "config"),
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


def _execute(ws, session_id: str, code: str, timeout_s: float = 120) -> dict:
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": session_id, "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False},
    }))
    deadline = time.time() + timeout_s
    error = None
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "error":
            error = msg["content"]
        if msg["msg_type"] == "execute_reply":
            return {"status": msg["content"]["status"], "error": error}
    raise TimeoutError(f"no reply within {timeout_s} s for: {code[:80]}")


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
    # `jupyter lab notebooks/` serves that folder as the root
    listing = _api(base, token, "/api/contents/")
    names = {item["name"] for item in listing["content"]}
    prefix = ""
    if "notebooks" in names and "tab4_comparison.ipynb" not in names:
        prefix = "notebooks/"
        names = {item["name"] for item in _api(base, token, "/api/contents/notebooks")["content"]}
    assert "tab4_comparison.ipynb" in names and "fig01_context_trends.ipynb" in names
    with urllib.request.urlopen(urllib.request.Request(f"{base}/lab", headers={"Authorization": f"token {token}"}), timeout=30) as resp:
        assert resp.status == 200 and b"JupyterLab" in resp.read()

    out = os.path.join(home, "out")
    os.makedirs(out, mode=0o777)
    os.chmod(out, 0o777)
    session = _api(base, token, "/api/sessions", "POST",
                   {"path": prefix + "tab4_comparison.ipynb", "type": "notebook", "name": "", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels?token={token}", timeout=120)
    try:
        nb = nbformat.read(repo / NOTEBOOK, as_version=4)
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            reply = _execute(ws, session["id"], cell.source)
            assert reply["status"] == "ok", reply["error"]
            if "parameters" in cell.metadata.get("tags", []):
                override = f"figures_dir = {out!r}\nresults_dir = {out!r}"
                assert _execute(ws, session["id"], override)["status"] == "ok"
    finally:
        ws.close()
        _api(base, token, f"/api/sessions/{session['id']}", "DELETE")
    assert os.path.isfile(os.path.join(out, "tab4_comparison.png")) and os.path.isfile(os.path.join(out, "tab4_comparison.csv"))
