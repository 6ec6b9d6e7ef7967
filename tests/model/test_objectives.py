"""The model's objectives and its inference, against values computed by hand: the token loss is
the shifted cross-entropy over loss-masked targets, the flow loss the masked squared error to
``noise - actions`` at ``x_t = t * noise + (1 - t) * actions``, sampling's first velocity is the
training forward's, and cached generation gives recomputation's logits step by step."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from support.model import make_batch, model  # noqa: E402

from kidata.loader.collate import prefix_only  # noqa: E402
from kidata.model.ki_model import sample_flow_inputs  # noqa: E402
from kidata.model.layers import timestep_embedding  # noqa: E402


def masked_batch() -> dict:
    """make_batch with a loss mask that is not shift-invariant, an invalid action step, a padded
    action dimension and a VLM row (no actions) among the robot rows."""
    batch = make_batch(batch=3)
    batch["image_mask"] = torch.tensor([[True, True], [True, False], [False, True]])
    batch["loss"] = torch.zeros_like(batch["loss"])
    batch["loss"][0, [7, 9, 10]] = True
    batch["loss"][1, [6, 8]] = True
    batch["loss"][2, [11]] = True
    batch["action_valid"][0, 3] = False
    batch["action_dim_mask"][:, 6:] = False
    batch["has_actions"][2] = False
    batch["prefix_length"] = torch.full((3,), 6)
    return batch


def make_batch_rows(batch: dict, rows: int) -> dict:
    return {k: v[:rows] for k, v in batch.items()}


def test_the_token_loss_is_the_shifted_cross_entropy_of_the_loss_masked_targets():
    net, batch = model(), masked_batch()
    noise, t = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.7, 0.5])
    out = net(batch, noise=noise, t=t)
    logits = net(batch, noise=noise, t=t, all_logits=True)["logits"].detach().double()  # every text position
    total, count = 0.0, 0
    for row in range(3):
        for position in range(batch["tokens"].shape[1] - 1):
            if batch["loss"][row, position + 1]:  # the logits at i predict token i + 1
                log_probs = torch.log_softmax(logits[row, position], dim=-1)
                total -= float(log_probs[batch["tokens"][row, position + 1]])
                count += 1
    assert count == 6
    assert out["fast_loss"].item() == pytest.approx(total / count, rel=1e-5)


def test_the_flow_loss_is_the_masked_error_to_noise_minus_actions():
    net, batch = model(), masked_batch()
    noise, t = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.7, 0.5])
    out = net(batch, noise=noise, t=t)
    velocity, actions = out["velocity"].detach().double(), batch["actions"].double()
    target = noise.double() - actions
    total, count = 0.0, 0
    for row in range(2):  # row 2 is a VLM row: no flow loss
        for step in range(4):
            for dim in range(6):  # dims 6, 7 are padding
                if batch["action_valid"][row, step]:
                    total += float((velocity[row, step, dim] - target[row, step, dim]) ** 2)
                    count += 1
    assert count == 4 * 6 + 3 * 6
    assert out["flow_loss"].item() == pytest.approx(total / count, rel=1e-5)


def test_the_expert_is_trained_at_x_t_between_actions_and_noise():
    """forward's velocity equals the expert run on x_t = t * noise + (1 - t) * actions by hand."""
    net, batch = model(), masked_batch()
    noise, t = torch.randn(3, 4, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.7, 0.5])
    velocity = net(batch, noise=noise, t=t)["velocity"]
    x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * batch["actions"]
    prefix = prefix_only(batch)
    _, cache, valid, ar, _ = net.run_backbone(prefix)
    with torch.no_grad():
        by_hand = net.run_expert(x_t, t, prefix, cache, valid, ar)
    torch.testing.assert_close(velocity, by_hand, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant,state_input", [("ki", "tokens"), ("pi0", "tokens"), ("ki", "prefix"),
                                                 ("pi0", "expert"), ("hybrid", "tokens")])
def test_sampling_takes_its_first_step_with_the_training_velocity(variant, state_input):
    """One Euler step from t = 1 is x = noise - v: sample_actions on the prompt alone must see the
    velocity forward() trains, positions and masks included."""
    net, batch = model(variant, state_input=state_input), masked_batch()
    batch = make_batch_rows(batch, 2)
    noise = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(3))
    t = torch.ones(2)
    with torch.no_grad():
        trained = net(batch, noise=noise, t=t)["velocity"]
    stepped = net.sample_actions(prefix_only(batch), num_steps=1, noise=noise)
    torch.testing.assert_close(noise - stepped, trained, atol=1e-5, rtol=1e-4)


