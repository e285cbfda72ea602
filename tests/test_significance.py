import pytest

from cifar.significance import holm


def test_holms_method_multiplies_the_ordered_p_values_by_the_comparisons_left_and_keeps_their_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])  # 3 x 0.01, 2 x 0.03, then kept
    assert holm([0.2, 0.001]) == pytest.approx([0.2, 0.002])
    assert holm([0.6, 0.5]) == [1.0, 1.0]  # at most 1
    assert holm([0.04]) == [0.04]  # one comparison: as it was
