from __future__ import annotations

from rtdetr_edge.shape_ranges import (
    ShapeRange,
    collection_batch_sizes,
    parse_shape_range_text,
    shape_file_covers,
)

SAMPLE = """shape_range_info {
  name: "image"
  min_shape: 1
  min_shape: 3
  min_shape: 640
  min_shape: 640
  max_shape: 4
  max_shape: 3
  max_shape: 640
  max_shape: 640
  opt_shape: 1
  opt_shape: 3
  opt_shape: 640
  opt_shape: 640
}
shape_range_info {
  name: "batch_norm2d_0.b_0"
  min_shape: 16
  max_shape: 16
  opt_shape: 16
}
"""


def test_parse() -> None:
    ranges = parse_shape_range_text(SAMPLE)
    assert ranges["image"] == ShapeRange((1, 3, 640, 640), (4, 3, 640, 640), (1, 3, 640, 640))
    assert ranges["batch_norm2d_0.b_0"].max_shape == (16,)


def test_coverage() -> None:
    ranges = parse_shape_range_text(SAMPLE)
    assert shape_file_covers(ranges, 4)
    assert not shape_file_covers(ranges, 8), "a file for max batch 4 cannot serve batch 8"
    assert not shape_file_covers({}, 1)
    assert not shape_file_covers(parse_shape_range_text("garbage"), 1)


def test_batch_one_is_the_most_frequent_collected_size() -> None:
    sizes = collection_batch_sizes(4)
    assert set(sizes) == {1, 2, 3, 4}
    assert sizes.count(1) > max(sizes.count(n) for n in (2, 3, 4))
