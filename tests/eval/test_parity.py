"""The inputs parity check (``kidata.eval.parity``) refuses a request that would compare nothing."""

from __future__ import annotations

import pytest

from kidata.eval.parity import check_parity


@pytest.mark.parametrize("samples", [0, -1])
def test_a_parity_check_of_no_samples_is_refused_naming_the_option_not_the_split(samples):
    with pytest.raises(ValueError, match=rf"^samples must be >= 1 \(held-out samples compared; --episodes with "
                                         rf"--check-parity\), got {samples}$"):
        check_parity(object(), samples=samples)
