"""The KI model's claims made checkable on the tiny preset: insulation, masks, cached sampling."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from support.model import TINY, fixed, make_batch, model  # noqa: E402

from kidata.model.config import ModelConfig  # noqa: E402


def grads(net, loss):
    net.zero_grad()
    loss.backward()
    return ([p.grad for p in net.backbone_parameters()], [p.grad for p in net.expert_parameters()])


def test_flow_loss_gradient_never_reaches_the_backbone_under_ki():
    net, batch = model("ki"), make_batch()
    backbone, expert = grads(net, net(batch, **fixed(batch))["flow_loss"])
    assert all(g is None or torch.count_nonzero(g) == 0 for g in backbone)
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in expert)


def test_fast_loss_reaches_the_backbone_under_ki():
    net, batch = model("ki"), make_batch()
    backbone, _ = grads(net, net(batch, **fixed(batch))["fast_loss"])
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in backbone)


@pytest.mark.parametrize("variant", ["joint", "pi0"])
def test_without_insulation_the_flow_loss_reaches_the_backbone(variant):
    net, batch = model(variant), make_batch()
    backbone, _ = grads(net, net(batch, **fixed(batch))["flow_loss"])
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in backbone)


def test_ki_and_joint_have_identical_forward_passes():
    batch = make_batch()
    ki, joint = model("ki"), model("joint")
    joint.load_state_dict(ki.state_dict())
    a, b = ki(batch, **fixed(batch)), joint(batch, **fixed(batch))
    for key in ("loss", "flow_loss", "fast_loss", "logits", "velocity"):
        assert torch.equal(a[key], b[key])


def test_changing_fast_tokens_leaves_the_expert_output_unchanged():
    net, batch = model(), make_batch()
    changed = {**batch, "tokens": batch["tokens"].clone()}
    changed["tokens"][:, 8:] = 5
    assert torch.equal(net(batch, **fixed(batch))["velocity"], net(changed, **fixed(batch))["velocity"])


def test_changing_noisy_actions_leaves_the_backbone_logits_unchanged():
    net, batch = model(), make_batch()
    other = fixed(batch)
    other["noise"] = other["noise"] + 1.0
    assert torch.equal(net(batch, **fixed(batch))["logits"], net(batch, **other)["logits"])


def test_a_later_fast_token_does_not_change_earlier_logits():
    net, batch = model(), make_batch()
    changed = {**batch, "tokens": batch["tokens"].clone()}
    changed["tokens"][0, 10] = 7
    a = net(batch, **fixed(batch), all_logits=True)["logits"]
    b = net(changed, **fixed(batch), all_logits=True)["logits"]
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6) and not torch.allclose(a[0, 10:], b[0, 10:])


def test_cached_sampling_equals_uncached_sampling():
    net, batch = model(), make_batch()
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(2))
    cached = net.sample_actions(prefix, num_steps=5, noise=noise)
    uncached = net.sample_actions(prefix, num_steps=5, noise=noise, use_cache=False)
    assert cached.shape == (2, 4, 8) and torch.allclose(cached, uncached, atol=1e-6)


def test_unknown_config_keys_are_refused(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[model]\nwidht = 3\n")
    with pytest.raises(ValueError, match="did you mean 'width'"):
        ModelConfig.load(path)


@pytest.mark.slow
def test_the_tiny_model_overfits_one_batch():
    net, batch = model(), make_batch()
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    first = None
    for _ in range(300):
        out = net(batch, **fixed(batch))
        if first is None:
            first = (out["flow_loss"].item(), out["fast_loss"].item())
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
    assert out["flow_loss"].item() < first[0] / 10 and out["fast_loss"].item() < first[1] / 10


def test_weights_round_trip_through_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    from kidata.model.weights import load_weights, save_weights

    net, batch = model(seed=1), make_batch()
    save_weights(net, tmp_path / "model.safetensors")
    again = load_weights(model(seed=2), tmp_path / "model.safetensors")
    assert torch.equal(net(batch, **fixed(batch))["loss"], again(batch, **fixed(batch))["loss"])


def test_the_2b_preset_has_the_papers_part_sizes():
    from kidata.model.weights import parameter_counts

    counts = parameter_counts(ModelConfig.load(TINY.parent / "ki_2b.toml"))
    assert 390e6 < counts["vision"] < 430e6  # SigLIP So400m/14
    assert 2.4e9 < counts["decoder"] + counts["embedding"] < 2.6e9  # Gemma 2B with its embeddings
    assert counts["expert"] < counts["decoder"] / 4


def test_cached_greedy_generation_equals_recomputing_everything():
    net, batch = model(), make_batch()
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    cached = net.generate(prefix, 5)
    uncached = net.generate(prefix, 5, use_cache=False)
    assert cached.shape == (2, 5) and torch.equal(cached, uncached)


def test_generation_stops_at_a_stop_token():
    net, batch = model(), make_batch()
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    first = net.generate(prefix, 1)[:, 0]
    stopped = net.generate(prefix, 4, stop_ids=(int(first[0]),))
    assert (stopped[0] == first[0]).all()


def test_pi0_fast_has_no_expert_and_trains_on_tokens_alone():
    net, batch = model("pi0_fast"), make_batch()
    assert not hasattr(net, "expert_layers") and list(net.expert_parameters()) == []
    out = net(batch)
    assert torch.equal(out["loss"], out["fast_loss"]) and "flow_loss" not in out
    with pytest.raises(ValueError, match="generate"):
        net.sample_actions(batch)


def test_frozen_backbone_takes_no_gradient_and_trains_the_expert_on_flow():
    net, batch = model("frozen"), make_batch()
    assert not any(p.requires_grad for p in net.backbone_parameters())
    out = net(batch, **fixed(batch))
    assert torch.equal(out["loss"], out["flow_loss"])
    backbone, expert = grads(net, out["loss"])
    assert all(g is None for g in backbone) and any(g is not None and torch.count_nonzero(g) > 0 for g in expert)


def test_hybrid_targets_see_the_noisy_actions_and_the_prefix_does_not():
    net, batch = model("hybrid"), make_batch()
    other = fixed(batch)
    other["noise"] = other["noise"] + 1.0
    a, b = net(batch, **fixed(batch), all_logits=True)["logits"], net(batch, **other, all_logits=True)["logits"]
    prefix_logits = slice(0, 5)  # logits of prefix positions (targets start at token 6)
    assert torch.equal(a[:, prefix_logits], b[:, prefix_logits])
    assert not torch.allclose(a[:, 6:], b[:, 6:])
    backbone, _ = grads(net, net(batch, **fixed(batch))["flow_loss"])
    assert any(g is not None and torch.count_nonzero(g) > 0 for g in backbone)


def test_continuous_state_prefix_token_reaches_both_streams_and_only_robot_rows():
    net, batch = model(state_input="prefix"), make_batch()
    changed = {**batch, "state": batch["state"] + 1.0}
    a, b = net(batch, **fixed(batch)), net(changed, **fixed(batch))
    assert not torch.allclose(a["velocity"], b["velocity"]) and not torch.allclose(a["logits"], b["logits"])
    no_state = {**batch, "state_dim_mask": torch.zeros_like(batch["state_dim_mask"])}
    c = net(no_state, **fixed(batch), all_logits=True)
    d = net({**no_state, "state": batch["state"] + 1.0}, **fixed(batch), all_logits=True)
    real = batch["token_mask"]  # padding positions see nothing real; their outputs are never read
    assert torch.equal(c["logits"][real], d["logits"][real])  # a row without state ignores the state values


def test_pi0_style_state_token_in_the_expert_leaves_the_backbone_alone():
    net, batch = model("pi0", state_input="expert", time_conditioning="concat"), make_batch()
    changed = {**batch, "state": batch["state"] + 1.0}
    a, b = net(batch, **fixed(batch)), net(changed, **fixed(batch))
    assert a["velocity"].shape == (2, 4, 8)
    assert torch.equal(a["logits"], b["logits"]) and not torch.allclose(a["velocity"], b["velocity"])
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(2))
    assert torch.allclose(net.sample_actions(prefix, num_steps=3, noise=noise),
                          net.sample_actions(prefix, num_steps=3, noise=noise, use_cache=False), atol=1e-6)


def test_config_rejects_unknown_choices():
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="ki2")
    with pytest.raises(ValueError, match="action_tokens"):
        ModelConfig(action_tokens="vq")


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    batch = make_batch()
    plain, recomputed = model("ki"), model("ki")
    recomputed.activation_checkpointing = True
    a, b = plain(batch, **fixed(batch)), recomputed(batch, **fixed(batch))
    assert torch.equal(a["loss"], b["loss"])
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), q in zip(plain.named_parameters(), recomputed.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def padded(batch: dict, extra: int) -> dict:
    """The batch with ``extra`` padding columns after its tokens (what collate's max_tokens adds)."""
    grow = {key: torch.nn.functional.pad(batch[key], (0, extra)) for key in ("tokens", "ar", "loss", "token_mask")}
    return {**batch, **grow}


def test_trimming_token_padding_changes_neither_the_losses_nor_the_gradients():
    from kidata.loader.collate import trim_token_padding

    batch = padded(make_batch(), 20)
    trimmed = trim_token_padding(batch)
    assert trimmed["tokens"].shape == (2, 12)  # make_batch's rows: 12 and 10 real tokens
    assert torch.equal(trimmed["token_mask"], make_batch()["token_mask"])
    wide, narrow = model("ki"), model("ki")
    a, b = wide(batch, **fixed(batch)), narrow(trimmed, **fixed(batch))
    for key in ("fast_loss", "flow_loss", "loss"):
        torch.testing.assert_close(a[key], b[key], rtol=1e-6, atol=0)
    a["loss"].backward()
    b["loss"].backward()
    for (name, p), q in zip(wide.named_parameters(), narrow.parameters()):
        if p.grad is not None:
            # float32 sums over another number of columns: 1.4e-7 at most measured (one embedding row of 2048)
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-6, msg=name)


