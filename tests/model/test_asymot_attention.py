"""AsyMoT joint attention against an explicit, independent reference (DESIGN §2)."""

import warnings

import pytest
import torch

from starvla_twinbrain.model import asymot_attention
from starvla_twinbrain.model.asymot_attention import (
    joint_attention_eager,
    joint_attention_flex,
    joint_attention_sdpa,
    joint_attention_varlen,
    resolve_backend,
)
from starvla_twinbrain.model.asymot_masks import joint_attention_mask, joint_block_mask, joint_mask_mod, varlen_index
from tests.references import make_case, reference_joint_attention, reference_varlen_kernel

FP32_TOL = dict(rtol=1e-5, atol=1e-5)


def test_joint_mask_literal():
    left_valid = torch.tensor([[False, True, True]])
    right_valid = torch.tensor([[False, True, True]])
    expected = torch.tensor(
        [
            [0, 1, 1, 1, 0, 0],  # padding query: itself only on the Right, never a Left pad
            [0, 1, 1, 0, 1, 0],
            [0, 1, 1, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(joint_attention_mask(left_valid, right_valid)[0, 0], expected)


def test_joint_mask_interior_invalid_slot():
    mask = joint_attention_mask(torch.tensor([[True, True]]), torch.tensor([[True, False, True]]))[0, 0]
    expected = torch.tensor(
        [
            [1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0],  # the masked slot's own row: valid earlier tokens and itself (output ignored)
            [1, 1, 1, 0, 1],  # a later query never sees the masked slot
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


@pytest.mark.parametrize("kernel", ["eager", "sdpa", "varlen"])
def test_kernels_match_reference_outputs_and_gradients(kernel):
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case()
    scaling = q.shape[-1] ** -0.5
    for t in (q, k_l, v_l, k_r, v_r):
        t.requires_grad_(True)
    if kernel == "eager":
        out = joint_attention_eager(q, k_l, v_l, k_r, v_r, joint_attention_mask(left_valid, right_valid), scaling)[0]
    elif kernel == "sdpa":
        out = joint_attention_sdpa(q, k_l, v_l, k_r, v_r, joint_attention_mask(left_valid, right_valid), scaling)
    else:
        index = varlen_index(left_valid, right_valid)
        out = joint_attention_varlen(q, k_l, v_l, k_r, v_r, index, scaling, kernel=reference_varlen_kernel)
    ref_inputs = [t.detach().double().requires_grad_(True) for t in (q, k_l, v_l, k_r, v_r)]
    ref = reference_joint_attention(*ref_inputs, left_valid, right_valid, scaling)

    valid = right_valid[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out[valid].double(), ref[valid], **FP32_TOL)

    # Gradients of the same loss on the valid query rows, with respect to every input.
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out[valid] * weights[valid]).sum().backward()
    (ref[valid] * weights[valid].double()).sum().backward()
    for name, got, want in zip(["q", "k_l", "v_l", "k_r", "v_r"], (q, k_l, v_l, k_r, v_r), ref_inputs):
        torch.testing.assert_close(got.grad.double(), want.grad, **FP32_TOL, msg=f"gradient of {name}")


@pytest.mark.parametrize("kernel", ["eager", "sdpa"])
def test_kernels_in_bf16_stay_within_bf16_tolerance_of_the_reference(kernel):
    """bf16 inputs (the GPU training dtype): outputs and gradients against the float64 reference on the same
    bf16-rounded inputs, within a few bf16 steps (eps 2**-8 = 0.0039); a wrong mask or scale is off by far more."""
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case(dtype=torch.bfloat16, l_l=40, l_r=24)
    scaling = q.shape[-1] ** -0.5
    for t in (q, k_l, v_l, k_r, v_r):
        t.requires_grad_(True)
    mask = joint_attention_mask(left_valid, right_valid)
    if kernel == "eager":
        out = joint_attention_eager(q, k_l, v_l, k_r, v_r, mask, scaling)[0]
    else:
        out = joint_attention_sdpa(q, k_l, v_l, k_r, v_r, mask, scaling)
    assert out.dtype == torch.bfloat16
    ref_inputs = [t.detach().double().requires_grad_(True) for t in (q, k_l, v_l, k_r, v_r)]
    ref = reference_joint_attention(*ref_inputs, left_valid, right_valid, scaling)
    valid = right_valid[:, :, None, None].expand_as(out)
    bf16_tol = dict(rtol=2 ** -6, atol=2 ** -5)  # measured: eager 0.012, sdpa 0.004; a scale off by 10 %: 0.17
    torch.testing.assert_close(out[valid].double(), ref[valid], **bf16_tol)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
    (out[valid].float() * weights[valid]).sum().backward()
    (ref[valid] * weights[valid].double()).sum().backward()
    for name, got, want in zip(["q", "k_l", "v_l", "k_r", "v_r"], (q, k_l, v_l, k_r, v_r), ref_inputs):
        assert got.grad.dtype == torch.bfloat16
        scale = want.grad.abs().max()  # gradients are sums over many terms: compared relative to their size
        torch.testing.assert_close(got.grad.double() / scale, want.grad / scale, rtol=0, atol=2 ** -5,
                                   msg=f"gradient of {name}")


def test_flex_mask_mod_is_the_joint_mask():
    """The FlexAttention mask_mod, evaluated at every (query, key), is exactly the boolean joint mask."""
    from torch.nn.attention.flex_attention import create_mask

    *_, left_valid, right_valid = make_case()
    batch, l_right = right_valid.shape
    dense = create_mask(joint_mask_mod(left_valid, right_valid), batch, 1, l_right, left_valid.shape[1] + l_right,
                        device="cpu")
    assert torch.equal(dense, joint_attention_mask(left_valid, right_valid))


@pytest.mark.parametrize("n_kv", [2, 4], ids=["gqa", "mha"])
def test_flex_matches_reference_outputs(n_kv):
    """Values and inference on CPU (FlexAttention has no CPU backward; the GPU test and gpu_check cover gradients)."""
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case(n_kv=n_kv)
    scaling = q.shape[-1] ** -0.5
    out = joint_attention_flex(q, k_l, v_l, k_r, v_r, joint_block_mask(left_valid, right_valid), scaling)
    ref = reference_joint_attention(q, k_l, v_l, k_r, v_r, left_valid, right_valid, scaling)
    valid = right_valid[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out[valid].double(), ref[valid], **FP32_TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward runs on GPUs only (none here)")
def test_flex_gradients_match_reference_on_gpu():
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case(d=64)
    scaling = q.shape[-1] ** -0.5
    cuda = [t.cuda().requires_grad_(True) for t in (q, k_l, v_l, k_r, v_r)]
    out = joint_attention_flex(*cuda, joint_block_mask(left_valid.cuda(), right_valid.cuda()), scaling)
    ref_inputs = [t.detach().double().requires_grad_(True) for t in (q, k_l, v_l, k_r, v_r)]
    ref = reference_joint_attention(*ref_inputs, left_valid, right_valid, scaling)
    valid = right_valid[:, :, None, None].expand_as(ref)
    weights = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (out.cpu().double()[valid] * weights[valid]).sum().backward()
    (ref[valid] * weights[valid]).sum().backward()
    torch.testing.assert_close(out.detach().cpu().double()[valid], ref[valid], rtol=1e-4, atol=1e-4)
    for name, got, want in zip(["q", "k_l", "v_l", "k_r", "v_r"], cuda, ref_inputs):
        torch.testing.assert_close(got.grad.cpu().double(), want.grad, rtol=1e-4, atol=1e-4, msg=f"gradient of {name}")


def test_flex_refuses_training_on_cpu_naming_the_key():
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case()
    with pytest.raises(NotImplementedError, match=r"attn_implementation='flex_attention'.*no backward pass on CPU.*'sdpa'"):
        joint_attention_flex(q.requires_grad_(True), k_l, v_l, k_r, v_r, joint_block_mask(left_valid, right_valid), 1.0)


def test_left_padding_is_never_visible():
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case()
    mask = joint_attention_mask(left_valid, right_valid)
    scaling = q.shape[-1] ** -0.5
    base = joint_attention_sdpa(q, k_l, v_l, k_r, v_r, mask, scaling)
    k_l2, v_l2 = k_l.clone(), v_l.clone()
    k_l2[~left_valid[:, None, :].expand_as(k_l[..., 0])] = 1e3  # garbage in every Left padding slot
    v_l2[~left_valid[:, None, :].expand_as(v_l[..., 0])] = -1e3
    again = joint_attention_sdpa(q, k_l2, v_l2, k_r, v_r, mask, scaling)
    valid = right_valid[:, :, None, None].expand_as(base)
    torch.testing.assert_close(base[valid], again[valid], rtol=0, atol=0)


def test_non_finite_left_padding_cannot_leak():
    """Whatever the stock Left leaves in its padding rows (NaN included) never reaches the Right."""
    from starvla_twinbrain.model.asymot_attention import AsyMoTContext

    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case()
    pad = ~left_valid[:, None, :, None].expand_as(k_l)
    context = AsyMoTContext(left_valid, right_valid, "sdpa")
    context.record(0, k_l.masked_fill(pad, float("nan")), v_l.masked_fill(pad, float("inf")))
    k_rec, v_rec = context.left_kv_for(0)
    out = joint_attention_sdpa(q, k_rec, v_rec, k_r, v_r, context.joint_mask, q.shape[-1] ** -0.5)
    ref = joint_attention_sdpa(q, k_l, v_l, k_r, v_r, context.joint_mask, q.shape[-1] ** -0.5)
    valid = right_valid[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out[valid], ref[valid], rtol=0, atol=0)


def test_left_keys_change_the_output():
    q, k_l, v_l, k_r, v_r, left_valid, right_valid = make_case()
    mask = joint_attention_mask(left_valid, right_valid)
    scaling = q.shape[-1] ** -0.5
    base = joint_attention_sdpa(q, k_l, v_l, k_r, v_r, mask, scaling)
    moved = joint_attention_sdpa(q, k_l, v_l + 1.0, k_r, v_r, mask, scaling)
    assert (base - moved)[right_valid[:, :, None, None].expand_as(base)].abs().min() > 1e-3


def test_resolve_backend():
    with pytest.raises(ValueError, match=r"^attn_implementation='sdpa2'.*eager \| sdpa \| flash_attention_2 \| flex_attention"):
        resolve_backend("sdpa2", "cpu")
    assert resolve_backend(None, "cpu") == "sdpa"
    assert resolve_backend("eager", "cpu") == "eager"
    assert resolve_backend("flex_attention", "cpu", torch.float32) == "flex_attention"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend("flash_attention_2", "cpu") == "sdpa"
    assert len(caught) == 1 and "using 'sdpa'" in str(caught[0].message)


@pytest.mark.parametrize("flash_installed", [False, True])
def test_resolve_backend_on_cuda(monkeypatch, flash_installed):
    """The policy for a CUDA device (only the device's name is needed): flash-attn where installed and the weights
    are fp16/bf16; without it sdpa stays the default (flex only when requested), and a flash request falls back
    with one warning."""
    monkeypatch.setattr(asymot_attention, "flash_attn_available", lambda: flash_installed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert resolve_backend(None, "cuda", torch.bfloat16) == ("flash_attention_2" if flash_installed else "sdpa")
        assert resolve_backend("flex_attention", "cuda", torch.bfloat16) == "flex_attention"
        assert resolve_backend("flash_attention_2", "cuda", torch.bfloat16) == ("flash_attention_2" if flash_installed else "sdpa")
        assert resolve_backend("flash_attention_2", "cuda", torch.float32) == "sdpa"
    reasons = [str(w.message) for w in caught]
    assert len(reasons) == (1 if flash_installed else 2), reasons
    assert all("using 'sdpa'" in reason for reason in reasons)
    assert all(("fp16/bf16" if flash_installed else "flash-attn is not installed") in reason for reason in reasons)
