"""Samples: token streams and masks as openpi builds them, FAST through the text vocabulary."""

from __future__ import annotations

import re

import numpy as np
import pytest

from kidata.sources.synthetic import action_chunks
from kidata.tokenizers.bins import BinTokenizer
from kidata.tokenizers.fast import FastTokenizer
from kidata.tokenizers.inspect import describe_sample
from kidata.tokenizers.prompt import SampleEncoder, SampleRejected
from kidata.tokenizers.ranges import ActionIdMap, RangeCollision
from kidata.tokenizers.text import TextTokenizer

DEMO_TEXT = "tokenizers/demo-text"
STATE = np.array([0.1, -0.5, 1.2, -1.0], dtype=np.float32)  # 1.2 lies outside [-1, 1]: clipped
STATE_BINS = "140 64 255 0"


@pytest.fixture(scope="module")
def text():

    return TextTokenizer.load(DEMO_TEXT)  # the shipped asset


@pytest.fixture(scope="module")
def chunk_and_fast():
    chunks = action_chunks(2000, 10, 7, seed=1)
    return chunks[5], FastTokenizer.fit(chunks, vocab_size=1024)


def openpi_ids(text, fast, chunk):
    """openpi's mapping: PaliGemma id = vocab_size - 1 - 128 - FAST id."""
    return [text.vocab_size - 1 - 128 - t for t in fast.encode(chunk)[0].tolist()]


