"""The developer loop's selection of parametrized cases (``cases.covering``)."""

import cases


def _fast(params):
  return [p.values for p in params if not p.marks]


def test_covering_product_keeps_every_value_of_every_axis_and_runs_all_in_the_full_suite():
  params = cases.covering_product(["a", "b", "c"], [1, 2])
  assert [p.values for p in params] == [("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1),
                                         ("c", 2)]
  assert _fast(params) == [("a", 1), ("b", 2), ("c", 1)]
  assert all(m.name == "slow" for p in params for m in p.marks)


def test_covering_keeps_a_case_only_for_a_value_no_kept_case_had():
  grid = [("x", "euclidean"), ("x", "cosine"), ("y", "euclidean"), ("y", "cosine"),
          ("z", "dot")]
  assert _fast(cases.covering(grid)) == [("x", "euclidean"), ("x", "cosine"),
                                         ("y", "euclidean"), ("z", "dot")]