def test_flow_time_follows_beta_1_5_1_scaled_into_0_001_1_and_noise_is_standard_normal():
    from scipy import stats

    noise, t = sample_flow_inputs((20_000, 2, 3), torch.Generator().manual_seed(0))
    assert t.min() >= 0.001 and t.max() <= 1.0
    assert stats.kstest(((t - 0.001) / 0.999).numpy(), "beta", args=(1.5, 1.0)).pvalue > 0.01
    assert stats.kstest(((t - 0.001) / 0.999).numpy(), "uniform").pvalue < 1e-6  # the test can tell them apart
    assert stats.kstest(noise.flatten().numpy(), "norm").pvalue > 0.01


def test_the_time_embedding_is_sines_then_cosines_over_log_spaced_periods():
    t = torch.tensor([0.0, 0.25, 1.0])
    fraction = np.linspace(0.0, 1.0, 4)
    period = 4e-3 * (4.0 / 4e-3) ** fraction
    angle = np.array([0.0, 0.25, 1.0])[:, None] / period * 2 * math.pi
    expected = np.concatenate([np.sin(angle), np.cos(angle)], axis=1)
    np.testing.assert_allclose(timestep_embedding(t, 8).numpy(), expected, atol=2e-4)  # float32 angles up to 1571 rad


# ------------------------------------------------------------------------------ generation
COUNT = 6  # tokens each row continues with