def test_pi05_text_state_stream(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    encoder = SampleEncoder(text, fast)
    sample = encoder.robot("  pick_up the cup\n", STATE, chunk, np.ones(10, bool))
    prefix = [text.bos_id] + text.encode(f"Task: pick up the cup, State: {STATE_BINS};\nAction: ")
    postfix = openpi_ids(text, fast, chunk) + text.encode("|") + [text.eos_id]
    assert sample.tokens.tolist() == prefix + postfix
    assert sample.prefix_length == len(prefix)
    assert sample.ar.tolist() == [False] * len(prefix) + [True] * len(postfix)
    assert sample.loss.tolist() == sample.ar.tolist()
    assert sample.fast_span == (len(prefix), len(prefix) + len(postfix) - 2)
    assert sample.has_actions and encoder.stats.clipped_state_values == 1


def test_pi0fast_moves_action_prefix_into_the_postfix_and_lower_cases(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    sample = SampleEncoder(text, fast, prompt_format="pi0fast").robot("Pick Up The Cup", STATE, chunk, np.ones(10, bool))
    prefix = text.encode(f"Task: pick up the cup, State: {STATE_BINS};\n", add_bos=True)
    postfix = text.encode("Action: ") + openpi_ids(text, fast, chunk) + text.encode("|", add_eos=True)
    assert sample.tokens.tolist() == prefix + postfix
    assert sample.loss.sum() == len(postfix) and sample.prefix_length == len(prefix)


def test_special_state_uses_one_reserved_token_per_dimension(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    encoder = SampleEncoder(text, fast, state_encoding="special", special_state_first=100)
    sample = encoder.robot("wave", STATE, chunk, np.ones(10, bool))
    prefix = text.encode("Task: wave, State: ", add_bos=True) + [240, 164, 355, 100] + text.encode(";\nAction: ")
    assert sample.tokens[: sample.prefix_length].tolist() == prefix
    assert encoder.ranges == {"fast_token_range": [896, 1919], "special_state_range": [100, 355]}


def test_continuous_state_drops_the_state_text_and_marks_the_slot(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    sample = SampleEncoder(text, fast, state_encoding="continuous").robot("wave", STATE, chunk, np.ones(10, bool))
    prefix = text.encode("Task: wave;\nAction: ", add_bos=True)
    assert sample.tokens[: sample.prefix_length].tolist() == prefix
    assert sample.state_slot == len(prefix)
    np.testing.assert_array_equal(sample.state, STATE)


def test_subtask_target_precedes_the_actions_with_loss_on_both(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    sample = SampleEncoder(text, fast).robot("clean up", STATE, chunk, np.ones(10, bool), subtask="pick_up the sponge")
    prefix = text.encode(f"Task: clean up, State: {STATE_BINS};\n", add_bos=True)
    postfix = text.encode("Subtask: pick up the sponge;\nAction: ") + openpi_ids(text, fast, chunk) + text.encode("|", add_eos=True)
    assert sample.tokens.tolist() == prefix + postfix
    assert sample.loss.tolist() == [False] * len(prefix) + [True] * len(postfix)


def test_fast_round_trip_through_the_text_vocabulary_equals_direct_decode(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    encoder = SampleEncoder(text, fast)
    sample = encoder.robot("wave", STATE, chunk, np.ones(10, bool))
    through, ok_through = fast.decode([encoder.action_tokens_of(sample)], horizon=10, dim=7)
    direct, ok_direct = fast.decode(fast.encode(chunk), horizon=10, dim=7)
    np.testing.assert_array_equal(through, direct)
    assert ok_through.all() and ok_direct.all()


def test_mapping_back_rejects_ids_outside_the_action_range(text):
    id_map = ActionIdMap(text.vocab_size, 1024)
    assert id_map.range.as_list() == [896, 1919]
    assert id_map.to_action(id_map.to_text([0, 5, 1023])).tolist() == [0, 5, 1023]
    with pytest.raises(ValueError, match="outside the action range"):
        id_map.to_action([895])
    assert ActionIdMap(text.vocab_size, 256, rule="offset", offset=10).to_text([0, 255]).tolist() == [10, 265]


def test_colliding_ranges_are_refused_with_both_named(text, chunk_and_fast):
    _, fast = chunk_and_fast
    with pytest.raises(RangeCollision, match=r"action tokens \[896, 1919\] overlap <loc> tokens"):
        SampleEncoder(text, fast, uses_loc_tokens=True)


def test_a_range_collision_names_the_fix_that_works_and_that_fix_encodes(text, chunk_and_fast):
    _, fast = chunk_and_fast
    fix = (f'fast_token_rule = "offset" and fast_token_offset = {text.vocab_size}, then train with --model.vocab_size '
           f"{text.vocab_size + fast.vocab_size}")
    with pytest.raises(RangeCollision, match=re.escape(fix)):
        SampleEncoder(text, fast, uses_loc_tokens=True)
    appended = ActionIdMap(text.vocab_size, fast.vocab_size, rule="offset", offset=text.vocab_size)
    assert SampleEncoder(text, fast, uses_loc_tokens=True, id_map=appended).id_map.range.last == text.vocab_size + fast.vocab_size - 1
    with pytest.raises(RangeCollision, match="special state tokens"):
        SampleEncoder(text, fast, state_encoding="special", special_state_first=1800)
    with pytest.raises(RangeCollision, match="do not fit"):
        ActionIdMap(text.vocab_size, 2048)


def test_action_ids_appended_past_the_text_vocabulary_leave_the_loc_tokens_to_pointing(text, chunk_and_fast):
    """With every text id in use (<loc> included), the offset rule at the text vocabulary's end
    appends the action ids; an offset that would straddle the end is still refused."""
    _, fast = chunk_and_fast
    appended = ActionIdMap(text.vocab_size, 1024, rule="offset", offset=text.vocab_size)
    encoder = SampleEncoder(text, fast, id_map=appended, uses_loc_tokens=True)
    assert encoder.id_map.range.as_list() == [2048, 3071]
    with pytest.raises(RangeCollision, match="do not fit"):
        ActionIdMap(text.vocab_size, 1024, rule="offset", offset=text.vocab_size - 10)


def test_overlong_samples_are_rejected_not_truncated(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    with pytest.raises(SampleRejected) as rejected:
        SampleEncoder(text, fast, max_tokens=20).robot("wave", STATE, chunk, np.ones(10, bool))
    assert rejected.value.reason == "too_long"


def test_vlm_samples_carry_loss_exactly_on_the_target(text, chunk_and_fast):
    _, fast = chunk_and_fast
    encoder = SampleEncoder(text, fast)
    caption = encoder.caption("a cup on a table")
    assert caption.tokens.tolist() == text.encode("caption en\n", add_bos=True) + text.encode("a cup on a table", add_eos=True)
    assert caption.tokens[caption.loss].tolist() == text.encode("a cup on a table", add_eos=True)
    vqa = encoder.vqa("what color is the cup", "blue")
    assert vqa.tokens[vqa.loss].tolist() == text.encode("blue", add_eos=True)
    assert vqa.tokens[~vqa.loss].tolist() == text.encode("answer en what color is the cup\n", add_bos=True)
    point = encoder.point("cup", [(0.25, 0.5)])
    assert point.tokens[point.loss].tolist() == [text.loc_id(256), text.loc_id(512)] + text.encode(" cup", add_eos=True)
    assert not (caption.has_actions or vqa.has_actions or point.has_actions)


def test_detection_boxes_are_four_locs_in_y_x_order_joined_by_semicolons(text, chunk_and_fast):
    _, fast = chunk_and_fast
    sample = SampleEncoder(text, fast).detect("cup", [(0.1, 0.2, 0.5, 0.6), (0.0, 0.0, 1.0, 1.0)])
    target = ([text.loc_id(b) for b in (102, 204, 512, 614)] + text.encode(" cup") + text.encode(" ; ")
              + [text.loc_id(b) for b in (0, 0, 1023, 1023)] + text.encode(" cup", add_eos=True))
    assert sample.tokens[sample.loss].tolist() == target


def test_naive_bins_stand_in_for_fast_with_the_same_layout(text, chunk_and_fast):
    chunk, _ = chunk_and_fast
    bins = BinTokenizer(stride=5)
    encoder = SampleEncoder(text, bins)
    sample = encoder.robot("wave", STATE, chunk, np.ones(10, bool))
    start, stop = sample.fast_span
    assert stop - start == 2 * 7
    assert encoder.action_tokens_of(sample).tolist() == bins.encode(chunk)[0].tolist()
    assert sample.tokens[stop:].tolist() == text.encode("|", add_eos=True)


def test_inspect_shows_boundary_loss_and_decoded_actions(text, chunk_and_fast):
    chunk, fast = chunk_and_fast
    encoder = SampleEncoder(text, fast)
    shown = describe_sample(encoder.robot("wave", STATE, chunk, np.ones(10, bool)), encoder)
    assert "Task: wave, State: 140 64 255 0;\\nAction:  || [<" in shown
    assert "[|][<eos>]" in shown and "decodes ok=True" in shown and "state bins: [140, 64, 255, 0]" in shown


def test_action_range_may_not_cover_bos_eos_pad_or_image(text, chunk_and_fast):
    _, fast = chunk_and_fast
    with pytest.raises(RangeCollision, match="the BOS token"):
        SampleEncoder(text, fast, id_map=ActionIdMap(text.vocab_size, 1024, rule="offset", offset=0))


def test_an_episodes_chunks_tokenized_together_equal_one_by_one(text, chunk_and_fast):
    _, fast = chunk_and_fast
    chunks = action_chunks(40, 10, 7, seed=2)
    encoder = SampleEncoder(text, fast)
    together = encoder.action_ids_batch(chunks)
    assert [ids.tolist() for ids in together] == [encoder._action_ids(chunk).tolist() for chunk in chunks]
    assert encoder.stats.clipped_action_chunks == 0 and encoder.action_ids_batch(chunks[:0]) == []


def test_chunks_tokenized_together_count_each_clipped_chunk(text, chunk_and_fast):
    _, fast = chunk_and_fast
    chunks = action_chunks(6, 10, 7, seed=3)
    chunks[[1, 4]] *= 1000.0  # far outside the fitted range: DCT coefficients clip
    encoder = SampleEncoder(text, fast)
    together = encoder.action_ids_batch(chunks)
    assert encoder.stats.clipped_action_chunks == 2
    assert [ids.tolist() for ids in together] == [SampleEncoder(text, fast)._action_ids(c).tolist() for c in chunks]
