"""The pure tensor math of the align losses: no state, no parameters, no config.

Two pairwise contrastive losses over N (visual, text) pairs, both on
L2-normalised rows:

- :func:`info_nce` — the symmetric InfoNCE of SEA's Eq. 9 (CLIP's loss);
- :func:`sigmoid_pairwise` — SigLIP's pairwise sigmoid loss.

Both take the logit multiplier ``scale`` = s = 1/τ itself (not its log; the
modules in this package own the learnable log-scale and its clamp) and have two
paths with the same value and gradients:

- ``chunk_size=None``: the full (N, N) logits matrix through plain autograd;
- ``chunk_size=<int>``: row blocks of ``chunk_size`` rows through a custom
  ``autograd.Function`` that keeps only O(N·E) tensors between forward and
  backward and recomputes each (chunk, N) block in backward, so peak memory
  is O(chunk·N) instead of several (N, N) copies (5.4 GB each at N = 36,864);
- ``chunk_size='auto'``: blocks of about 2**26 logits (256 MiB in fp32), the
  full path when the whole matrix is that small.

The math runs in at least float32 with autocast disabled (float64 inputs stay
float64), so a bf16 model still gets an fp32 loss.
"""

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from alignkit.utils.validate import check_int

ChunkSize = int | str | None  # None, 'auto' or a positive int

# 'auto' aims at blocks of this many logits: 256 MiB of fp32 per (chunk, N)
# block, a few of which live at once in backward.
AUTO_BLOCK_ELEMENTS = 2**26

__all__ = [
    "AUTO_BLOCK_ELEMENTS",
    "autocast_off",
    "check_chunk_size",
    "info_nce",
    "l2_normalize",
    "resolve_chunk_size",
    "sigmoid_pairwise",
]


def autocast_off(device_type: str):
    """A context in which autocast is disabled for ``device_type`` (no-op where autocast is unknown)."""
    try:
        return torch.autocast(device_type=device_type, enabled=False)
    except RuntimeError:  # a device type autocast does not support: nothing to disable
        return contextlib.nullcontext()


