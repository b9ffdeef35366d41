"""AsyMoT joint attention (paper eqs. 4-7), plugged into transformers through its attention interface.

No decoder code is copied. Each brain keeps the stock Qwen decoder layers; only the function that the stock
attention module looks up by ``config._attn_implementation`` changes, and only on the text config:

* ``asymot_left_<backend>``: the stock function of ``<backend>`` (see :func:`stock_backend`), which also records the layer's K/V (after RoPE and
  Qwen3's q/k norm, before grouped-query repetition) into the :class:`AsyMoTContext` of the current forward.
  Without a context it is exactly the stock function, so the Left Brain stays a plain VLM (chat, ``generate``).
  With ``cross_attention: bidirectional`` its queries attend over ``[K_L; sg(K_R)]`` on joint layers.
* ``asymot_right_<backend>``: the Right queries attend over ``[sg(K_L); K_R]`` and ``[sg(V_L); V_R]`` with one
  softmax and the mask of :mod:`.asymot_masks`. Without a context, or on a layer without joint attention
  (``cross_layers: odd``), it is the stock function (Right Brain alone).

The context travels as the ``asymot_context`` keyword, which transformers forwards from the model call down to
every attention call. It is explicit (no global state), and gradient-checkpoint recomputation sees the same
context as the first pass.

Shapes: B batch, L_l / L_r Left / Right tokens, n_q / n_kv query / key-value heads, d head dim.
"""

from __future__ import annotations

import functools
import logging
import sys
import warnings
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from .asymot_masks import VarlenIndex, joint_attention_mask, joint_block_mask, left_query_mask, varlen_index
from .config import OptionError

logger = logging.getLogger(__name__)

Backend = Literal["eager", "sdpa", "flash_attention_2", "flex_attention"]
BACKENDS: tuple[str, ...] = ("eager", "sdpa", "flash_attention_2", "flex_attention")
CONTEXT_KWARG = "asymot_context"

# A varlen kernel with flash-attn's signature:
# kernel(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=, softmax_scale=, causal=)
VarlenKernel = Callable[..., torch.Tensor]


class LeftKeysValuesComplete(Exception):
    """Raised by the Left's attention once its last needed layer's K/V are recorded (see ``stop_after_layer``).

    Everything the Left would compute after that point (that layer's attention output and MLP, the final norm)
    reaches nothing the Right uses, so the Left forward ends there. The caller catches it.
    """


