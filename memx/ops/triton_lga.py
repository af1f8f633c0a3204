"""``memx::LocalGlobalAttention`` as a Triton kernel: the GPU kernel of the TensorRT plugin.

One program per (query position i, batch·head): it streams the M memory keys and then only the
local keys of i (band: |i - j| <= window; chunked: same chunk; causal: j <= i; never j >=
lengths[b]) through an online softmax, so work and memory are O(S·(w + M)) and no S×S score
matrix exists. Padding queries (i >= lengths[b]) write zeros, as the reference does.

Kernel argument order is inputs, scalars, output: the order TensorRT's ahead-of-time plugin
launch uses (inputs, extra scalar arguments, outputs).

The same kernel runs on CPU under Triton's interpreter (``TRITON_INTERPRET=1``), which is how
the tests check it against the reference without a GPU.
"""

from __future__ import annotations

from typing import Any

import triton
import triton.language as tl

BLOCK_N = 32  # keys per tile


@triton.jit
def _tile(q, k_ptrs, v_ptrs, valid, dmask, m_i, l_i, acc):
    """One online-softmax update over a tile of keys: (BLOCK_N, BLOCK_D) keys/values."""
    kmask = valid[:, None] & dmask[None, :]
    k = tl.load(k_ptrs, mask=kmask, other=0.0).to(tl.float32)
    s = tl.sum(k * q[None, :], axis=1)  # (BLOCK_N,)
    s = tl.where(valid, s, -1.0e30)
    m_new = tl.maximum(m_i, tl.max(s, axis=0))
    p = tl.where(valid, tl.exp(s - m_new), 0.0)
    alpha = tl.exp(m_i - m_new)
    v = tl.load(v_ptrs, mask=kmask, other=0.0).to(tl.float32)
    acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
    l_i = l_i * alpha + tl.sum(p, axis=0)
    return m_new, l_i, acc


