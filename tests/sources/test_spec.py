"""A user's own dataset mapping (an rlds source's ``mapping`` table or kidata_mapping.json) read into a
DatasetSpec: each required key of the wrong type is one sentence naming the key."""

from __future__ import annotations

import pytest

from kidata.sources.spec import spec_from_mapping

MAPPING = {"cameras": {"base_0": "image"}, "state": ["state[:7]"], "action": ["action"], "fps": 10}


@pytest.mark.parametrize(("key", "value", "message"), [
    ("cameras", ["image"], r"cameras = \['image'\]: expected a table of standard camera = observation key"),
    ("state", "state", r"state = 'state': expected a list of parts, e\.g\. \[\"state\[:7\]\"\]$"),
    ("action", [3], r"action = \[3\]: expected a list of parts"),
    ("fps", "ten", r"fps = 'ten': expected a number of steps per second > 0$"),
    ("fps", 0, r"fps = 0: expected a number of steps per second > 0$"),
])
def test_a_mapping_key_of_the_wrong_type_is_refused_naming_it(key, value, message):
    with pytest.raises(ValueError, match=r"^dataset mapping 'mine': " + message):
        spec_from_mapping("mine", {**MAPPING, key: value})


def test_a_well_typed_mapping_reads_into_its_spec():
    spec = spec_from_mapping("mine", MAPPING)
    assert (dict(spec.cameras), spec.fps, len(spec.state), len(spec.action)) == ({"base_0": "image"}, 10.0, 1, 1)
