"""Masks of AsyMoT joint attention (DESIGN §2), built once per forward and shared by every layer.

Polarity everywhere: ``True`` = may attend / is a real token.

For Right query ``i`` of sample ``b`` the visible keys of ``[K_L; K_R]`` are
  * every valid Left token ``j``                       (``left_valid[b, j]``),
  * every Right token ``j <= i`` that is valid         (``right_valid[b, j]``),
  * and the query itself, so that a padding query row is never empty (no NaN; its output is ignored).

Example, L_l = 3 with one Left pad in front, L_r = 3 with one Right pad in front::

    left_valid  = [0, 1, 1]     right_valid = [0, 1, 1]
                  L0 L1 L2 | R0 R1 R2
    query R0:   [ 0, 1, 1,   1, 0, 0 ]   (padding row: itself only on the Right)
    query R1:   [ 0, 1, 1,   0, 1, 0 ]
    query R2:   [ 0, 1, 1,   0, 1, 1 ]
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_padding_mask(name: str, mask: torch.Tensor) -> torch.Tensor:
    if mask.ndim != 2:
        raise ValueError(f"{name} must be a [B, L] padding mask, got shape {tuple(mask.shape)}")
    return mask.bool()


def joint_attention_mask(left_valid: torch.Tensor, right_valid: torch.Tensor) -> torch.Tensor:
    """Boolean mask ``[B, 1, L_r, L_l + L_r]`` of the Right queries over ``[K_L; K_R]``.

    Args:
        left_valid: ``bool[B, L_l]``, True for real (non-padding) Left tokens.
        right_valid: ``bool[B, L_r]``, True for real Right tokens.
    """
    left_valid = _check_padding_mask("left_valid", left_valid)
    right_valid = _check_padding_mask("right_valid", right_valid)
    if left_valid.shape[0] != right_valid.shape[0]:
        raise ValueError(f"batch sizes differ: Left {left_valid.shape[0]} vs Right {right_valid.shape[0]}")
    batch, l_right = right_valid.shape
    left_part = left_valid[:, None, :].expand(batch, l_right, left_valid.shape[1])  # [B, L_r, L_l]
    return torch.cat([left_part, _causal_part(right_valid)], dim=-1)[:, None]


def _causal_part(valid: torch.Tensor) -> torch.Tensor:
    """``bool[B, L, L]``: query i sees its own brain's valid keys j <= i, and itself."""
    idx = torch.arange(valid.shape[1], device=valid.device)
    causal = idx[None, :] <= idx[:, None]  # key j <= query i
    diagonal = idx[None, :] == idx[:, None]
    return causal[None] & (valid[:, None, :] | diagonal[None])


def left_query_mask(left_valid: torch.Tensor, right_valid: torch.Tensor) -> torch.Tensor:
    """``cross_attention: bidirectional``: the Left queries' mask ``bool[B, 1, L_l, L_l + L_r]`` over ``[K_L; K_R]``.

    The mirror of :func:`joint_attention_mask`: Left query ``i`` sees its own valid tokens ``j <= i`` (and itself)
    and every valid Right token. The two prompts are parallel sequences, not one, so neither brain's order applies
    to the other's tokens (the released code's Left sees every Right token too, padding included).
    """
    left_valid = _check_padding_mask("left_valid", left_valid)
    right_valid = _check_padding_mask("right_valid", right_valid)
    if left_valid.shape[0] != right_valid.shape[0]:
        raise ValueError(f"batch sizes differ: Left {left_valid.shape[0]} vs Right {right_valid.shape[0]}")
    right_part = right_valid[:, None, :].expand(left_valid.shape[0], left_valid.shape[1], right_valid.shape[1])
    return torch.cat([_causal_part(left_valid), right_part], dim=-1)[:, None]


def joint_mask_mod(left_valid: torch.Tensor, right_valid: torch.Tensor):
    """The joint mask as a FlexAttention ``mask_mod(b, h, q_idx, kv_idx) -> bool`` over ``[K_L; K_R]``.

    The same rule as :func:`joint_attention_mask`: key ``kv`` is visible to Right query ``q`` when it is valid and
    is a Left key or a Right key at or before ``q``; a query always sees itself.
    """
    left_valid = _check_padding_mask("left_valid", left_valid)
    right_valid = _check_padding_mask("right_valid", right_valid)
    # A tensor, not an int: the compiled kernel then does not specialise (and recompile) on each Left length.
    l_left = torch.tensor(left_valid.shape[1], device=left_valid.device)
    key_valid = torch.cat([left_valid, right_valid], dim=1)  # [B, L_l + L_r]

    def visible(b, h, q_idx, kv_idx):
        right_pos = kv_idx - l_left  # negative for Left keys
        return (key_valid[b, kv_idx] & (right_pos <= q_idx)) | (right_pos == q_idx)

    return visible


def joint_block_mask(left_valid: torch.Tensor, right_valid: torch.Tensor):
    """The FlexAttention ``BlockMask`` of :func:`joint_mask_mod` (heads share it), on the masks' device."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, l_right = right_valid.shape
    return create_block_mask(joint_mask_mod(left_valid, right_valid), batch, None, l_right,
                             left_valid.shape[1] + l_right, device=right_valid.device)


@dataclass(frozen=True)
class VarlenIndex:
    """Packing of the valid tokens for varlen (flash-attn) kernels.

    Sample ``b`` contributes its valid Right tokens as queries and ``[valid Left; valid Right]`` as keys, so a
    causal mask aligned bottom-right (query ``i`` sees keys ``j <= i + n_left``) is exactly the AsyMoT mask.
    """

    query_index: torch.Tensor  # long[N_q]: flat indices into [B * L_r]
    key_index: torch.Tensor  # long[N_k]: flat indices into [B * (L_l + L_r)] of the concatenated keys
    cu_seqlens_q: torch.Tensor  # int32[B + 1]
    cu_seqlens_k: torch.Tensor  # int32[B + 1]
    max_seqlen_q: int
    max_seqlen_k: int


def varlen_index(left_valid: torch.Tensor, right_valid: torch.Tensor) -> VarlenIndex:
    left_valid = _check_padding_mask("left_valid", left_valid)
    right_valid = _check_padding_mask("right_valid", right_valid)
    key_valid = torch.cat([left_valid, right_valid], dim=1)  # row-major order keeps Left before Right per sample
    query_index = right_valid.flatten().nonzero().squeeze(-1)
    key_index = key_valid.flatten().nonzero().squeeze(-1)
    n_q = right_valid.sum(-1, dtype=torch.int32)
    n_k = key_valid.sum(-1, dtype=torch.int32)
    zero = torch.zeros(1, dtype=torch.int32, device=right_valid.device)
    if bool((n_q == 0).any()):
        raise ValueError("every sample needs at least one valid Right token")
    return VarlenIndex(
        query_index=query_index,
        key_index=key_index,
        cu_seqlens_q=torch.cat([zero, n_q.cumsum(0, dtype=torch.int32)]),
        cu_seqlens_k=torch.cat([zero, n_k.cumsum(0, dtype=torch.int32)]),
        max_seqlen_q=int(n_q.max()),
        max_seqlen_k=int(n_k.max()),
    )