@triton.jit
def _attend(q_ptr, k_ptr, v_ptr, len_ptr, mk_ptr, mv_ptr, o_ptr, H, S, M, DH,
            MEM_TILES: tl.constexpr, WINDOW: tl.constexpr, CHUNKED: tl.constexpr, CAUSAL: tl.constexpr, LOCAL_TILES: tl.constexpr,
            BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    i = tl.program_id(0)
    bh = tl.program_id(1)
    length = tl.load(len_ptr + bh // H).to(tl.int32)
    d = tl.arange(0, BLOCK_D)
    dmask = d < DH
    base = bh.to(tl.int64) * S * DH
    scale = 1.0 / tl.sqrt(DH.to(tl.float32))
    q = tl.load(q_ptr + base + i * DH + d, mask=dmask, other=0.0).to(tl.float32) * scale
    m_i = tl.full((), -1.0e30, tl.float32)
    l_i = tl.zeros((), tl.float32)
    acc = tl.zeros((BLOCK_D,), tl.float32)
    n = tl.arange(0, BLOCK_N)
    mbase = bh.to(tl.int64) * M * DH
    for t in range(MEM_TILES):  # static trip count: M is fixed per model (the memory size); 0 without memory
        rows = t * BLOCK_N + n
        valid = rows < M
        offs = mbase + rows[:, None] * DH + d[None, :]
        m_i, l_i, acc = _tile(q, mk_ptr + offs, mv_ptr + offs, valid, dmask, m_i, l_i, acc)
    if CHUNKED:
        lo = (i // WINDOW) * WINDOW
        hi = lo + WINDOW - 1
    else:
        lo = i - WINDOW
        hi = i + WINDOW
    if CAUSAL:
        hi = tl.minimum(hi, i)
    hi = tl.minimum(hi, length - 1)
    for t in range(LOCAL_TILES):  # the neighbourhood spans at most LOCAL_TILES tiles
        rows = lo + t * BLOCK_N + n
        valid = (rows >= 0) & (rows <= hi)
        offs = base + rows[:, None] * DH + d[None, :]
        m_i, l_i, acc = _tile(q, k_ptr + offs, v_ptr + offs, valid, dmask, m_i, l_i, acc)
    real = (i < length).to(tl.float32)
    out = acc / tl.maximum(l_i, 1.0e-30) * real
    tl.store(o_ptr + base + i * DH + d, out.to(o_ptr.dtype.element_ty), mask=dmask)


@triton.jit
def lga_kernel(q_ptr, k_ptr, v_ptr, len_ptr, H, S, M, DH, o_ptr,
               MEM_TILES: tl.constexpr, WINDOW: tl.constexpr, CHUNKED: tl.constexpr, CAUSAL: tl.constexpr, LOCAL_TILES: tl.constexpr,
               BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Without memory inputs (M = 0). Grid (S, B·H)."""
    _attend(q_ptr, k_ptr, v_ptr, len_ptr, q_ptr, q_ptr, o_ptr, H, S, M, DH, 0, WINDOW, CHUNKED, CAUSAL, LOCAL_TILES, BLOCK_N, BLOCK_D)


@triton.jit
def lga_mem_kernel(q_ptr, k_ptr, v_ptr, len_ptr, mk_ptr, mv_ptr, H, S, M, DH, o_ptr,
                   MEM_TILES: tl.constexpr, WINDOW: tl.constexpr, CHUNKED: tl.constexpr, CAUSAL: tl.constexpr, LOCAL_TILES: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """With memory keys/values (B, h, M, dh). Grid (S, B·H)."""
    _attend(q_ptr, k_ptr, v_ptr, len_ptr, mk_ptr, mv_ptr, o_ptr, H, S, M, DH, MEM_TILES, WINDOW, CHUNKED, CAUSAL, LOCAL_TILES, BLOCK_N, BLOCK_D)


def block_d(head_dim: int) -> int:
    """Head size rounded up to a power of two (Triton tile widths are powers of two)."""
    return max(16, 1 << (int(head_dim) - 1).bit_length())


def constants(pattern: str, window: int, causal: bool, head_dim: int, memory: int) -> dict[str, Any]:
    """The compile-time parameters: the node's attributes, the memory size and the tile sizes."""
    span = window if pattern == "chunked" else 2 * window + 1  # local keys of one query, at most
    return {"MEM_TILES": -(-int(memory) // BLOCK_N), "WINDOW": int(window), "CHUNKED": pattern == "chunked", "CAUSAL": bool(causal), "LOCAL_TILES": -(-span // BLOCK_N),
            "BLOCK_N": BLOCK_N, "BLOCK_D": block_d(head_dim)}


def launch(q: Any, k: Any, v: Any, lengths: Any, mem_k: Any, mem_v: Any, out: Any, *, pattern: str, window: int, causal: bool) -> None:
    """Run the kernel on torch tensors (CUDA, or CPU under TRITON_INTERPRET=1).
    q, k, v, out (B, h, S, dh) contiguous; lengths (B,) int; mem_k, mem_v (B, h, M, dh) or None."""
    b, h, s, dh = q.shape
    grid = (s, b * h)
    consts = constants(pattern, window, causal, dh, 0 if mem_k is None else mem_k.shape[2])
    if mem_k is None:
        lga_kernel[grid](q, k, v, lengths, h, s, 0, dh, out, **consts)
    else:
        lga_mem_kernel[grid](q, k, v, lengths, mem_k, mem_v, h, s, int(mem_k.shape[2]), dh, out, **consts)


def signature(with_memory: bool, dtype: str) -> dict[str, str]:
    """Triton signature of the kernel for a float type ("fp32" | "fp16")."""
    ptr = f"*{dtype}"
    names = ["q_ptr", "k_ptr", "v_ptr"]
    sig = {n: ptr for n in names}
    sig["len_ptr"] = "*i64"
    if with_memory:
        sig.update({"mk_ptr": ptr, "mv_ptr": ptr})
    sig.update({"H": "i32", "S": "i32", "M": "i32", "DH": "i32", "o_ptr": ptr})
    return sig


def compile_ptx(*, memory: int, dtype: str, pattern: str, window: int, causal: bool, head_dim: int, arch: int) -> tuple[str, str, int, int]:
    """Compile for compute capability ``arch`` (e.g. 89) without needing a GPU (``memory``: M, 0 = no
    memory inputs):
    (kernel name, PTX, threads per block, shared memory bytes)."""
    from triton.backends.compiler import GPUTarget

    fn = lga_mem_kernel if memory else lga_kernel
    sig = signature(bool(memory), dtype)
    consts = constants(pattern, window, causal, head_dim, memory)
    sig.update({k: "constexpr" for k in consts})
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
    compiled = triton.compile(src, target=GPUTarget("cuda", int(arch), 32))
    return compiled.metadata.name, compiled.asm["ptx"], compiled.metadata.num_warps * 32, compiled.metadata.shared


def kernel_arity(with_memory: bool) -> int:
    """Arguments TensorRT passes: inputs, the scalar arguments, the output."""
    return len(signature(with_memory, "fp32"))


def drop_unused_params(ptx: str, kernel: str, keep: int) -> str:
    """Remove the kernel's parameters from index ``keep`` on, provided the code never reads them.

    Triton >= 3.3 appends scratch-buffer pointers to every kernel; TensorRT's ahead-of-time
    launch passes only inputs, scalar arguments and outputs. When the kernel uses no scratch
    memory the extra parameters are dead, and dropping them makes the PTX's signature the one
    TensorRT launches."""
    lines = ptx.splitlines()
    extra = [ln for ln in lines if ln.strip().startswith(".param") and any(ln.rstrip(",").endswith(f"{kernel}_param_{i}") for i in range(keep, keep + 8))]
    for ln in extra:
        name = ln.strip().rstrip(",").split()[-1]
        if any(f"[{name}]" in other or f"[{name}+" in other for other in lines):
            raise ValueError(f"kernel {kernel} reads parameter {name}: it needs Triton's scratch memory, which TensorRT does not pass")
    kept = [ln for ln in lines if ln not in extra]
    # the last kept parameter closes the list: no trailing comma
    params = [i for i, ln in enumerate(kept) if ln.strip().startswith(".param") and f"{kernel}_param_" in ln]
    if params:
        last = params[-1]
        kept[last] = kept[last].rstrip().rstrip(",")
    return "\n".join(kept) + "\n"
