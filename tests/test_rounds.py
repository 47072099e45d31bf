"""Iterative pruning (models/rounds.py): the shapes of the rounds, and a round's provenance
composed into the original teacher's indices."""

import pytest

from kdmech.models.rounds import compose, round_shapes

GPT2 = ({"n_layer": 12, "d_model": 768, "d_mlp": 3072, "n_head": 12},
        {"n_layer": 3, "d_model": 192, "d_mlp": 768, "n_head": 6})
LLAMA = ({"n_layer": 8, "d_model": 256, "d_mlp": 688, "n_head": 8, "n_kv_head": 4},
         {"n_layer": 2, "d_model": 96, "d_mlp": 256, "n_head": 2, "n_kv_head": 1})


@pytest.mark.parametrize("teacher,target", [GPT2, LLAMA])
@pytest.mark.parametrize("rounds", [1, 2, 3, 5])
def test_rounds_shrink_monotonically_to_the_target(teacher, target, rounds):
    shapes = round_shapes(teacher, target, rounds)
    assert len(shapes) == rounds and shapes[-1] == target
    previous = teacher
    for shape in shapes:
        assert all(target[k] <= shape[k] <= previous[k] for k in target)
        if "n_kv_head" in shape:  # whole KV groups, each of the teacher's query heads per group
            assert shape["n_head"] == shape["n_kv_head"] * teacher["n_head"] // teacher["n_kv_head"]
        else:  # width divides into the heads, and no head grows wider than its parent's
            assert shape["d_model"] % shape["n_head"] == 0
            assert shape["d_model"] // shape["n_head"] <= previous["d_model"] // previous["n_head"]
        previous = shape


def test_each_round_prunes_by_about_the_same_factor():
    first, second, _ = round_shapes(*GPT2, 3)
    factor = (3 / 12) ** (1 / 3)  # the layers' per-round factor: 12 → 3 in three rounds
    assert first["n_layer"] == round(12 * factor) and second["n_layer"] == round(12 * factor ** 2)


def test_a_round_provenance_is_composed_into_the_teachers_indices():
    parent = {"layer_map": {"0": 1, "1": 4, "2": 7}, "heads_kept": {"0": [0, 2, 3], "1": [1, 2, 3], "2": [0, 1, 2]}}
    child = {"layer_map": {"0": 0, "1": 2}, "heads_kept": {"0": [1, 2], "1": [0, 2]}, "init": "importance"}
    out = compose(parent, child)
    assert out["layer_map"] == {"0": 1, "1": 7}
    assert out["heads_kept"] == {"0": [2, 3], "1": [0, 2]}
    assert out["parent_layer_map"] == child["layer_map"] and out["init"] == "importance"
