"""AdaRMSNorm computes its variance and modulation in float32 whatever its input's dtype (openpi
does, as Gemma's RMSNorm does here): bf16 inputs give the float32 result rounded once."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from kidata.model.layers import AdaRMSNorm  # noqa: E402


def test_a_bf16_input_is_normalized_in_float32_and_rounded_once():
    torch.manual_seed(0)
    norm = AdaRMSNorm(256, 8)
    torch.nn.init.normal_(norm.modulation.weight, std=0.5)
    norm = norm.to(torch.bfloat16)
    # wide rows of mixed magnitude: a bf16 sum of 256 squares near 1e4 rounds away the small ones
    x = (torch.randn(2, 3, 256) * torch.logspace(-2, 2, 256)).to(torch.bfloat16)
    cond = torch.randn(2, 8).to(torch.bfloat16)
    normed, gate = norm(x, cond)
    scale, shift, expected_gate = norm.modulation(cond)[:, None, :].float().chunk(3, dim=-1)
    wide = x.float()
    expected = wide * torch.rsqrt(wide.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + scale) + shift
    assert normed.dtype == torch.bfloat16
    assert torch.equal(normed, expected.to(torch.bfloat16))
    assert torch.equal(gate, expected_gate.to(torch.bfloat16))


def test_a_float32_input_is_unchanged_by_the_upcast():
    torch.manual_seed(0)
    norm = AdaRMSNorm(16, 4)
    torch.nn.init.normal_(norm.modulation.weight, std=0.5)
    x, cond = torch.randn(2, 3, 16), torch.randn(2, 4)
    normed, _ = norm(x, cond)
    scale, shift, _ = norm.modulation(cond)[:, None, :].chunk(3, dim=-1)
    assert normed.dtype == torch.float32
    assert torch.equal(normed, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + norm.eps) * (1 + scale) + shift)
