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
    """Print memx errors as one clear line and exit 2 instead of a traceback. The library types
    every error a user can cause; the one safety net is for errors the OS raises about a path
    (a file that vanished, a permission, a link loop) before memx could look at it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemxError as e:
            _error_line(type(e).__name__, str(e))
            raise typer.Exit(2) from None
        except OSError as e:
            if e.errno is None:  # not the OS's: a bug to see with its traceback
                raise
            what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename is not None else "") + (f" -> {e.filename2}" if e.filename2 is not None else "")
            _error_line(type(e).__name__, what)
            raise typer.Exit(2) from None

    return wrapper


def _error_line(kind: str, message: str) -> None:
    """One line on stderr, however wide the terminal (soft_wrap: rich does not break it)."""
    err.print(f"[bold red]error[/] ({kind}): {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)

