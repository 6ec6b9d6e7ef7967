"""Trains ``tokenizers/demo-text`` (shipped in the top-level ``tokenizers/``): a small SentencePiece model with
PaliGemma's special layout.

No tokenizer can be downloaded on our machines, so the demo, the tests and the recipes use this one;
the code paths for PaliGemma's own tokenizer stay the same. Layout, as PaliGemma's: <pad> = 0,
<eos> = 1, <bos> = 2, <unk> = 3, then ``<image>`` and ``"\\n"``, the learned pieces, and at the very
end 1024 ``<locNNNN>`` and 128 ``<segNNN>`` tokens (so openpi's FAST mapping
``vocab_size - 1 - 128 - t`` lands on the ``<loc>`` tokens, as on PaliGemma). The training text is
generated here from templates we wrote; training is single-threaded and deterministic.

    python -m kidata.tokenizers.demo_text tokenizers/demo-text
"""

from __future__ import annotations

import io
import itertools
import sys
from pathlib import Path

LOC_TOKENS = [f"<loc{i:04d}>" for i in range(1024)]
SEG_TOKENS = [f"<seg{i:03d}>" for i in range(128)]
BASE_VOCAB = 896

_VERBS = ["pick up", "put", "place", "move", "push", "open", "close", "turn on", "turn off", "stack", "wipe",
          "pour", "grasp", "lift", "slide", "fold", "press", "rotate", "insert", "remove"]
_OBJECTS = ["the red block", "the blue cup", "the black bowl", "the plate", "the drawer", "the microwave",
            "the sponge", "the marker", "the towel", "the green bottle", "the ketchup", "the stove",
            "the cabinet door", "the mug", "the spoon", "the banana", "the lid", "the puck", "the peg", "the faucet"]
_PLACES = ["on the plate", "in the basket", "into the sink", "on the table", "in the top drawer",
           "next to the bowl", "on the shelf", "to the left", "to the right", "at the goal"]
_QUESTIONS = ["what color is {o}", "how many objects are on the table", "is {o} open", "where is {o}",
              "what is the robot holding", "what is next to {o}", "is there a cup in the image"]
_ANSWERS = ["yes", "no", "red", "blue", "green", "two", "three", "on the table", "in the drawer", "the gripper"]
_CAPTIONS = ["a robot arm reaching for {o}", "a kitchen counter with {o}", "a table with several objects",
             "a person holding {o}", "a gripper above {o}", "a cluttered desk with a laptop and a mug"]


def training_lines() -> list[str]:
    """The corpus: prompts in the layouts kidata emits, with every state bin value and verb."""
    lines = []
    for verb, obj, place in itertools.product(_VERBS, _OBJECTS, _PLACES):
        lines.append(f"Task: {verb} {obj} {place}, State: 12 128 255 0 64 200 31;\nAction: ")
        lines.append(f"Subtask: {verb} {obj};\n")
    for question, obj, answer in itertools.product(_QUESTIONS, _OBJECTS, _ANSWERS):
        lines.append(f"answer en {question.format(o=obj)}\n{answer}")
    for caption, obj in itertools.product(_CAPTIONS, _OBJECTS):
        lines.append(f"caption en\n{caption.format(o=obj)}")
        lines.append(f"detect {obj.removeprefix('the ')}\n")
        lines.append(f"point to {obj.removeprefix('the ')}\n")
    lines.append(" ".join(str(value) for value in range(256)) + " | ; : , .")
    return lines


def train(out_dir: str | Path) -> Path:
    """Trains the model and writes ``out_dir/tokenizer.model``; returns the path."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    buffer = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_lines()),
        model_writer=buffer,
        model_type="bpe",
        vocab_size=BASE_VOCAB,
        pad_id=0, eos_id=1, bos_id=2, unk_id=3,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<image>", "\n"],
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        split_digits=True,
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    proto = model_pb2.ModelProto()
    proto.ParseFromString(buffer.getvalue())
    for piece in LOC_TOKENS + SEG_TOKENS:
        entry = proto.pieces.add()
        entry.piece = piece
        entry.score = 0.0
        entry.type = model_pb2.ModelProto.SentencePiece.USER_DEFINED
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tokenizer.model"
    path.write_bytes(proto.SerializeToString())
    return path


if __name__ == "__main__":
    print(train(sys.argv[1] if len(sys.argv) > 1 else "tokenizers/demo-text"))
