"""`memx serve repo` and `memx serve up`: Triton Inference Server repositories and a local server."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from memx.cli.app import Outcome, app, command, err, out
from memx.progress import Stopwatch

serve = typer.Typer(help="Serve packages on Triton Inference Server: write a model repository, start a local server.", no_args_is_help=True)
app.add_typer(serve, name="serve")


@command(serve, "repo", examples=["memx serve repo rmt.memx --out repo --name rmt && memx serve up repo",
                                   "memx serve repo rmt.memx --out repo --backend onnxruntime --max-batch 32",
                                   "memx serve repo rmt.memx --out repo --backend tensorrt    (then, on the server: memx serve plan repo --name rmt)"])
def repo(
    package: Path = typer.Argument(..., help="Package directory."),
    out_dir: Path = typer.Option(..., "--out", help="Repository directory to write."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name in the repository (default: the package's preset or family)."),
    backend: str = typer.Option("python", "--backend", help="Triton backend: python (memx's runtime inside Triton; every package, snapshots), "
                                "onnxruntime or tensorrt (Triton runs the step graph and keeps the memory as implicit state; single-graph packages)."),
    max_batch: int = typer.Option(64, "--max-batch", help="Most sequences stepped in one batched call."),
    strategy: str = typer.Option("oldest", "--strategy", help="Sequence batching: oldest (batch whichever sequences are ready) or direct (a slot per sequence)."),
    instances: int = typer.Option(1, "--instances", help="Model instances (processes) on the server."),
    idle_timeout: float = typer.Option(60.0, "--idle-timeout", help="Seconds a sequence may wait between requests before the server releases it."),
    queue_delay_us: int = typer.Option(0, "--max-queue-delay-us", help="How long the sequence batcher waits for more sequences' requests to batch "
                                       "(0: run what is queued at once; requests queue while the model runs)."),
    snapshot_store: Optional[str] = typer.Option(None, "--snapshot-store", help="Directory on the server where every sequence's state is kept between requests "
                                                  "(relative: to the model's directory): sequences survive server restarts and idle timeouts."),
    snapshot_ttl: Optional[float] = typer.Option(None, "--snapshot-ttl", help="Seconds after which a stored sequence nobody stepped is removed "
                                                  "(clients that never came back; default: kept until its END)."),
    op_library: Optional[str] = typer.Option(None, "--op-library", help="onnxruntime: absolute path of libmemx_ops.so on the server (model_operations); "
                                              "without it the memx ops run their portable bodies."),
    force: bool = typer.Option(False, "--force", help="Replace an existing repository (atomically)."),
) -> None:
    """Write a Triton model repository serving PACKAGE with sequence batching: each sequence
    (correlation id) keeps its memory on the server, batched across live sequences."""
    from memx.package import Package
    from memx.serving.repository import RepositoryOptions, pending_plan, write_repository

    pkg = Package.open(package)
    opt = RepositoryOptions(name=name or pkg.manifest.preset or pkg.manifest.family, backend=backend, max_batch=max_batch, strategy=strategy,
                            instances=instances, idle_timeout_s=idle_timeout, queue_delay_us=queue_delay_us, snapshot_store=snapshot_store,
                            snapshot_ttl_s=snapshot_ttl, op_library=op_library)
    write_repository(pkg, out_dir, opt, force=force)
    where = f"{out_dir}/{opt.name}"
    if backend == "tensorrt" and pending_plan(out_dir, opt.name):
        _plan_now_or_later(out_dir, opt.name)
    elif backend == "python":
        out.print(f"start it with: memx serve up {escape(str(out_dir))}", highlight=False)
    else:
        out.print("serve it with a tritonserver that has the onnxruntime backend (e.g. NGC's tritonserver container): "
                  f"tritonserver --model-repository {escape(str(out_dir))}", highlight=False)
    data = {"repository": str(out_dir), "model": opt.name, "backend": backend, "strategy": strategy, "max_batch": max_batch}
    return Outcome(f"wrote {where} ({backend} backend, {strategy} batching up to {max_batch} sequences)", data)


def _plan_now_or_later(repo: Path, name: str) -> None:
    """Build the plan here when full TensorRT and a GPU are present; else say how to build it on the server."""
    from memx.errors import EngineError
    from memx.serving.plan import build_plan

    try:
        plan = build_plan(repo, name, progress=Stopwatch(err))
        out.print(f"built {escape(str(plan))}", highlight=False)
    except EngineError as e:
        out.print(f"the plan is not built yet ({escape(e.message)}): on the server's machine run  memx serve plan {escape(str(repo))} --name {escape(name)}",
                  highlight=False)


@command(serve, "plan", examples=["memx serve plan repo --name rmt", "memx serve plan repo --name rmt --segment-len 1,64,128 --json"])
def plan(
    repository: Path = typer.Argument(..., help="Model repository written by memx serve repo --backend tensorrt."),
    name: str = typer.Option(..., "--name", help="Model name in the repository."),
    segment_len: Optional[str] = typer.Option(None, "--segment-len", help="MIN,OPT,MAX segment lengths of the plan's profile (default: the package's range)."),
) -> None:
    """Build NAME/1/model.plan from the model's serving graph with full TensorRT on this
    machine's GPU (run it where the server runs: plans are bound to a GPU and a TensorRT version)."""
    from memx.serving.plan import build_plan

    path = build_plan(repository, name, segment=segment_len, progress=Stopwatch(err))
    return Outcome(f"built {path}", {"plan": str(path), "model": name})


@command(serve, "up", interrupted="the server was stopped; the repository is unchanged",
         examples=["memx serve up repo", "memx serve up repo --grpc-port 8001    then, in Python: memx.serving.connect(\"127.0.0.1:8001\", \"rmt\").stream().step(tokens)"])
def up(
    repository: Path = typer.Argument(..., help="Model repository (memx serve repo writes one)."),
    http_port: int = typer.Option(8000, "--http-port", help="HTTP port on 127.0.0.1 (0: a free one)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", help="gRPC port on 127.0.0.1 (0: a free one)."),
) -> None:
    """Start a local tritonserver (from nvidia-pytriton, in memx's server environment, made
    once) on 127.0.0.1, wait until it is ready, serve until Ctrl-C, then shut it down."""
    from memx.serving.launcher import TritonServer

    server = TritonServer(repository, http_port=http_port or None, grpc_port=grpc_port or None, progress=Stopwatch(err))
    server.start()
    out.print(f"serving {escape(str(repository))}: gRPC {server.grpc_url}, HTTP {server.http_url} (log {escape(str(server.log))}); Ctrl-C stops", highlight=False)
    # SIGTERM and Ctrl-C both stop the server. Both handlers are set explicitly: a process
    # started in the background by a shell inherits SIGINT ignored, and Python keeps it so.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        while server.process.poll() is None:
            time.sleep(0.5)
        return Outcome(f"tritonserver exited with status {server.process.returncode}: {server.log_tail(600)}", {"exit_status": server.process.returncode}, 1)
    except KeyboardInterrupt:
        err.print("stopping…")
    finally:
        server.stop()
    return Outcome(f"stopped the server of {repository}", {"repository": str(repository)})


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
