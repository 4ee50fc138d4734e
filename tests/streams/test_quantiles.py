import math

from streams.quantiles import nearest_rank


def test_nearest_rank():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert nearest_rank(values, 0.0) == 1.0
    assert nearest_rank(values, 0.5) == 3.0
    assert nearest_rank(values, 0.99) == 5.0
    assert nearest_rank(values, 1.0) == 5.0
    assert math.isnan(nearest_rank([], 0.5))
