"""Independent references the tests compare against: computed by indexing and explicit loops, sharing nothing with
the implementation (no masks, no fused kernels)."""

import torch


def reference_joint_attention(q, k_l, v_l, k_r, v_r, left_valid, right_valid, scaling):
    """Per sample, per head, per valid query: one softmax over the concatenated visible keys, in float64.

    Visible keys of Right query i: every valid Left token, then valid Right tokens j <= i. Built by indexing, not
    from a mask, so it shares nothing with the implementation. Padding query rows are left as NaN (not compared).
    """
    q, k_l, v_l, k_r, v_r = (t.double() for t in (q, k_l, v_l, k_r, v_r))
    batch, n_q, l_r, d = q.shape
    n_rep = n_q // k_r.shape[1]
    out = torch.full((batch, l_r, n_q, d), float("nan"), dtype=torch.float64)
    for b in range(batch):
        left_idx = left_valid[b].nonzero().flatten()
        for i in range(l_r):
            if not right_valid[b, i]:
                continue
            right_idx = right_valid[b, : i + 1].nonzero().flatten()
            for h in range(n_q):
                kv_h = h // n_rep
                keys = torch.cat([k_l[b, kv_h, left_idx], k_r[b, kv_h, right_idx]])  # explicit concatenation
                values = torch.cat([v_l[b, kv_h, left_idx], v_r[b, kv_h, right_idx]])
                weights = torch.softmax(keys @ q[b, h, i] * scaling, dim=0)
                out[b, i, h] = weights @ values
    return out


def make_case(seed=0, batch=3, n_q=4, n_kv=2, d=8, l_l=7, l_r=6, dtype=torch.float32):
    """Grouped-query heads, prompts of different lengths: left padding and an interior invalid slot."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_q, l_r, d, generator=g, dtype=dtype)
    k_l, v_l = (torch.randn(batch, n_kv, l_l, d, generator=g, dtype=dtype) for _ in range(2))
    k_r, v_r = (torch.randn(batch, n_kv, l_r, d, generator=g, dtype=dtype) for _ in range(2))
    left_valid = torch.ones(batch, l_l, dtype=torch.bool)
    left_valid[1, :3] = False  # shorter Left prompt
    left_valid[2, :1] = False
    right_valid = torch.ones(batch, l_r, dtype=torch.bool)
    right_valid[0, :2] = False  # shorter Right prompt
    right_valid[2, 4] = False  # a masked slot inside the row (a sample without state)
    return q, k_l, v_l, k_r, v_r, left_valid, right_valid


def reference_varlen_kernel(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=True):
    """flash-attn's varlen semantics in plain torch: GQA, causal mask aligned bottom-right."""
    assert causal and dropout_p == 0.0
    outs = []
    n_rep = q.shape[1] // k.shape[1]
    for s in range(len(cu_q) - 1):
        qs, ks, vs = q[cu_q[s]:cu_q[s + 1]], k[cu_k[s]:cu_k[s + 1]], v[cu_k[s]:cu_k[s + 1]]
        ks, vs = ks.repeat_interleave(n_rep, 1), vs.repeat_interleave(n_rep, 1)
        scores = torch.einsum("qhd,khd->hqk", qs, ks) * softmax_scale
        lq, lk = qs.shape[0], ks.shape[0]
        allowed = torch.arange(lk)[None, :] <= torch.arange(lq)[:, None] + (lk - lq)
        scores = scores.masked_fill(~allowed, float("-inf"))
        outs.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), vs))
    return torch.cat(outs)
