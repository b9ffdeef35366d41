"""The real flash-attn varlen kernel against the reference (GPU only; the CPU tests cover the packing logic)."""

import pytest
import torch

from starvla_twinbrain.model.asymot_attention import flash_attn_available, joint_attention_varlen
from starvla_twinbrain.model.asymot_masks import varlen_index
from tests.references import make_case, reference_joint_attention

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not flash_attn_available(), reason="needs flash-attn and a CUDA GPU"),
]


@pytest.mark.parametrize("dtype, tol", [(torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_flash_varlen_matches_reference(dtype, tol):
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case(d=64)
    scaling = q.shape[-1] ** -0.5
    cuda = [t.to("cuda", dtype) for t in (q, k_l, v_l, k_r, v_r)]
    index = varlen_index(left_valid.cuda(), right_valid.cuda())
    out = joint_attention_varlen(*cuda, index, scaling).float().cpu()
    ref = reference_joint_attention(*(t.float().cpu() for t in cuda), left_valid, right_valid, scaling)
    valid = right_valid[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out[valid].double(), ref[valid], rtol=tol, atol=tol)
