"""The conv register-tile rule shared by the schedule and the estimator, by hand."""

from edgert.compilers.backends.cpu_tiles import conv_tile_columns, packs_weight


def test_tile_is_the_largest_divisor_from_4_to_12_else_the_short_row_else_8():
    assert [conv_tile_columns(w) for w in (1, 3, 4, 6, 8, 12)] == [1, 3, 4, 6, 8, 12]  # whole row
    assert conv_tile_columns(16) == 8 and conv_tile_columns(32) == 8 and conv_tile_columns(24) == 12
    assert conv_tile_columns(14) == 7 and conv_tile_columns(28) == 7 and conv_tile_columns(56) == 8
    assert conv_tile_columns(13) == 8 and conv_tile_columns(17) == 8  # prime: ragged tiles of 8


def test_packs_weight_needs_whole_vectors_of_outputs_per_group():
    assert packs_weight(32, 8) and packs_weight(8, 8) and packs_weight(4, 4)
    assert not packs_weight(1, 8)   # depthwise: one output per group
    assert not packs_weight(12, 8)  # 12 outputs do not fill vectors of 8