def test_trimming_keeps_every_column_some_row_uses():
    from kidata.loader.collate import trim_token_padding

    batch = make_batch()  # row 0 fills all 12 columns
    assert trim_token_padding(batch) is batch
    late = padded(make_batch(), 3)
    late["token_mask"][1, -1] = True  # a real token in the last column of one row only
    assert trim_token_padding(late)["tokens"].shape[1] == 15


def test_trimming_a_batch_of_padding_alone_keeps_one_column_of_every_token_key():
    from kidata.loader.collate import TOKEN_KEYS, trim_token_padding

    empty = make_batch()
    empty["token_mask"][:] = False
    trimmed = trim_token_padding(empty)
    assert {key: tuple(trimmed[key].shape) for key in TOKEN_KEYS} == {key: (len(empty["tokens"]), 1) for key in TOKEN_KEYS}


def test_a_convolutional_vision_stem_gives_the_patch_grid_and_trains():
    net = model("ki", vision_stem=(4, 8))  # 32 px, patch 8: two stride-2 convolutions, then a 2x2 one
    assert not hasattr(net.vision, "patch")
    features = net.vision(make_batch()["images"][:, 0])
    assert features.shape == (2, (32 // 8) ** 2, net.config.vision_width)
    batch = make_batch()
    net(batch, **fixed(batch))["fast_loss"].backward()
    assert net.vision.stem[0].weight.grad.abs().sum() > 0


def test_a_vision_stem_whose_stride_does_not_divide_the_patch_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"vision_stem \[8, 16\] .*stride 4.* patch_size 14"):
        ModelConfig(patch_size=14, vision_stem=(8, 16))


def test_generation_that_every_row_stops_at_once_runs_no_decoder_pass_after_the_prefix(monkeypatch):
    net, batch = model(), make_batch()
    prefix = {**batch, "ar": torch.zeros_like(batch["ar"])}
    first = net.generate(prefix, 1)[:, 0]
    passes = []
    project = type(net.layers[0]).project
    monkeypatch.setattr(net.layers[0], "project", lambda *a: passes.append(a[0].shape[1]) or project(net.layers[0], *a))
    stopped = net.generate(prefix, 8, stop_ids=tuple(int(token) for token in first))
    assert torch.equal(stopped, first[:, None].expand(2, 8))
    assert passes == [2 * 16 + 12]  # the prefix alone (2 cameras x 16 patches + 12 tokens)
