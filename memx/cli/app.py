"""The Typer app, its consoles, and how memx errors become exit code 2."""

from __future__ import annotations

import functools
from typing import Any, Callable

import typer
from rich.console import Console
from rich.markup import escape

from memx.errors import MemxError

app = typer.Typer(
    name="memx",
    help="Export memory-augmented Transformers with their memory as explicit state, run them with "
    "runtimes that carry the memory across calls, and check long-horizon parity.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)


def errors_to_exit(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Print memx errors as one clear line and exit 2 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemxError as e:
            err.print(f"[bold red]error[/] ({type(e).__name__}): {escape(str(e))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper

