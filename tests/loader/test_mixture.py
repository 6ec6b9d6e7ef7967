"""The mixture loader: weights, disjoint consumers, resume, collation, expectations."""

from __future__ import annotations

import collections
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the loader needs torch")
pytest.importorskip("tensorflow_datasets", reason="the fixture build reads RLDS")

from support.recipes import write_recipe  # noqa: E402

from kidata.loader.collate import Augment, collate  # noqa: E402
from kidata.loader.mixture import MixtureDataset, MixtureSettings, _SourceStream  # noqa: E402
from kidata.manifest import BuildDir, ManifestMismatch  # noqa: E402
from kidata.pipelines.build import build  # noqa: E402
from kidata.pipelines.recipe import load_recipe  # noqa: E402


@pytest.fixture(scope="module")
def manifest_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    recipe = load_recipe(write_recipe(root / "r.toml", units=1))
    build(recipe, str(root / "out"), progress=False)
    return str(root / "out" / "manifest.json")


def keys(dataset, count):
    return [s["__key__"] for s in itertools.islice(iter(dataset), count)]


def test_realised_source_frequencies_follow_the_weights(manifest_path):
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(weights={"bridge": 0.7, "vqav2": 0.3}, decode_images=False))
    counts = collections.Counter(s["source"] for s in itertools.islice(iter(dataset), 10_000))
    assert abs(counts["bridge"] / 10_000 - 0.7) < 0.02 and abs(counts["vqav2"] / 10_000 - 0.3) < 0.02


def test_balance_scales_each_sources_weight_by_its_sample_count(manifest_path):
    plain = MixtureDataset(BuildDir(manifest_path), MixtureSettings(decode_images=False))
    samples = {p.name: sum(count for _, count in p.shards) for p in plain.plans}
    balanced = MixtureDataset(BuildDir(manifest_path), MixtureSettings(balance=True, decode_images=False))
    raw = {"bridge": 1.0 * samples["bridge"], "vqav2": 0.2 * samples["vqav2"]}
    expected = {name: value / sum(raw.values()) for name, value in raw.items()}
    assert balanced.weights == pytest.approx(expected) and expected["vqav2"] < 0.01 < plain.weights["vqav2"]
    counts = collections.Counter(s["source"] for s in itertools.islice(iter(balanced), 20_000))
    assert abs(counts["vqav2"] / 20_000 - expected["vqav2"]) < 0.003  # ~3 sigma of 20,000 draws


def test_manifest_weights_are_the_default(manifest_path):
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(decode_images=False))
    assert dataset.weights == pytest.approx({"bridge": 1 / 1.2, "vqav2": 0.2 / 1.2})


def test_consumers_read_disjoint_streams_that_cover_each_epoch(manifest_path):
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(decode_images=False))
    for plan in dataset.plans:
        total = sum(count for _, count in plan.shards)
        seen = []
        for consumer in range(4):  # world_size 2 x 2 dataloader workers
            stream = _SourceStream(plan, consumer, 4, seed=0, block=16)
            length = stream._epoch_length(0)
            seen.append([stream.next()[0] for _ in range(length)])
        flat = [key for part in seen for key in part]
        if total >= 4:
            assert len(flat) == len(set(flat)) == total  # disjoint and complete
        else:
            assert set(flat) <= {k for part in seen for k in part} and all(seen)  # nobody starves


def test_two_ranks_with_two_workers_see_different_samples_in_each_step(manifest_path):
    batches = {}
    for rank in (0, 1):
        dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(decode_images=False, weights={"bridge": 1.0}),
                                 rank=rank, world_size=2)
        loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, collate_fn=lambda b: [s["__key__"] for s in b])
        batches[rank] = list(itertools.islice(iter(loader), 6))
    for step in range(6):
        assert not set(batches[0][step]) & set(batches[1][step])


def test_fewer_shards_than_workers_does_not_hang(manifest_path):
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(decode_images=False, weights={"vqav2": 1.0}), world_size=1)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, collate_fn=lambda b: b)
    assert len(list(itertools.islice(iter(loader), 4))) == 4


def test_resume_in_process_continues_exactly(manifest_path):
    first = MixtureDataset(BuildDir(manifest_path), MixtureSettings(seed=3, decode_images=False))
    uninterrupted = keys(first, 250)
    partial = MixtureDataset(BuildDir(manifest_path), MixtureSettings(seed=3, decode_images=False))
    assert keys(partial, 150) == uninterrupted[:150]
    resumed = MixtureDataset(BuildDir(manifest_path), MixtureSettings(seed=3, decode_images=False))
    resumed.load_state_dict(partial.state_dict())
    assert keys(resumed, 100) == uninterrupted[150:]


def test_resume_with_a_multi_worker_dataloader(manifest_path):
    def loader(dataset):
        return iter(torch.utils.data.DataLoader(dataset, batch_size=3, num_workers=2,
                                                collate_fn=lambda b: [s["__key__"] for s in b]))

    settings = MixtureSettings(seed=5, decode_images=False)
    straight = list(itertools.islice(loader(MixtureDataset(BuildDir(manifest_path), settings)), 10))
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(seed=5, decode_images=False))
    state = dataset.state_after_batches(batches=7, batch_size=3, num_workers=2)
    resumed = MixtureDataset(BuildDir(manifest_path), MixtureSettings(seed=5, decode_images=False))
    resumed.load_state_dict(state)
    assert list(itertools.islice(loader(resumed), 3)) == straight[7:10]


