"""What a training step holds in memory: logits only at the loss-masked targets, one attention
bias per pass shared by all layers, and keys/values never copied once per query head. Each
claim comes with the equality that shows the outputs did not change."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import kidata.model.ki_model as ki_model  # noqa: E402
from kidata.model.attention import attend, attention_bias  # noqa: E402
from kidata.model.config import ModelConfig  # noqa: E402
from kidata.model.ki_model import KIModel  # noqa: E402

TINY = dict(image_size=32, patch_size=8, vision_width=24, vision_depth=1, vision_heads=2, vision_mlp=48,
            vocab_size=300, width=64, depth=3, heads=4, kv_heads=1, head_dim=16, mlp=128, expert_width=32,
            expert_mlp=64, action_dim=4, action_horizon=4, state_dim=4)


def model(variant: str = "ki", **overrides) -> KIModel:
    torch.manual_seed(0)
    net = KIModel(ModelConfig(**{**TINY, "variant": variant, **overrides}))
    for parameter in net.parameters():  # open the zero-initialized gates so every path carries signal
        if parameter.abs().sum() == 0:
            torch.nn.init.normal_(parameter, std=0.05)
    return net


def batch_of(rows: int = 2, length: int = 12, prefix: int = 5) -> dict:
    g = torch.Generator().manual_seed(0)
    ar = torch.zeros(rows, length, dtype=torch.bool)
    ar[:, prefix:] = True
    token_mask = torch.ones(rows, length, dtype=torch.bool)
    token_mask[1, -3:] = False
    loss = ar & token_mask
    loss[0, prefix + 2] = False  # a target without loss (e.g. a subtask token taught elsewhere)
    return {"images": torch.rand(rows, 2, 3, 32, 32, generator=g) * 2 - 1,
            "image_mask": torch.tensor([[True, True], [True, False]]),
            "tokens": torch.randint(3, 290, (rows, length), generator=g), "ar": ar & token_mask, "loss": loss,
            "token_mask": token_mask, "state": torch.randn(rows, 4, generator=g),
            "state_dim_mask": torch.ones(rows, 4, dtype=torch.bool),
            "actions": torch.randn(rows, 4, 4, generator=g), "action_valid": torch.ones(rows, 4, dtype=torch.bool),
            "action_dim_mask": torch.ones(rows, 4, dtype=torch.bool), "has_actions": torch.ones(rows, dtype=torch.bool)}


def flow(rows: int = 2) -> dict:
    return {"noise": torch.randn(rows, 4, 4, generator=torch.Generator().manual_seed(1)),
            "t": torch.linspace(0.2, 0.9, rows)}


def repeated_attend(q, k, v, bias):
    """Attention with keys/values repeated once per query head: the reference layout."""
    repeat = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias).transpose(1, 2).flatten(2)


# ------------------------------------------------------------------ logits
def test_the_lm_head_runs_only_on_the_rows_that_predict_a_loss_masked_target(monkeypatch):
    net, batch = model(), batch_of()
    rows = []
    head = net.lm_head
    monkeypatch.setattr(net, "lm_head", lambda hidden: rows.append(hidden.shape[:-1]) or head(hidden))
    out = net(batch, **flow())
    targets = int(batch["loss"][:, 1:].sum())
    assert targets == 10 and rows == [torch.Size([targets])]  # 6 + 4 of 2 x 12 text positions
    assert out["logits"].shape == (targets, TINY["vocab_size"])


def test_the_token_loss_and_its_gradients_equal_those_of_logits_at_every_text_position():
    batch = batch_of()
    dense, sparse = model(), model()
    a = dense(batch, **flow(), all_logits=True)
    b = sparse(batch, **flow())
    assert a["logits"].shape == (2, 12, TINY["vocab_size"])
    torch.testing.assert_close(b["logits"], a["logits"][:, :-1][batch["loss"][:, 1:]], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(b["fast_loss"], a["fast_loss"], rtol=1e-6, atol=1e-7)
    a["loss"].backward()
    b["loss"].backward()
    for (name, x), y in zip(dense.named_parameters(), sparse.parameters()):
        torch.testing.assert_close(y.grad, x.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_without_a_token_loss_the_cross_entropy_is_reported_but_keeps_no_graph():
    out = model("pi0")(batch_of(), **flow())
    assert torch.isfinite(out["fast_loss"]) and not out["fast_loss"].requires_grad
    assert out["loss"].requires_grad and torch.equal(out["loss"], out["flow_loss"])
    assert model("ki")(batch_of(), **flow())["fast_loss"].requires_grad


def test_a_batch_without_loss_masked_targets_computes_no_logits():
    batch = batch_of()
    batch["loss"][:] = False
    out = model("pi0")(batch, **flow())
    assert out["logits"].shape == (0, TINY["vocab_size"]) and out["fast_loss"].item() == 0.0


# ------------------------------------------------------------------ attention bias
def test_the_attention_bias_is_built_once_per_pass_not_once_per_layer(monkeypatch):
    net, batch = model(), batch_of()
    built = []
    monkeypatch.setattr(ki_model, "attention_bias", lambda visible, dtype: built.append(visible.shape)
                        or attention_bias(visible, dtype))
    net(batch, **flow())
    assert len(built) == 2  # the backbone's mask and the expert's, for all 3 layers
    built.clear()
    net.sample_actions(batch, num_steps=4, noise=flow()["noise"])
    assert len(built) == 1 + 4  # the prefix once, then the expert once per Euler step


def test_every_layer_attends_under_the_same_bias_tensor_in_bf16_autocast(monkeypatch):
    net, batch = model(), batch_of()
    masks = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        if q.shape[1] == TINY["heads"] and q.shape[-1] == TINY["head_dim"]:  # the decoder's calls, not SigLIP's
            masks.append((attn_mask.shape, attn_mask.dtype, attn_mask.data_ptr()))
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        net(batch, **flow())
    assert len(masks) == 2 * TINY["depth"] and {dtype for _, dtype, _ in masks} == {torch.bfloat16}
    assert len({pointer for _, _, pointer in masks}) == 2  # one backbone bias, one expert bias


# ------------------------------------------------------------------ grouped keys/values
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_keys_and_values_reach_attention_without_a_copy_per_query_head(monkeypatch, kv_heads):
    net, batch = model(kv_heads=kv_heads), batch_of()
    held = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        if q.shape[1] == TINY["heads"] and q.shape[-1] == TINY["head_dim"]:
            # bytes the key tensor really holds, per query head's worth of keys
            held.append(k.untyped_storage().nbytes() / (q.shape[0] * k.shape[2] * k.shape[3] * k.element_size()))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    net(batch, **flow())
    assert len(held) == 2 * TINY["depth"] and max(held) == kv_heads  # heads (4) if repeated


@pytest.mark.parametrize("kv_heads", [1, 2, 4])
def test_grouped_attention_equals_attention_over_repeated_keys_and_values(kv_heads):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 7, 16, generator=g, requires_grad=True)
    k = torch.randn(2, kv_heads, 9, 16, generator=g, requires_grad=True)
    v = torch.randn(2, kv_heads, 9, 16, generator=g, requires_grad=True)
    visible = torch.rand(2, 7, 9, generator=g) > 0.3
    visible[1, 3] = False  # a row that sees nothing stays finite
    bias = attention_bias(visible, torch.float32)
    ours, reference = attend(q, k, v, bias), repeated_attend(q, k, v, bias)
    torch.testing.assert_close(ours, reference, rtol=1e-6, atol=1e-6)
    assert torch.isfinite(ours).all()
    grads = torch.autograd.grad(ours.square().sum(), (q, k, v))
    expected = torch.autograd.grad(reference.square().sum(), (q, k, v))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["ki", "hybrid", "pi0_fast"])
def test_the_model_equals_its_repeated_key_value_form(monkeypatch, variant):
    net, batch = model(variant, kv_heads=2), batch_of()
    ours = net(batch, **flow())
    monkeypatch.setattr(ki_model, "attend", repeated_attend)
    reference = net(batch, **flow())
    for key in ("loss", "fast_loss", "logits") + (("velocity",) if variant != "pi0_fast" else ()):
        torch.testing.assert_close(ours[key], reference[key], rtol=1e-6, atol=1e-6, msg=key)


def test_loss_targets_found_on_the_host_give_the_same_loss_and_logits_with_no_device_count():
    """The trainer's batches carry ``loss_targets`` (collate, on the host): the model gathers its N logit
    rows by them instead of a boolean mask, whose result size a GPU must count before it can go on."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from kidata.loader.collate import with_loss_targets

    class CountOps(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            indices = args[1] if func is torch.ops.aten.index.Tensor else ()
            if any(index is not None and index.dtype == torch.bool for index in indices):
                self.ops.append("index by a boolean mask")  # its result size is counted on the device
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    batch = batch_of()
    indexed = with_loss_targets(batch)
    assert indexed["loss_targets"].tolist() == torch.nonzero(batch["loss"][:, 1:].reshape(-1)).reshape(-1).tolist()
    one, two = model("ki"), model("ki")
    masked = one(batch, **flow())
    with CountOps() as counted:
        gathered = two(indexed, **flow())
    for key in ("fast_loss", "flow_loss", "loss"):
        torch.testing.assert_close(gathered[key], masked[key], rtol=1e-6, atol=0)
    torch.testing.assert_close(gathered["logits"], masked["logits"], rtol=1e-6, atol=1e-7)
    assert not [op for op in counted.ops if "boolean mask" in op or "nonzero" in op or "masked_select" in op]