def l2_normalize(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Rows of ``x`` divided by ``max(‖row‖, eps)``; a zero row stays zero.

    Written as ``x * rsqrt(max(‖x‖², eps²))`` so that a zero row has finite
    gradients: the clamp passes no gradient below eps², and d‖x‖²/dx = 2x is 0
    there, so nothing divides by zero (a norm's own backward does 0/0 at 0).
    Near zero the gradient is about 1/eps, hence eps = 1e-6 rather than 1e-12.
    """
    sq = (x * x).sum(dim=-1, keepdim=True)  # (N, 1)
    return x * torch.rsqrt(sq.clamp_min(eps * eps))


def check_chunk_size(chunk_size: ChunkSize) -> ChunkSize:
    """Validate a ``chunk_size`` argument: None, 'auto' or a positive int."""
    if chunk_size is None or chunk_size == "auto":
        return chunk_size
    return check_int("chunk_size (or None, 'auto')", chunk_size, low=1)


def resolve_chunk_size(chunk_size: ChunkSize, n: int) -> int | None:
    """The block height to use for N = ``n`` pairs, or None for the full path."""
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size == "auto":
        chunk_size = max(1, AUTO_BLOCK_ELEMENTS // max(n, 1))
    if chunk_size is None or chunk_size >= n:
        return None
    return chunk_size


def _check_pair(visual: Tensor, text: Tensor) -> None:
    for name, x in (("visual", visual), ("text", text)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (N, E), got {type(x).__name__}")
        if x.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor of shape (N, E), got shape {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"{name} must be floating point, got dtype {x.dtype} (shape {tuple(x.shape)})")
    if visual.shape != text.shape:
        raise ValueError(
            "visual and text must have the same shape (N, E), one row per pair, "
            f"got visual {tuple(visual.shape)} and text {tuple(text.shape)}"
        )


def _as_scalar(name: str, value: float | Tensor, like: Tensor) -> Tensor:
    """A 0-dim tensor of the compute dtype on ``like``'s device, keeping ``value``'s graph."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        return value.reshape(()).to(device=like.device, dtype=like.dtype)
    return torch.tensor(float(value), device=like.device, dtype=like.dtype)


def _check_finite(**tensors: Tensor) -> None:
    # One device sync for all of them; find the culprit only on failure.
    if bool(torch.stack([torch.isfinite(t).all() for t in tensors.values()]).all()):
        return
    for name, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or inf (shape {tuple(t.shape)})")


def _prepare(visual: Tensor, text: Tensor, **scalars: float | Tensor):
    """Validate, upcast to >= fp32, and turn the scalars into 0-dim tensors."""
    _check_pair(visual, text)
    dtype = torch.promote_types(torch.promote_types(visual.dtype, text.dtype), torch.float32)
    visual, text = visual.to(dtype), text.to(dtype)  # a new tensor when it casts; never written to
    scalars = {name: _as_scalar(name, v, visual) for name, v in scalars.items()}
    _check_finite(visual=visual, text=text, **scalars)
    return visual, text, scalars


def _empty_loss(visual: Tensor, text: Tensor, *scalars: Tensor) -> Tensor:
    """A zero that depends on every input, so ``.backward()`` works for N = 0."""
    zero = visual.sum() * 0 + text.sum() * 0  # sums of empty tensors are 0
    for s in scalars:
        zero = zero + s * 0
    return zero


def _blocks(n: int, chunk: int):
    for r0 in range(0, n, chunk):
        yield r0, min(r0 + chunk, n)


# ----------------------------------------------------------------------------- InfoNCE


def info_nce(
    visual: Tensor,
    text: Tensor,
    scale: float | Tensor,
    chunk_size: ChunkSize = None,
    eps: float = 1e-6,
) -> Tensor:
    """Symmetric InfoNCE (SEA Eq. 9) over N pairs.

    ``L = −1/(2N) Σ_i [log softmax_j(s·cos(x_i, t_j))_i + log softmax_j(s·cos(t_i, x_j))_i]``

    Args:
        visual: ``(N, E)`` visual tokens x (any float dtype; not normalised yet).
        text: ``(N, E)`` text embeddings t, row i paired with ``visual[i]``.
        scale: the logit multiplier s = 1/τ (a float or a 0-dim tensor that may
            carry a graph). s = 0 makes every logit equal, so the loss is log N.
        chunk_size: None (full N×N matrix), a positive int (row blocks, O(chunk·N)
            memory, same value and gradients) or 'auto'.
        eps: rows are divided by ``max(‖row‖, eps)`` (zero rows stay finite).

    Returns:
        A 0-dim tensor in ``promote(dtype, float32)``; 0 (with a graph) for N = 0.
    """
    visual, text, sc = _prepare(visual, text, scale=scale)
    scale = sc["scale"]
    n = visual.shape[0]
    with autocast_off(visual.device.type):
        if n == 0:
            return _empty_loss(visual, text, scale)
        x, t = l2_normalize(visual, eps), l2_normalize(text, eps)  # (N, E) each
        chunk = resolve_chunk_size(chunk_size, n)
        if chunk is not None:
            return _ChunkedInfoNCE.apply(x, t, scale, chunk)
        logits = scale * (x @ t.T)  # (N, N): row i = x_i against every t_j
        target = torch.arange(n, device=x.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


class _ChunkedInfoNCE(torch.autograd.Function):
    """InfoNCE from (chunk, N) row blocks; saves x, t and two (N,) log-sum-exps.

    Forward: each block gives its rows' log-sum-exp in full and a partial
    column log-sum-exp, folded into a running one with logaddexp.
    Backward: dL/dlogit_ij = (softmax_row_ij + softmax_col_ij) / 2N − [i = j] / N,
    rebuilt block by block from the saved log-sum-exps.
    """

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, scale: Tensor, chunk: int) -> Tensor:
        n = x.shape[0]
        row_lse = x.new_empty(n)
        col_lse = x.new_full((n,), -math.inf)
        diag = x.new_zeros(())
        for r0, r1 in _blocks(n, chunk):
            logits = scale * (x[r0:r1] @ t.T)  # (c, N)
            row_lse[r0:r1] = torch.logsumexp(logits, dim=1)
            col_lse = torch.logaddexp(col_lse, torch.logsumexp(logits, dim=0))
            diag = diag + logits.diagonal(r0).sum()  # the positives of rows r0..r1
        ctx.save_for_backward(x, t, scale, row_lse, col_lse)
        ctx.chunk = chunk
        return 0.5 * (row_lse.sum() + col_lse.sum()) / n - diag / n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, t, scale, row_lse, col_lse = ctx.saved_tensors
        need_x, need_t, need_s, _ = ctx.needs_input_grad
        n = x.shape[0]
        w = grad_out / n
        gx = torch.empty_like(x) if need_x else None
        gt = torch.zeros_like(t) if need_t else None
        gs = torch.zeros_like(scale)
        for r0, r1 in _blocks(n, ctx.chunk):
            cos = x[r0:r1] @ t.T  # (c, N)
            logits = cos * scale
            grad = (logits - row_lse[r0:r1, None]).exp_()  # row softmax
            grad.add_((logits - col_lse[None, :]).exp_())  # + column softmax
            del logits
            grad.mul_(0.5 * w)
            grad.diagonal(r0).sub_(w)  # dL/dlogits for this block
            if need_s:
                gs += (grad * cos).sum()
            del cos
            grad.mul_(scale)  # dL/dcos
            if need_x:
                gx[r0:r1] = grad @ t
            if need_t:
                gt.addmm_(grad.T, x[r0:r1])
        return gx, gt, (gs if need_s else None), None


# ----------------------------------------------------------------------------- sigmoid


def sigmoid_pairwise(
    visual: Tensor,
    text: Tensor,
    scale: float | Tensor,
    bias: float | Tensor,
    chunk_size: ChunkSize = None,
    eps: float = 1e-6,
) -> Tensor:
    """SigLIP's pairwise sigmoid loss over N pairs.

    ``logit_ij = s·cos(x_i, t_j) + b``, label ``y_ij = +1`` if i = j else −1,
    ``L = −(1/N) Σ_ij log σ(y_ij · logit_ij)``: every one of the N² pairs is an
    independent binary problem, summed and divided by N (the batch size), as
    in SigLIP (Zhai et al. 2023) and open_clip's ``SigLipLoss``.

    Args:
        visual, text: ``(N, E)``, row i of one paired with row i of the other.
        scale: the multiplier s (float or 0-dim tensor). bias: b, likewise.
        chunk_size: None, a positive int or 'auto', as in :func:`info_nce`.
        eps: normalisation floor, as in :func:`info_nce`.

    Returns:
        A 0-dim tensor in ``promote(dtype, float32)``; 0 (with a graph) for N = 0.
    """
    visual, text, sc = _prepare(visual, text, scale=scale, bias=bias)
    scale, bias = sc["scale"], sc["bias"]
    n = visual.shape[0]
    with autocast_off(visual.device.type):
        if n == 0:
            return _empty_loss(visual, text, scale, bias)
        x, t = l2_normalize(visual, eps), l2_normalize(text, eps)  # (N, E) each
        chunk = resolve_chunk_size(chunk_size, n)
        if chunk is not None:
            return _ChunkedSigmoid.apply(x, t, scale, bias, chunk)
        logits = scale * (x @ t.T) + bias  # (N, N)
        labels = 2 * torch.eye(n, device=x.device, dtype=x.dtype) - 1  # +1 diagonal, -1 elsewhere
        return -F.logsigmoid(labels * logits).sum() / n


class _ChunkedSigmoid(torch.autograd.Function):
    """The sigmoid loss from (chunk, N) row blocks; saves only x and t.

    With m = y·logit, each term is −log σ(m), whose derivative in the logit
    is −y·σ(−m): σ(logit) off the diagonal, −σ(−logit) on it.
    """

    @staticmethod
    def _margins(x_blk: Tensor, t: Tensor, scale: Tensor, bias: Tensor, r0: int):
        cos = x_blk @ t.T  # (c, N)
        m = cos * (-scale) - bias  # y = -1 off the diagonal
        m.diagonal(r0).neg_()  # y = +1 for the block's own pairs
        return cos, m

    @staticmethod
    def forward(ctx, x: Tensor, t: Tensor, scale: Tensor, bias: Tensor, chunk: int) -> Tensor:
        n = x.shape[0]
        total = x.new_zeros(())
        for r0, r1 in _blocks(n, chunk):
            _, m = _ChunkedSigmoid._margins(x[r0:r1], t, scale, bias, r0)
            total = total - F.logsigmoid(m).sum()
        ctx.save_for_backward(x, t, scale, bias)
        ctx.chunk = chunk
        return total / n

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor):
        x, t, scale, bias = ctx.saved_tensors
        need_x, need_t, need_s, need_b, _ = ctx.needs_input_grad
        n = x.shape[0]
        w = grad_out / n
        gx = torch.empty_like(x) if need_x else None
        gt = torch.zeros_like(t) if need_t else None
        gs = torch.zeros_like(scale)
        gb = torch.zeros_like(bias)
        for r0, r1 in _blocks(n, ctx.chunk):
            cos, m = _ChunkedSigmoid._margins(x[r0:r1], t, scale, bias, r0)
            grad = m.neg_().sigmoid_()  # σ(−m)
            grad.diagonal(r0).neg_()  # × (−y)
            grad.mul_(w)  # dL/dlogits for this block
            if need_s:
                gs += (grad * cos).sum()
            if need_b:
                gb += grad.sum()
            del cos
            grad.mul_(scale)  # dL/dcos
            if need_x:
                gx[r0:r1] = grad @ t
            if need_t:
                gt.addmm_(grad.T, x[r0:r1])
        return gx, gt, (gs if need_s else None), (gb if need_b else None), None
