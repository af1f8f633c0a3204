"""Starting a local Triton Inference Server (the ``tritonserver`` binary of the
``nvidia-pytriton`` wheel) for a memx repository, without the user learning its setup:

- **the server environment**: a virtual environment of its own (``$MEMX_TRITON_ENV``, default
  ``~/.cache/memx/triton-pyX.Y``) with ``nvidia-pytriton`` and numpy < 2 (the Python backend's
  stub is built against numpy 1: with numpy 2 every output reaches the client empty); the
  model appends this Python's site-packages and memx (``MEMX_SERVING_PATH``) after the env's
  own, so it runs the memx and onnxruntime the user has;
- **a backend directory** holding the Python backend and the stub for this Python;
- **the process**: bound to 127.0.0.1, free ports picked, ``LD_LIBRARY_PATH`` and ``PATH`` set
  (the stub ignores PYTHONPATH and takes its interpreter from PATH), ready when
  ``/v2/health/ready`` answers, stopped with SIGTERM (Triton then removes its shared-memory
  regions; after a SIGKILL the stub removes them within a second).

    with TritonServer("repo") as server:
        client = memx.serving.connect(server.grpc_url, "rmt")
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from memx.errors import ServerUnavailableError, ServingError

SERVER_REQUIREMENTS = ("nvidia-pytriton", "numpy<2")
LOCAL_BACKENDS = ("python",)  # what the nvidia-pytriton tritonserver ships
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 20.0


def default_env_dir() -> Path:
    if os.environ.get("MEMX_TRITON_ENV"):
        return Path(os.environ["MEMX_TRITON_ENV"])
    return Path.home() / ".cache" / "memx" / f"triton-py{sys.version_info.major}.{sys.version_info.minor}"


def _site_packages(env: Path) -> Path:
    return env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


def _memx_root() -> Path:
    import memx

    return Path(memx.__file__).resolve().parents[1]


def ensure_server_env(env: Path | None = None, *, progress: Callable[[str], None] = lambda m: None) -> Path:
    """The server environment at ``env`` (made once, under a lock: a venv, pip install, the
    backend directory); returns it. Needs the package index the first time."""
    env = env or default_env_dir()
    stamp = env / ".memx-triton-env"
    if stamp.is_file() and (env / "backends" / "python" / "triton_python_backend_stub").is_file():
        return env
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f".{env.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be making it right now
        if not stamp.is_file():
            _make_server_env(env, progress)
    return env


def _make_server_env(env: Path, progress: Callable[[str], None]) -> None:
    from memx.package.files import remove_dead_leftovers

    progress(f"creating the Triton server environment in {env} (once; pip installs {', '.join(SERVER_REQUIREMENTS)})")
    remove_dead_leftovers(env)  # of a build that was killed
    staging = Path(tempfile.mkdtemp(prefix=f".{env.name}.staging-{os.getpid()}-", dir=env.parent))
    try:
        _run([sys.executable, "-m", "venv", str(staging)], "create the server's virtual environment")
        _run([str(staging / "bin" / "python"), "-m", "pip", "install", "-q", *SERVER_REQUIREMENTS], "install the server's packages")
        if env.exists():  # a half-made env of an earlier run (no stamp); never a directory of the user's
            if not (env / "pyvenv.cfg").is_file() and any(env.iterdir()):
                raise ServingError("the Triton server environment path holds something else", expected="an empty directory or a memx server env",
                                   actual=str(env), hint="set MEMX_TRITON_ENV to another path")
            shutil.rmtree(env)
        os.replace(staging, env)  # venv scripts hold the staging path; only bin/python and site-packages are used
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _backend_dir(env)
    (env / ".memx-triton-env").write_text("memx Triton server environment\n")


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise ServingError(f"could not {what}", expected="exit status 0", actual=f"{r.returncode}: {(r.stderr or r.stdout)[-600:].strip()}")


def host_paths() -> list[str]:
    """memx and this Python's package directories, for the model to append to its sys.path."""
    paths = [str(_memx_root()), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    return list(dict.fromkeys(p for p in paths if p))


def _pytriton_dir(env: Path) -> Path:
    root = _site_packages(env) / "pytriton" / "tritonserver"
    if not (root / "bin" / "tritonserver").is_file():
        raise ServingError("the server environment has no tritonserver", expected=str(root / "bin" / "tritonserver"), actual="missing",
                           hint=f"remove {env} and start again")
    return root


def _backend_dir(env: Path) -> Path:
    """backends/python: the Python backend beside the stub for this Python (Triton wants them together)."""
    src = _pytriton_dir(env)
    out = env / "backends" / "python"
    out.mkdir(parents=True, exist_ok=True)
    stub = src / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServingError("nvidia-pytriton has no Python backend stub for this Python", expected=str(stub), actual="missing")
    for f in (src / "backends" / "python" / "libtriton_python.so", src / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(f, out / f.name)
    return out.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_local_backends(repo: Path) -> None:
    """Refuse, before anything starts, a repository with models this local server cannot load
    (memx's onnxruntime/tensorrt repositories need a tritonserver that has those backends)."""
    for config in sorted(repo.glob("*/config.pbtxt")):
        m = re.search(r'^\s*(?:backend|platform):\s*"([^"]+)"', config.read_text(errors="replace"), re.M)
        backend = m.group(1) if m else "unknown"
        if backend not in LOCAL_BACKENDS:
            raise ServingError(f"the local tritonserver (nvidia-pytriton) has only the python backend, and model {config.parent.name!r} needs another",
                               expected=list(LOCAL_BACKENDS), actual=backend,
                               hint="serve this repository with a tritonserver that has it (e.g. NGC's tritonserver container: "
                                    f"tritonserver --model-repository {repo}), or write it with --backend python")


class TritonServer:
    """A tritonserver process serving ``repo`` on 127.0.0.1 (context manager: started and stopped)."""

    def __init__(self, repo: str | Path, *, http_port: int | None = None, grpc_port: int | None = None, env: Path | None = None,
                 log: Path | None = None, progress: Callable[[str], None] = lambda m: None):
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise ServingError("model repository not found", expected="a directory (memx serve repo writes one)", actual=str(self.repo))
        check_local_backends(self.repo)
        self.http_port, self.grpc_port = http_port or free_port(), grpc_port or free_port()
        self.env, self.progress = env, progress
        self.log = log
        self._own_log = log is None  # a temporary log of ours: removed when the server stops
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def command(self, env: Path) -> list[str]:
        return [str(_pytriton_dir(env) / "bin" / "tritonserver"), f"--model-repository={self.repo}", f"--backend-directory={env / 'backends'}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}", "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false", "--log-verbose=0", f"--exit-timeout-secs={int(STOP_TIMEOUT_S // 2)}"]

    def environment(self, env: Path) -> dict[str, str]:
        libs = [str(_site_packages(env) / "nvidia_pytriton.libs"), sysconfig.get_config_var("LIBDIR") or ""]
        out = dict(os.environ)
        out["LD_LIBRARY_PATH"] = ":".join([p for p in libs if p] + ([out["LD_LIBRARY_PATH"]] if out.get("LD_LIBRARY_PATH") else []))
        out["PATH"] = f"{env / 'bin'}:{out.get('PATH', '')}"
        out.pop("PYTHONHOME", None)
        out["MEMX_SERVING_PATH"] = os.pathsep.join(host_paths())
        return out

    def start(self, timeout_s: float = READY_TIMEOUT_S) -> "TritonServer":
        env = ensure_server_env(self.env, progress=self.progress)
        self.log = self.log or Path(tempfile.mkstemp(prefix="memx-tritonserver-", suffix=".log")[1])
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(self.command(env), stdout=log, stderr=subprocess.STDOUT, env=self.environment(env), start_new_session=True)
        self._wait_ready(timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_tail()
                self.stop()
                raise ServerUnavailableError("tritonserver exited before it was ready", expected="a running server",
                                             actual=f"exit status {self.process.returncode}; log: {tail}")
            if self.ready():
                return
            time.sleep(0.1)
        tail = self.log_tail()
        self.stop()
        raise ServerUnavailableError("tritonserver was not ready in time", expected=f"ready within {timeout_s:g} s", actual=f"log: {tail}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=1.0) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, n: int = 1500) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-n:].strip() if self.log else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self._own_log and self.log is not None:
            Path(self.log).unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
