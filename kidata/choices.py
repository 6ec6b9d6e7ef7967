"""Every closed set of values a config field or a command-line option may take, declared once as a
``Literal``: the dataclasses annotate their fields with these, validation reads their values
(``kidata.config.choices``), and the CLI offers them as ``choices=`` (listed in ``--help``).

Ground, and free of heavy imports, so that building the ``kidata`` parser costs no scipy or torch;
the modules that act on a choice re-export its tuple of values (``STATE_ENCODINGS``, ``VARIANTS``, ...).
"""

from __future__ import annotations

from typing import Literal

# the standard cameras every source's images are named by (``kidata.schema.CAMERA_NAMES``)
CameraName = Literal["base_0", "base_1", "left_wrist_0", "right_wrist_0"]

# recipes: [mixture]
StateEncoding = Literal["text", "special", "continuous"]  # paper, appendix C: text bins, special tokens, a vector
PromptFormat = Literal["pi05", "pi0fast", "pi0"]  # openpi's pi0.5, pi0-FAST and pi0 prompt layouts
Normalization = Literal["quantile", "mean_std"]
ActionIdRule = Literal["openpi", "offset"]  # action ids below the vocabulary's end (openpi) or at an offset
CaptionChoice = Literal["one", "all"]  # a captioned image: one sample with a drawn caption, or one per caption

# model presets: [model]
Variant = Literal["ki", "joint", "pi0", "pi0_fast", "frozen", "hybrid", "vlm"]
ActionTokens = Literal["fast", "bins"]  # the discrete objective the manifest's action tokenizer must match
StateInput = Literal["tokens", "prefix", "expert"]
TimeConditioning = Literal["adarms", "concat"]

# training: [train], [policy]
InitFormat = Literal["paligemma", "openpi", "kidata"]  # what train.init_from holds
TrainPrecision = Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on CUDA, fp32 on CPU
FrozenWeights = Literal["fp32", "bf16"]  # how frozen linear / convolution weights are stored
ActionHead = Literal["auto", "flow", "fast"]  # the flow expert, greedy FAST tokens, or the expert when there is one
FastFallback = Literal["relaxed", "flow"]  # what acts when FAST tokens do not decode exactly

# inference: kidata eval / serve --precision, kidata.policy.load(precision=)
InferencePrecision = Literal["float32", "bfloat16"]
