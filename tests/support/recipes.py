"""Mixture recipes over the real fixtures in ../shared, written as the TOML files users write."""

from __future__ import annotations

from pathlib import Path

from support.data import shared_path


def write_recipe(path: Path, *, extra_mixture: str = "", sources: str | None = None, units: int = 3) -> Path:
    bridge = shared_path("data", "rlds", "bridge_dataset", "1.0.0")
    vqa = shared_path("data", "vqav2_allennlp")
    sources = sources if sources is not None else f"""
[[sources]]
name = "bridge"
reader = "rlds"
path = "{bridge}"
dataset = "bridge_dataset"

[[sources]]
name = "vqav2"
reader = "vqav2"
questions = "{vqa / 'questions.json'}"
annotations = "{vqa / 'annotations.json'}"
images = "{vqa / 'images'}"
weight = 0.2
"""
    path.write_text(f"""
[mixture]
name = "test-mix"
action_horizon = 4
image_size = 64
max_tokens = 128
holdout = 0.2
units_per_source = {units}
shard_size_mb = 0.25
fast_tokenizer = {{ fit = true, vocab_size = 300, scale = 10.0 }}
{extra_mixture}
{sources}
""")
    return path


def bridge_and_coco_detection_sources() -> str:
    coco = shared_path("data", "coco_detection")
    bridge = shared_path("data", "rlds", "bridge_dataset", "1.0.0")
    return f"""
[[sources]]
name = "bridge"
reader = "rlds"
path = "{bridge}"
dataset = "bridge_dataset"

[[sources]]
name = "coco"
reader = "coco_detection"
instances = "{coco / 'annotations' / 'instances_val2017.json'}"
images = "{coco / 'images' / 'val2017'}"
"""


def lerobot_recipe(path: Path, root: Path, units: int = 3) -> Path:
    """write_recipe's mixture settings over a LeRobot dataset at ``root`` as the one source."""
    return write_recipe(path, units=units, sources=f"""
[[sources]]
name = "bridge"
reader = "lerobot"
path = "{root}"

[sources.mapping]
cameras = {{ base_0 = "observation.images.image_0", base_1 = "observation.images.image_1" }}
state = ["observation.state"]
action = ["action"]
""")