class AsyMoTContext:
    """State of one twin-brain forward: the Left's per-layer K/V and the joint masks, built once.

    Args:
        left_valid: ``bool[B, L_l]``, True for real Left tokens.
        right_valid: ``bool[B, L_r]``, True for real Right tokens.
        backend: the joint-attention backend of the Right pass.
        stop_after_layer: the Left's last text layer; once its K/V are recorded the Left forward stops by raising
            :class:`LeftKeysValuesComplete`. ``None``: the Left runs to the end (its outputs stay usable).
        joint_layers: the text layers with joint attention (``framework.twinbrain.cross_layers``); ``None``: all.
            On the others each brain runs its stock attention over its own tokens (the model passes the Right the
            stock mask then), and nothing is recorded.
        bidirectional: ``cross_attention: bidirectional``: on joint layers the Left queries also attend over
            ``[K_L; K_R]`` (mask :func:`.asymot_masks.left_query_mask`). The Right's K/V are recorded for them and
            ``advance_left`` (set by the backbone) runs the Left up to the layer the Right needs next.
        left_trainable: ``framework.twinbrain.left_trainable``: the K/V passed between the brains keep their
            gradient (the Left learns through the Right's loss); otherwise they are detached (``sg``).
    """

    def __init__(self, left_valid: torch.Tensor, right_valid: torch.Tensor, backend: Backend,
                 stop_after_layer: int | None = None, *, joint_layers=None, bidirectional: bool = False,
                 left_trainable: bool = False):
        if backend not in BACKENDS:
            raise ValueError(f"unknown AsyMoT backend {backend!r}: expected one of {' | '.join(BACKENDS)}")
        self.left_valid = left_valid.bool()
        self.right_valid = right_valid.bool()
        self.backend = backend
        self.stop_after_layer = stop_after_layer
        self.joint_layers = None if joint_layers is None else frozenset(joint_layers)
        self.bidirectional = bidirectional
        self.left_trainable = left_trainable
        self.advance_left: Callable[[int], None] | None = None
        self.left_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.right_kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._mask: torch.Tensor | None = None
        self._grouped: dict[int, torch.Tensor] = {}
        self._left_mask: torch.Tensor | None = None
        self._left_grouped: dict[int, torch.Tensor] = {}
        self._varlen: VarlenIndex | None = None
        self._block_mask = None

    def joint_at(self, layer_idx: int) -> bool:
        return self.joint_layers is None or layer_idx in self.joint_layers

    def _kept(self, valid: torch.Tensor, key: torch.Tensor, value: torch.Tensor):
        # Padding rows of the stock Left can hold anything (even NaN from fully masked queries); a masked key has
        # weight 0, but 0 * NaN is NaN, so padding K/V are zeroed before they can meet the other brain's softmax.
        keep = valid[:, None, :, None].to(key.device)
        if not self.left_trainable:
            key, value = key.detach(), value.detach()
        return key.masked_fill(~keep, 0), value.masked_fill(~keep, 0)

    def record(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.left_kv[layer_idx] = self._kept(self.left_valid, key, value)

    def record_right(self, layer_idx: int, key: torch.Tensor, value: torch.Tensor) -> None:
        self.right_kv[layer_idx] = self._kept(self.right_valid, key, value)

    def left_kv_for(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx not in self.left_kv and self.advance_left is not None:
            self.advance_left(layer_idx)
        try:
            return self.left_kv[layer_idx]
        except KeyError:
            raise RuntimeError(
                f"AsyMoT: no Left keys/values recorded for text layer {layer_idx}; the Left Brain must run first, "
                f"with the same {CONTEXT_KWARG}, and have as many layers as the Right Brain"
            ) from None

    def right_kv_for(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            return self.right_kv[layer_idx]
        except KeyError:
            raise RuntimeError(
                f"AsyMoT (bidirectional): no Right keys/values recorded for text layer {layer_idx}; the Left must "
                f"be advanced from the Right's attention (AsyMoTContext.advance_left)"
            ) from None

    @property
    def left_mask(self) -> torch.Tensor:
        """Bidirectional: ``bool[B, 1, L_l, L_l + L_r]``, the Left queries' mask; shared by all joint layers."""
        if self._left_mask is None:
            self._left_mask = left_query_mask(self.left_valid, self.right_valid)
        return self._left_mask

    def grouped_left_mask(self, n_rep: int) -> torch.Tensor:
        if n_rep not in self._left_grouped:
            self._left_grouped[n_rep] = group_query_mask(self.left_mask, n_rep)
        return self._left_grouped[n_rep]

    @property
    def joint_mask(self) -> torch.Tensor:
        """``bool[B, 1, L_r, L_l + L_r]``, True = may attend; shared by all layers."""
        if self._mask is None:
            self._mask = joint_attention_mask(self.left_valid, self.right_valid)
        return self._mask

    def grouped_joint_mask(self, n_rep: int) -> torch.Tensor:
        """The joint mask in :func:`joint_attention_sdpa`'s grouped-query layout ``bool[B, 1, n_rep * L_r, L]``,
        built once per forward rather than in every layer."""
        if n_rep not in self._grouped:
            self._grouped[n_rep] = group_query_mask(self.joint_mask, n_rep)
        return self._grouped[n_rep]

    @property
    def varlen(self) -> VarlenIndex:
        if self._varlen is None:
            self._varlen = varlen_index(self.left_valid, self.right_valid)
        return self._varlen

    @property
    def block_mask(self):
        """The FlexAttention ``BlockMask`` of the joint mask: one per forward, shared by all layers."""
        if self._block_mask is None:
            self._block_mask = joint_block_mask(self.left_valid, self.right_valid)
        return self._block_mask


# ----------------------------------------------------------------------------------------------------------
# Joint attention kernels. Inputs: q [B, n_q, L_r, d]; k_l, v_l [B, n_kv, L_l, d]; k_r, v_r [B, n_kv, L_r, d].
# Output: [B, L_r, n_q, d] (the layout transformers' attention functions return).
# ----------------------------------------------------------------------------------------------------------


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    if n_rep == 1:
        return x
    b, n_kv, length, d = x.shape
    return x[:, :, None].expand(b, n_kv, n_rep, length, d).reshape(b, n_kv * n_rep, length, d)


def joint_attention_eager(
    query: torch.Tensor,
    key_left: torch.Tensor,
    value_left: torch.Tensor,
    key_right: torch.Tensor,
    value_right: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: explicit scores, one softmax (in fp32) over ``[K_L; K_R]``. Returns (output, probabilities)."""
    n_rep = query.shape[1] // key_right.shape[1]
    key = _repeat_kv(torch.cat([key_left, key_right], dim=2), n_rep)
    value = _repeat_kv(torch.cat([value_left, value_right], dim=2), n_rep)
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=dropout > 0)
    return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs


def group_query_mask(mask: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``[B, 1, L_r, L]`` → ``[B, 1, n_rep * L_r, L]``: one copy of the query rows per query head of a K/V group."""
    return mask.repeat(1, 1, n_rep, 1) if n_rep > 1 else mask


def joint_attention_sdpa(
    query: torch.Tensor,
    key_left: torch.Tensor,
    value_left: torch.Tensor,
    key_right: torch.Tensor,
    value_right: torch.Tensor,
    mask: torch.Tensor,
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` with the boolean joint mask (no float mask).

    GQA without repeating K/V: the ``n_rep`` query heads that share a key/value head are stacked along the query
    axis (``[B, H_kv, n_rep * L_r, D]``), so each K/V head is read once and never copied ``n_rep`` times. Same
    numbers as repeating K/V; less memory, and faster on CPU.
    """
    batch, n_q, l_right, head_dim = query.shape
    n_kv = key_right.shape[1]
    n_rep = n_q // n_kv
    key = torch.cat([key_left, key_right], dim=2)
    value = torch.cat([value_left, value_right], dim=2)
    grouped = query.reshape(batch, n_kv, n_rep * l_right, head_dim)  # head h uses K/V head h // n_rep
    if mask.shape[-2] != n_rep * l_right:  # the plain joint mask; the model passes it grouped already
        mask = group_query_mask(mask, n_rep)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling)
    return out.reshape(batch, n_q, l_right, head_dim).transpose(1, 2).contiguous()


def joint_attention_varlen(
    query: torch.Tensor,
    key_left: torch.Tensor,
    value_left: torch.Tensor,
    key_right: torch.Tensor,
    value_right: torch.Tensor,
    index: VarlenIndex,
    scaling: float,
    dropout: float = 0.0,
    kernel: VarlenKernel | None = None,
) -> torch.Tensor:
    """Packed valid tokens through a varlen kernel with bottom-right causal alignment (flash-attn >= 2.1).

    Per sample the keys are ``[valid Left; valid Right]`` and the queries the valid Right tokens, so bottom-right
    causality lets Right query ``i`` see every valid Left key and the valid Right keys up to ``i``. GQA is left to
    the kernel. Padding query rows come back as zeros.
    """
    kernel = kernel or _flash_varlen_kernel()
    batch, n_q, l_right, head_dim = query.shape
    n_kv = key_right.shape[1]
    q = query.transpose(1, 2).reshape(batch * l_right, n_q, head_dim).index_select(0, index.query_index)
    k = torch.cat([key_left, key_right], dim=2).transpose(1, 2).reshape(-1, n_kv, head_dim)
    v = torch.cat([value_left, value_right], dim=2).transpose(1, 2).reshape(-1, n_kv, head_dim)
    k, v = k.index_select(0, index.key_index), v.index_select(0, index.key_index)
    out = kernel(
        q, k, v, index.cu_seqlens_q, index.cu_seqlens_k, index.max_seqlen_q, index.max_seqlen_k,
        dropout_p=dropout, softmax_scale=scaling, causal=True,
    )
    full = out.new_zeros(batch * l_right, n_q, head_dim).index_copy(0, index.query_index, out)
    return full.view(batch, l_right, n_q, head_dim)


def joint_attention_flex(
    query: torch.Tensor,
    key_left: torch.Tensor,
    value_left: torch.Tensor,
    key_right: torch.Tensor,
    value_right: torch.Tensor,
    block_mask,
    scaling: float,
    dropout: float = 0.0,
) -> torch.Tensor:
    """PyTorch's FlexAttention over ``[K_L; K_R]`` with the joint ``BlockMask`` (:func:`.asymot_masks.joint_block_mask`).

    Blocks that no query may see are skipped, never computed and masked. GQA through ``enable_gqa`` (each K/V head
    read once). Compiled on GPUs; on CPU the unfused forward runs (inference only: FlexAttention has no CPU backward).
    """
    if dropout:
        raise ValueError(f"the flex_attention joint backend has no attention dropout (got dropout={dropout})")
    if query.device.type == "cpu" and torch.is_grad_enabled() and (
        query.requires_grad or key_right.requires_grad or value_right.requires_grad
    ):
        raise NotImplementedError(
            f"attn_implementation='flex_attention': FlexAttention has no backward pass on CPU "
            f"(torch {torch.__version__}); train on CPU with 'sdpa'. On CPU flex_attention serves inference only."
        )
    key = torch.cat([key_left, key_right], dim=2)
    value = torch.cat([value_left, value_right], dim=2)
    out = _flex_kernel(query.device.type)(
        query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=query.shape[1] != key.shape[1]
    )
    return out.transpose(1, 2).contiguous()


def flex_attention_available() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _flex_kernel(device_type: str) -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cpu":
        return torch.compile(flex_attention)  # the fused kernel exists only compiled

    def unfused(*args, **kwargs):  # on CPU by choice: compiling costs more than it saves at CPU sizes
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(*args, **kwargs)

    return unfused


def flash_attn_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _flash_varlen_kernel() -> VarlenKernel:
    from flash_attn import flash_attn_varlen_func

    return flash_attn_varlen_func


# ----------------------------------------------------------------------------------------------------------
# The functions registered with transformers.
# ----------------------------------------------------------------------------------------------------------


def stock_backend(backend: Backend) -> str:
    """The stock transformers implementation used where no joint attention runs: the Left, the Right on its own,
    and both vision towers. flex_attention's gain is the joint mask in one kernel; elsewhere sdpa serves (the
    stock flex path would build and compile a block mask per call for plain causal or vision attention)."""
    return "sdpa" if backend == "flex_attention" else backend


def stock_attention_function(backend: Backend, module: torch.nn.Module) -> Callable:
    """The function the unpatched model would call for ``backend`` (eager lives in each modeling file)."""
    backend = stock_backend(backend)
    if backend == "eager":
        return sys.modules[type(module).__module__].eager_attention_forward
    return ALL_ATTENTION_FUNCTIONS[backend]


def _left_attention(backend: Backend) -> Callable:
    def left_attention(module, query, key, value, attention_mask, **kwargs):
        context: AsyMoTContext | None = kwargs.pop(CONTEXT_KWARG, None)
        if context is not None and context.joint_at(module.layer_idx):
            context.record(module.layer_idx, key, value)
            if module.layer_idx == context.stop_after_layer:
                raise LeftKeysValuesComplete
            if context.bidirectional:
                return left_joint_attention(module, query, context, kwargs.get("dropout", 0.0), kwargs.get("scaling"))
        return stock_attention_function(backend, module)(module, query, key, value, attention_mask, **kwargs)

    left_attention.__name__ = f"asymot_left_{backend}"
    return left_attention


def left_joint_attention(module, query: torch.Tensor, context: AsyMoTContext, dropout: float = 0.0,
                         scaling: float | None = None):
    """``cross_attention: bidirectional``: the Left queries over ``[K_L; K_R]`` (the Right's K/V of the same layer,
    recorded by the Right's attention just before) with :func:`.asymot_masks.left_query_mask`. Eager for the eager
    backend, else sdpa: the Left's side is small next to the Right's and, frozen, needs no backward."""
    layer = module.layer_idx
    scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
    key_left, value_left = context.left_kv[layer]  # padding rows zeroed, like the Right's
    key_right, value_right = context.right_kv_for(layer)
    key_right, value_right = key_right.to(key_left.dtype), value_right.to(value_left.dtype)
    if context.backend == "eager":
        return joint_attention_eager(query, key_left, value_left, key_right, value_right, context.left_mask,
                                     scaling, dropout)
    mask = context.grouped_left_mask(query.shape[1] // key_left.shape[1])
    return joint_attention_sdpa(query, key_left, value_left, key_right, value_right, mask, scaling, dropout), None


def _right_attention(backend: Backend) -> Callable:
    def right_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        context: AsyMoTContext | None = kwargs.pop(CONTEXT_KWARG, None)
        if context is None or not context.joint_at(module.layer_idx):
            # The Right Brain on its own (the whole forward, or a layer without joint attention): stock causal
            # self-attention with the stock mask.
            return stock_attention_function(backend, module)(
                module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        scaling = scaling if scaling is not None else query.shape[-1] ** -0.5
        if context.bidirectional:  # before the Left is advanced to this layer: its queries need these K/V
            context.record_right(module.layer_idx, key, value)
        key_left, value_left = context.left_kv_for(module.layer_idx)
        key_left, value_left = key_left.to(key.dtype), value_left.to(value.dtype)
        if context.backend == "eager":
            return joint_attention_eager(
                query, key_left, value_left, key, value, context.joint_mask, scaling, dropout
            )
        if context.backend == "sdpa":
            mask = context.grouped_joint_mask(query.shape[1] // key.shape[1])
            out = joint_attention_sdpa(query, key_left, value_left, key, value, mask, scaling, dropout)
        elif context.backend == "flex_attention":
            out = joint_attention_flex(query, key_left, value_left, key, value, context.block_mask, scaling, dropout)
        else:
            out = joint_attention_varlen(query, key_left, value_left, key, value, context.varlen, scaling, dropout)
        return out, None

    right_attention.__name__ = f"asymot_right_{backend}"
    return right_attention


def left_implementation(backend: Backend) -> str:
    return f"asymot_left_{backend}"


def right_implementation(backend: Backend) -> str:
    return f"asymot_right_{backend}"


def register_asymot_attention() -> None:
    """Register the Left/Right functions and their mask builders (the stock ones) for every backend. Idempotent."""
    for backend in BACKENDS:
        mask_builder = ALL_MASK_ATTENTION_FUNCTIONS[stock_backend(backend)]
        for name, make in ((left_implementation(backend), _left_attention), (right_implementation(backend), _right_attention)):
            if name not in ALL_ATTENTION_FUNCTIONS:
                AttentionInterface.register(name, make(backend))
            # Without a registered mask builder transformers passes attention_mask=None to the function.
            AttentionMaskInterface.register(name, mask_builder)


def default_backend(device: torch.device | str, dtype: torch.dtype | None = None) -> Backend:
    """flash_attention_2 on a CUDA device with flash-attn and fp16/bf16 weights, else sdpa.

    flex_attention is not the default on CUDA until the GPU check (scripts/gpu_check.sh) has shown it faster than
    sdpa there; it is chosen only when requested.
    """
    return "flash_attention_2" if unusable_reason("flash_attention_2", device, dtype) is None else "sdpa"


def unusable_reason(backend: Backend, device: torch.device | str, dtype: torch.dtype | None = None) -> str | None:
    """Why ``backend`` cannot run on ``device`` with ``dtype`` weights, or None when it can."""
    device = torch.device(device)
    if backend == "flash_attention_2":
        if not flash_attn_available():
            return "flash-attn is not installed or no CUDA device is present"
        if device.type != "cuda":
            return f"flash-attn runs on CUDA devices only, the model is on {device.type}"
        if dtype not in (None, torch.float16, torch.bfloat16):
            return f"flash-attn needs fp16/bf16 weights, got {dtype}"
    if backend == "flex_attention":
        if not flex_attention_available():
            return f"torch {torch.__version__} has no torch.nn.attention.flex_attention"
        if device.type not in ("cuda", "cpu", "xpu"):
            return f"FlexAttention does not run on {device.type}"
    return None


def resolve_backend(requested: str | None, device: torch.device | str, dtype: torch.dtype | None = None) -> Backend:
    """The joint-attention backend for a model whose parameters are on ``device`` in ``dtype``.

    ``None`` means :func:`default_backend`. A requested backend that cannot run there falls back to the default,
    with one warning naming the reason.
    """
    if requested is not None and requested not in BACKENDS:
        raise OptionError(
            "attn_implementation", f"={requested!r}: expected one of {' | '.join(BACKENDS)}"
        )
    default = default_backend(device, dtype)
    if requested is None:
        return default
    reason = unusable_reason(requested, device, dtype)  # type: ignore[arg-type]
    if reason:
        message = f"attn_implementation={requested!r} unavailable ({reason}); using {default!r}"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        logger.warning(message)
        return default
    return requested  # type: ignore[return-value]


register_asymot_attention()
