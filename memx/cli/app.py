"""The Typer app, its consoles, and what every command shares (`command`): examples in --help,
--json (the result as one JSON object on stdout, errors included), --quiet/--verbose, a one-line
summary at the end, memx errors as exit code 2 and Ctrl-C as a sentence on what was left behind.

A command function returns an :class:`Outcome`; the decorator prints it (summary line, or the
JSON object) and exits with its code.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperOption

from memx import progress
from memx.errors import MemxError

app = typer.Typer(
    name="memx",
    help="Export memory-augmented Transformers with their memory as explicit state, run them with "
    "runtimes that carry the memory across calls, and check long-horizon parity.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

def _console(stderr: bool) -> Console:
    """soft_wrap: a line printed to a pipe is not broken (commands in hints stay whole); tables
    get a wide page (COLUMNS, default 160) instead of a terminal-less 80 columns."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else int(os.environ.get("COLUMNS") or 160)
    return Console(stderr=stderr, soft_wrap=True, width=width)


out = _console(stderr=False)
err = _console(stderr=True)

# Exit codes: 0 success, 1 a check failed, 2 bad input or a memx error, 130 interrupted.
EXIT_CHECK_FAILED, EXIT_ERROR, EXIT_INTERRUPTED = 1, 2, 130
# modules of optional extras: a command that needs one says which extra brings it
OPTIONAL_MODULES = {"torch": "export", "onnxscript": "export", "matplotlib": "export", "transformers": "hf", "tritonclient": "serving",
                    "tensorrt": "tensorrt", "tensorrt_rtx": "tensorrt-rtx"}
NOTHING_WRITTEN = "nothing was written (memx writes packages, reports and checkpoints atomically)"


@dataclass
class Outcome:
    """What a command did: `summary` is the one line it ends with, `data` its --json object,
    `code` its exit status (1: a check it ran failed)."""

    summary: str
    data: dict[str, Any] = field(default_factory=dict)
    code: int = 0


@dataclass
class Mode:
    """How the running command reports: --json, --quiet, --verbose."""

    json: bool = False
    quiet: bool = False
    verbose: bool = False


MODE = Mode()


def _flag_type_hidden(self: TyperOption, ctx: Any) -> str | None:
    """Flags take no value: no `<bool>` placeholder beside them in --help."""
    return None if self.is_flag else _display_type_rich(self, ctx)


_display_type_rich = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type_hidden  # type: ignore[method-assign]


def _version_callback(value: bool) -> None:
    if value:
        from memx.about import version_facts

        facts = version_facts()
        out.print(f"memx {facts['memx']} ({facts['distribution']}) " + ", ".join(f"{k} {v}" for k, v in facts["components"].items()), highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", help="Print memx's version and its components' and exit.", is_eager=True,
                                       callback=_version_callback)) -> None:
    """Export memory-augmented Transformers with their memory as explicit state, run them with
    runtimes that carry the memory across calls, and check long-horizon parity."""


_COMMON = [
    ("quiet", "--quiet", "-q", "Results and errors only: no progress, status lines or summary line."),
    ("verbose", "--verbose", "-v", "More detail: memx's log messages and the traceback of errors."),
]
_JSON_HELP = "Print the result as one JSON object on stdout (errors too: {\"ok\": false, \"error\": {...}}); nothing else goes to stdout."


def examples_epilog(examples: Sequence[str]) -> str:
    """--help's epilog: the examples, one per paragraph (Typer's rich help keeps paragraphs whole)."""
    return "Examples:\n\n" + "\n\n".join(f"  {e}" for e in examples)


def reflow(doc: str | None) -> str:
    """A docstring as --help text: each paragraph on one line (the terminal wraps it), paragraphs kept."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def first_sentence(text: str) -> str:
    """The command list's one-line help: the first sentence of the first paragraph."""
    head = text.split("\n\n")[0]
    end = head.find(". ")
    return head if end < 0 else head[: end + 1]