def test_collation_of_a_mixed_batch_has_the_documented_shapes_and_masks(manifest_path):
    dataset = MixtureDataset(BuildDir(manifest_path), MixtureSettings(weights={"bridge": 0.5, "vqav2": 0.5}, seed=1))
    samples = list(itertools.islice(iter(dataset), 8))
    assert {s["source"] for s in samples} == {"bridge", "vqav2"}
    batch = collate(samples, max_tokens=128, action_dim=8, action_horizon=4, state_dim=10,
                    cameras=("base_0", "base_1", "left_wrist_0"))
    assert batch["images"].shape == (8, 3, 3, 64, 64) and batch["images"].dtype == torch.float32
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1
    robot = torch.tensor([s["source"] == "bridge" for s in samples])
    assert batch["image_mask"].tolist() == [[True, True, False] if r else [True, False, False] for r in robot.tolist()]
    assert (batch["has_actions"] == robot).all()
    assert batch["actions"].shape == (8, 4, 8) and batch["action_dim_mask"][robot].sum(1).tolist() == [7] * int(robot.sum())
    assert not batch["action_dim_mask"][~robot].any() and not batch["action_valid"][~robot].any()
    assert batch["state"].shape == (8, 10) and (batch["state_dim_mask"].sum(1) == robot * 7).all()
    lengths = torch.tensor([len(s["tokens"]) for s in samples])
    assert (batch["token_mask"].sum(1) == lengths).all()
    assert not (batch["loss"] & ~batch["token_mask"]).any() and not (batch["ar"] & ~batch["token_mask"]).any()
    np.testing.assert_array_equal(batch["tokens"][0, : lengths[0]].numpy(), samples[0]["tokens"])


def test_a_mismatched_tokenizer_or_encoding_is_refused(manifest_path):
    with pytest.raises(ManifestMismatch, match="fast_sha256"):
        MixtureDataset(BuildDir(manifest_path), MixtureSettings(expect={"fast_sha256": "0" * 64}))
    with pytest.raises(ManifestMismatch, match="encoding.action_horizon: build has 4, expected 10"):
        MixtureDataset(BuildDir(manifest_path), MixtureSettings(expect={"encoding": {"action_horizon": 10}}))


def test_augmentation_is_seeded_and_spares_wrist_geometry():
    image = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    augment = Augment()
    first = augment("base_0", image, np.random.default_rng(1))
    again = augment("base_0", image, np.random.default_rng(1))
    assert torch.equal(first, again) and first.shape == (3, 64, 64)
    wrist = augment("left_wrist_0", image, np.random.default_rng(1))
    no_geometry = Augment(crop=1.0, degrees=0.0)("base_0", image, np.random.default_rng(1))
    assert not torch.allclose(first, wrist)
    assert torch.allclose(Augment(crop=1.0, degrees=0.0)._jitter(torch.zeros(3, 2, 2), np.random.default_rng(0)),
                          torch.zeros(3, 2, 2))
    assert no_geometry.shape == wrist.shape


def test_collate_infers_the_image_size_of_augmented_channel_first_images():
    augmented = Augment()("base_0", np.zeros((96, 96, 3), dtype=np.uint8), np.random.default_rng(0))
    sample = {"tokens": np.array([5, 6]), "ar": np.zeros(2, bool), "loss": np.zeros(2, bool),
              "meta": {"prefix_length": 2}, "images": {"base_0": augmented}, "source_index": 0}
    batch = collate([sample], max_tokens=4, action_dim=2, action_horizon=3, state_dim=2, cameras=("base_0",))
    assert tuple(batch["images"].shape) == (1, 1, 3, 96, 96)
    torch.testing.assert_close(batch["images"][0, 0], augmented)


def test_an_augment_table_sets_strengths_and_zero_turns_geometry_off():
    image = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    colour_only = Augment.from_setting({"crop": 1.0, "degrees": 0.0, "brightness": 0.0, "contrast": 0.0,
                                        "saturation": 0.0})
    unchanged = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0 * 2.0 - 1.0
    torch.testing.assert_close(colour_only("base_0", image, np.random.default_rng(3)), unchanged)
    assert Augment.from_setting(False) is None
    assert Augment.from_setting(True).degrees == 5.0 and Augment.from_setting({"degrees": 2}).crop == 0.95
    with pytest.raises(ValueError, match=r"augment crop must be in \(0, 1\].*got 1.5"):
        Augment.from_setting({"crop": 1.5})
    with pytest.raises(ValueError, match="augment degrees must be finite and >= 0.*got -1"):
        Augment.from_setting({"degrees": -1})
    with pytest.raises(ValueError, match="augment brightness must be finite and >= 0.*got nan"):
        Augment.from_setting({"brightness": float("nan")})
