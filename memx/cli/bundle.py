"""`memx bundle`: one directory (or .tar.gz) that takes a package to its board."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from memx.cli.app import Outcome, command, err, out
from memx.progress import Stopwatch


@command(examples=["memx bundle gmat.memx --target jetson", "memx bundle gmat.memx --target jetson --out /media/usb/gmat-jetson --tar",
                   "memx bundle gmat.memx --target jetson --prebuilt build/aarch64/install --force --json"],
         interrupted="nothing was written (memx bundle writes into a staging directory and renames it at the end)")
def bundle(
    package: Path = typer.Argument(..., help="Package directory."),
    target: str = typer.Option("jetson", help="The board: jetson (Jetson Orin, JetPack 6)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Bundle directory to write. Default: <package stem>-<target> beside the package."),
    tar: bool = typer.Option(False, "--tar", help="Write OUT.tar.gz (one file to copy) instead of the directory."),
    prebuilt: Optional[Path] = typer.Option(None, help="Install tree of the target's prebuilt binaries (bin/memx-run, lib/). Default: the checkout's "
                                            "build/aarch64/install (make cpp-aarch64) when it exists."),
    no_prebuilt: bool = typer.Option(False, "--no-prebuilt", help="Leave the prebuilt binaries out: the board builds from the sources."),
    segments: int = typer.Option(64, min=1, help="Segments in the sample token file (sample/tokens.npy)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT when it is an earlier bundle (or archive)."),
) -> Outcome:
    """Write one directory for a board: the package (copied and verified), the C++ sources of
    libmemx, memx-run and libmemx_ops, prebuilt binaries for the board's CPU, a sample token file,
    README.md with the exact commands, bundle.json (what is inside, with sha256) and run.sh, which
    on the board builds against its ONNX Runtime (CUDA/TensorRT execution providers) or falls back
    to the prebuilt binaries, and prints a latency table per device with tegrastats figures."""
    from memx.edge import bundle as write_bundle
    from memx.formatting import human_bytes

    result = write_bundle(package, target=target, out=out_dir, archive=tar, prebuilt=False if no_prebuilt else prebuilt, force=force,
                          segments=segments, progress=Stopwatch(err))
    out.print(f"[bold]{escape(str(result.path))}[/]: {escape(result.package)} for {result.target}, {result.files} files, {human_bytes(result.bytes)} "
              f"(C++ sources from the {result.sources})", highlight=False)
    out.print("prebuilt binaries: " + (escape(str(result.prebuilt)) if result.prebuilt else "absent"), highlight=False)
    for note in result.notes:
        out.print(f"[yellow]note[/]: {escape(note)}", highlight=False)
    out.print("on the board:", highlight=False)
    for line in result.commands:
        out.print(f"    {escape(line)}", highlight=False)
    binaries = "with prebuilt binaries" if result.prebuilt else "without prebuilt binaries (absent: the board builds from the sources)"
    return Outcome(f"bundle for {result.target} written to {result.path} ({result.files} files, {human_bytes(result.bytes)}; {binaries})", result.to_dict())
