"""`memx generate`: try a package from the shell, token by token (memx.runtimes.generation)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer

from memx.cli.app import Outcome, command, out
from memx.errors import InputError

EXAMPLES = [
    'memx generate rmt.memx --prompt-ids "1 2 3 4" --max-new-tokens 32 --temperature 0',
    "memx generate rmt.memx --prompt-tokens prompt.npy --top-k 40 --top-p 0.9 --seed 7 --segment-len 64",
    'memx generate lm.memx --prompt "Once upon a time" --tokenizer ./my-tokenizer --stop-token 2 --json',
]


def read_prompt(prompt_tokens: Optional[Path], prompt_ids: Optional[str], prompt: Optional[str], tokenizer: Optional[Path]) -> tuple[np.ndarray, Any]:
    """The prompt's token ids (1-D int64) from exactly one source, and the tokenizer (or None)."""
    given = [n for n, v in (("--prompt-tokens", prompt_tokens), ("--prompt-ids", prompt_ids), ("--prompt", prompt)) if v is not None]
    if len(given) != 1:
        raise InputError("give the prompt one way", expected="one of --prompt-tokens F.npy, --prompt-ids \"1 2 3\", --prompt TEXT --tokenizer DIR",
                         actual=", ".join(given) or "none")
    tok = load_tokenizer(tokenizer) if tokenizer is not None else None
    if prompt is not None:
        if tok is None:
            raise InputError("--prompt needs a tokenizer", expected="--tokenizer DIR (a local Hugging Face tokenizer)", actual="none")
        ids = np.asarray(tok.encode(prompt, add_special_tokens=False), dtype=np.int64)
    elif prompt_ids is not None:
        try:
            ids = np.asarray([int(x) for x in prompt_ids.replace(",", " ").split()], dtype=np.int64)
        except ValueError:
            raise InputError("--prompt-ids must be integers", expected='token ids like "1 2 3"', actual=prompt_ids[:60]) from None
    else:
        try:
            ids = np.load(prompt_tokens, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{prompt_tokens} is not a numpy array file", expected="a .npy of token ids", actual=str(e)[:120]) from None
        if ids.dtype.kind not in "iu":
            raise InputError(f"{prompt_tokens} does not hold token ids", expected="an integer array", actual=str(ids.dtype))
        ids = ids.reshape(-1).astype(np.int64)
    return ids, tok


def load_tokenizer(path: Path) -> Any:
    """A Hugging Face tokenizer from a local directory (no hub access)."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise InputError("--tokenizer needs the transformers package", expected="pip install transformers", actual="not installed") from None
    if not Path(path).is_dir():
        raise InputError("tokenizer directory not found", expected="a local directory with tokenizer files", actual=str(path))
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # transformers' own types
        raise InputError(f"cannot load a tokenizer from {path}", expected="tokenizer.json or tokenizer_config.json", actual=f"{type(e).__name__}: {str(e)[:200]}") from None


@command(examples=EXAMPLES)
def generate(
    package: Path = typer.Argument(..., help="Package directory (exported from a causal family: it has decode graphs)."),
    prompt_tokens: Optional[Path] = typer.Option(None, "--prompt-tokens", help="The prompt as a .npy of token ids."),
    prompt_ids: Optional[str] = typer.Option(None, "--prompt-ids", help='The prompt as token ids, e.g. "1 2 3".'),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The prompt as text (needs --tokenizer)."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", help="A local Hugging Face tokenizer directory (encodes --prompt, decodes the output)."),
    max_new_tokens: int = typer.Option(32, "--max-new-tokens", help="Tokens to generate at most."),
    temperature: float = typer.Option(1.0, "--temperature", help="Softmax temperature; 0 is greedy."),
    top_k: int = typer.Option(0, "--top-k", help="Sample among the k most likely tokens (0: all)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Sample among the most likely tokens holding this much mass."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampler (SplitMix64; memx-run draws the same tokens)."),
    stop_token: list[int] = typer.Option([], "--stop-token", help="Stop after this token (repeatable)."),
    segment_len: Optional[int] = typer.Option(None, "--segment-len", help="Tokens per segment before the memory is written (default: the decode capacity)."),
    backend: str = typer.Option("onnxruntime", "--backend", help="onnxruntime or torch."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object at the end instead of streaming tokens."),
) -> None:
    """Generate tokens from a prompt: the prompt's whole segments go through the step graph, the
    rest and every new token through the decode graph; the memory is written each time a segment
    fills. Prints tokens as they come and tokens/s."""
    from memx import runtimes

    ids, tok = read_prompt(prompt_tokens, prompt_ids, prompt, tokenizer)
    rt = runtimes.open(package, backend=backend)
    stream = rt.stream()
    stream.segment_len = segment_len
    t0 = time.perf_counter()
    stream.append(ids)
    prompt_s = time.perf_counter() - t0
    stream_out = not json_out

    def show(token: int) -> None:
        if stream_out:
            text = tok.decode([token]) if tok is not None else f"{token} "
            out.print(text, end="", highlight=False, markup=False, soft_wrap=True)

    t1 = time.perf_counter()
    tokens = list(stream.generate(max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, stop_tokens=stop_token, callback=show))
    gen_s = time.perf_counter() - t1
    rate = len(tokens) / gen_s if gen_s > 0 else float("inf")
    summary = {"package": str(package), "backend": backend, "prompt_tokens": int(len(ids)), "prompt_seconds": round(prompt_s, 4), "tokens": tokens,
               "new_tokens": len(tokens), "generate_seconds": round(gen_s, 4), "tokens_per_second": round(rate, 1), "segments_written": stream.segments,
               "position": int(stream.position[0])}
    if tok is not None:
        summary["text"] = tok.decode(tokens)
    out.print()
    return Outcome(f"{len(tokens)} tokens in {gen_s:.3f} s ({rate:.1f} tokens/s); prompt of {len(ids)} tokens in {prompt_s:.3f} s; "
                   f"{stream.segments} segments written, {int(stream.position[0])} tokens in the open segment", summary)
