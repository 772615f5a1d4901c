"""The per-image outcome masks kept beside every evaluation row round-trip exactly."""

import numpy as np
import pytest

from capt.results import decode_mask, encode_mask


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 100, 2000])
def test_mask_round_trip(n):
    bits = np.random.default_rng(n).random(n) < 0.3
    assert np.array_equal(decode_mask(encode_mask(bits), n), bits)


def test_mask_is_compact():
    assert len(encode_mask(np.ones(2000, bool))) == 336  # 250 bytes of bits, base64


def test_mask_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="holds 16 bits but the row evaluated 30"):
        decode_mask(encode_mask(np.ones(10, bool)), 30)
    with pytest.raises(ValueError, match="not valid base64"):
        decode_mask("not base64!", 3)
