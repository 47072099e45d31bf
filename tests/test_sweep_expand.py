"""`--count` for grid sweeps: at most this many points, the grid's first ones, in order."""

from kdmech.sweep import expand

GRID = {"method": "grid", "parameters": {"capacity.depth": {"values": [0.25, 0.5, 0.75]},
                                         "training.seed": {"values": [0, 1]},
                                         "teacher": {"value": "t"}}}


def test_grid_count_takes_the_first_points():
    everything = expand(GRID)
    assert len(everything) == 6
    assert expand(GRID, count=4) == everything[:4]
    assert expand(GRID, count=1) == [{"capacity.depth": 0.25, "training.seed": 0, "teacher": "t"}]


def test_grid_count_above_the_grid_or_absent_is_the_whole_grid():
    assert expand(GRID, count=100) == expand(GRID) == expand(GRID, count=None)