@pytest.fixture(scope="module")
def counter():
    """A pi0-FAST model trained to continue its prompt's last token p with p+1, p+2, ...: logits
    that depend on the prefix, so cached and recomputed generation can differ if either is wrong."""
    net = model("pi0_fast", seed=3)
    g = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(250):
        batch = counting_batch(torch.randint(100, 200, (8,), generator=g), torch.randint(2, 5, (8,), generator=g))
        loss = net(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval()


def counting_batch(starts: torch.Tensor, prompt_lengths: torch.Tensor, *, targets: bool = True) -> dict:
    """Rows: prompt (prompt_length tokens ending at ``start``), then ``start + 1 ... + COUNT``
    (targets) or padding; left-aligned, padded after."""
    rows, length = len(starts), 5 + COUNT
    tokens = torch.zeros(rows, length, dtype=torch.long)
    token_mask = torch.zeros(rows, length, dtype=torch.bool)
    ar = torch.zeros(rows, length, dtype=torch.bool)
    for row, (start, prompt) in enumerate(zip(starts.tolist(), prompt_lengths.tolist())):
        tokens[row, :prompt] = torch.arange(start - prompt + 1, start + 1)
        token_mask[row, :prompt] = True
        if targets:
            tokens[row, prompt:prompt + COUNT] = torch.arange(start + 1, start + 1 + COUNT)
            token_mask[row, prompt:prompt + COUNT] = ar[row, prompt:prompt + COUNT] = True
    return {"images": torch.zeros(rows, 2, 3, 32, 32), "image_mask": torch.zeros(rows, 2, dtype=torch.bool),
            "tokens": tokens, "ar": ar, "loss": ar.clone(), "token_mask": token_mask,
            "state": torch.zeros(rows, 8), "state_dim_mask": torch.zeros(rows, 8, dtype=torch.bool)}


def test_greedy_generation_continues_what_the_model_learned(counter):
    prompt = counting_batch(torch.tensor([120, 150]), torch.tensor([4, 2]), targets=False)  # row 1 padded
    generated = counter.generate(prompt, COUNT)
    assert generated.tolist() == [list(range(121, 121 + COUNT)), list(range(151, 151 + COUNT))]


def test_cached_generation_gives_recomputations_logits_at_every_step(counter):
    prompt = counting_batch(torch.tensor([120, 150]), torch.tensor([4, 2]), targets=False)
    cached, cached_logits = counter.generate(prompt, COUNT, return_logits=True)
    again, again_logits = counter.generate(prompt, COUNT, use_cache=False, return_logits=True)
    assert torch.equal(cached, again)
    torch.testing.assert_close(cached_logits, again_logits, atol=1e-4, rtol=1e-4)
    assert len({int(a) for a in cached_logits[0].argmax(-1)}) == COUNT  # a different token at every step


def test_a_row_stops_at_its_stop_token_and_pads_with_it_while_the_others_go_on(counter):
    prompt = counting_batch(torch.tensor([120, 150]), torch.tensor([4, 2]), targets=False)
    generated = counter.generate(prompt, COUNT, stop_ids=(123,))
    assert generated.tolist() == [[121, 122, 123, 123, 123, 123], list(range(151, 151 + COUNT))]


def test_generation_ends_once_every_row_has_stopped_with_the_same_tokens(counter, monkeypatch):
    """Rows stop at 123 and 153 (third token): two decoder passes after the prefix's, not
    COUNT - 1, and the rows read as if every step had run (padded with their stop token)."""
    prompt = counting_batch(torch.tensor([120, 150]), torch.tensor([4, 2]), targets=False)
    passes = []
    project = type(counter.layers[0]).project
    monkeypatch.setattr(counter.layers[0], "project", lambda *a: passes.append(a[0].shape[1]) or project(counter.layers[0], *a))
    generated = counter.generate(prompt, COUNT, stop_ids=(123, 153))
    assert generated.tolist() == [[121, 122, 123, 123, 123, 123], [151, 152, 153, 153, 153, 153]]
    assert passes == [2 * 16 + prompt["tokens"].shape[1], 1, 1]  # the prefix (2 cameras x 16 patches + text), then a token each
    assert torch.equal(generated, counter.generate(prompt, COUNT, stop_ids=(123, 153), use_cache=False))


# ------------------------------------------------------------------------------ train, then sample
CHUNKS = 4  # prompts, each with its own action chunk [4, 8]
FAST_OFFSET = 1000  # model id = FAST id + offset (the tiny vocabulary has room above)


def chunk_set() -> torch.Tensor:
    steps = torch.linspace(0, 1, 4)[:, None]
    return torch.stack([0.8 * torch.sin(2 * math.pi * (steps + row / CHUNKS) + torch.arange(8) / 3) for row in range(CHUNKS)])


def prompt_rows(extra: list[list[int]] | None = None) -> dict:
    """Row i: prompt tokens (10 + i, 20 + i, 30 + i), then ``extra[i]`` as causal targets."""
    extra = extra or [[] for _ in range(CHUNKS)]
    length = 3 + max(map(len, extra))
    tokens = torch.zeros(CHUNKS, length, dtype=torch.long)
    token_mask = torch.zeros(CHUNKS, length, dtype=torch.bool)
    ar = torch.zeros(CHUNKS, length, dtype=torch.bool)
    for row, targets in enumerate(extra):
        tokens[row, :3] = torch.tensor([10 + row, 20 + row, 30 + row])
        tokens[row, 3 : 3 + len(targets)] = torch.tensor(targets, dtype=torch.long)
        token_mask[row, : 3 + len(targets)] = True
        ar[row, 3 : 3 + len(targets)] = True
    actions = chunk_set()
    return {"images": torch.zeros(CHUNKS, 2, 3, 32, 32), "image_mask": torch.zeros(CHUNKS, 2, dtype=torch.bool),
            "tokens": tokens, "ar": ar, "loss": ar.clone(), "token_mask": token_mask,
            "prefix_length": torch.full((CHUNKS,), 3), "state": torch.zeros(CHUNKS, 8),
            "state_dim_mask": torch.zeros(CHUNKS, 8, dtype=torch.bool), "actions": actions,
            "action_valid": torch.ones(CHUNKS, 4, dtype=torch.bool), "action_dim_mask": torch.ones(CHUNKS, 8, dtype=torch.bool),
            "has_actions": torch.ones(CHUNKS, dtype=torch.bool)}


def fit(net, batch, steps: int) -> None:
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = net(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()


def test_a_flow_expert_trained_on_a_few_chunks_samples_them_back():
    net = model("pi0", seed=4, action_horizon=4)
    fit(net, prompt_rows(), 600)
    noise = torch.randn(CHUNKS, 4, 8, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        sampled = net.sample_actions(prompt_rows(), num_steps=10, noise=noise)
    # each prompt's own chunk, from fresh noise (chunks lie ~0.5 apart in mean absolute difference)
    distance = (sampled[:, None] - chunk_set()[None]).abs().mean(dim=(2, 3))  # [sampled row, chunk]
    assert distance.diagonal().max() < 0.1, distance
    assert (distance.argmin(dim=1) == torch.arange(CHUNKS)).all()


def test_pi0_fast_trained_on_a_few_chunks_generates_their_tokens():
    from kidata.sources.synthetic import action_chunks
    from kidata.tokenizers.fast import FastTokenizer

    fast = FastTokenizer.fit(action_chunks(400, 4, 8, seed=2), vocab_size=256)
    ids = fast.encode(chunk_set().numpy())
    stop = 999
    targets = [[FAST_OFFSET + int(i) for i in row] + [stop] for row in ids]
    net = model("pi0_fast", seed=4, action_horizon=4)
    fit(net, prompt_rows(targets), 300)
    with torch.no_grad():
        generated = net.generate(prompt_rows(), max(map(len, targets)), stop_ids=(stop,)).numpy()
    rows = [[int(t) - FAST_OFFSET for t in row[: list(row).index(stop)]] for row in generated]
    assert rows == [row.tolist() for row in ids]
    decoded, ok = fast.decode(rows, horizon=4, dim=8)
    assert ok.all() and np.abs(decoded - chunk_set().numpy()).max() < 0.1  # FAST's rounding at scale 10