def command(group: typer.Typer = app, name: str | None = None, *, examples: Sequence[str], interrupted: str = NOTHING_WRITTEN) -> Callable:
    """Register a command: adds --json (unless the function has a `json_out` flag of its own),
    --quiet and --verbose, shows `examples` in --help, and turns the returned Outcome, memx errors
    and Ctrl-C into output and exit codes. `interrupted` says what Ctrl-C leaves behind."""
    if not examples:
        raise ValueError("every memx command shows at least one example in --help")

    def decorate(fn: Callable[..., Outcome | None]) -> Callable[..., None]:
        signature = inspect.signature(fn, eval_str=True)
        own_json = "json_out" in signature.parameters
        extra = [] if own_json else [inspect.Parameter("json_out", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                                                        default=typer.Option(False, "--json", help=_JSON_HELP))]
        extra += [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(False, flag, short, help=h))
                  for p, flag, short, h in _COMMON]

        @functools.wraps(fn)
        def wrapper(*args: Any, json_out: bool = False, quiet: bool = False, verbose: bool = False, **kwargs: Any) -> None:
            if own_json:
                kwargs["json_out"] = json_out
            run_command(fn, args, kwargs, Mode(json=json_out, quiet=quiet, verbose=verbose), interrupted)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD else p
                  for p in signature.parameters.values()]
        wrapper.__signature__ = signature.replace(parameters=params + extra)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {**{p.name: p.annotation for p in params}, **{p.name: bool for p in extra}}
        text = reflow(fn.__doc__)
        group.command(name, help=text, short_help=first_sentence(text), epilog=examples_epilog(examples))(wrapper)
        return wrapper

    return decorate


def run_command(fn: Callable[..., Outcome | None], args: tuple, kwargs: dict, mode: Mode, interrupted: str = NOTHING_WRITTEN) -> None:
    """Call a command in `mode` and report its outcome; exits with the command's code."""
    global MODE
    MODE = mode
    out.quiet = mode.json
    progress.configure(enabled=not (mode.json or mode.quiet))
    if mode.verbose:
        _log_to_stderr()
    t0 = time.perf_counter()
    try:
        outcome = fn(*args, **kwargs) or Outcome("done")
    except MemxError as e:
        _report_error(type(e).__name__, str(e), mode, details=_error_fields(e))
        raise typer.Exit(EXIT_ERROR) from None
    except OSError as e:
        if e.errno is None:  # not the OS's: a bug to see with its traceback
            raise
        what = f"{e.strerror or e}" + (f": {e.filename}" if e.filename is not None else "") + (f" -> {e.filename2}" if e.filename2 is not None else "")
        _report_error(type(e).__name__, what, mode, details={})
        raise typer.Exit(EXIT_ERROR) from None
    except ModuleNotFoundError as e:
        extra = OPTIONAL_MODULES.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        from memx.about import install_hint

        _report_error("MissingDependencyError", f"this command needs {e.name}, which is not installed: expected {install_hint(extra)}, got no module {e.name}",
                      mode, details={"expected": install_hint(extra), "actual": f"no module {e.name}"})
        raise typer.Exit(EXIT_ERROR) from None
    except KeyboardInterrupt:
        seconds = time.perf_counter() - t0
        _report_error("KeyboardInterrupt", f"after {seconds:.1f} s: {interrupted}", mode, details={}, label="interrupted")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        out.quiet = False
        progress.configure(enabled=True)
    seconds = time.perf_counter() - t0
    if mode.json:
        payload = {"ok": outcome.code == 0, **outcome.data, "seconds": round(seconds, 3)}
        sys.stdout.write(json.dumps(payload, default=_json_default) + "\n")
        sys.stdout.flush()
    elif not mode.quiet:
        style = "bold red" if outcome.code else "green"  # on stderr: stdout keeps only results (tokens, tables)
        err.print(f"[{style}]{escape(outcome.summary)}[/] [dim]({seconds:.1f} s)[/]", highlight=False)
    if outcome.code:
        raise typer.Exit(outcome.code)


def _log_to_stderr() -> None:
    """--verbose: memx's INFO log messages on stderr (one handler, however many commands run)."""
    logger = logging.getLogger("memx")
    logger.setLevel(logging.INFO)
    if not any(getattr(h, "memx_verbose", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler.memx_verbose = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def _error_fields(e: MemxError) -> dict[str, Any]:
    return {k: v for k, v in (("message", e.message), ("expected", e.expected), ("actual", e.actual), ("hint", e.hint)) if v is not None}


def _report_error(kind: str, message: str, mode: Mode, *, details: dict[str, Any], label: str = "error") -> None:
    if mode.json:
        error = {"type": kind, "text": " ".join(message.split()), **details}
        sys.stdout.write(json.dumps({"ok": False, "error": error}, default=_json_default) + "\n")
        sys.stdout.flush()
        return
    if mode.verbose and label == "error":
        import traceback

        err.print(escape(traceback.format_exc()), highlight=False)
    # one line on stderr, however wide the terminal (soft_wrap: rich does not break it)
    head = f"[bold red]{label}[/]" + (f" ({kind}):" if label == "error" else "")
    err.print(f"{head} {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def _json_default(value: Any) -> Any:
    """JSON for what commands put in their data: paths, numpy scalars and arrays, sets."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
