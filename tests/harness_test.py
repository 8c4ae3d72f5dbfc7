"""The benchmarks' harness: interleaving, fresh-process peak memory, the text table.

The benchmarks themselves have smoke tests beside the code they measure
(tests/benchmark_test.py, train_benchmark_test.py, fast_paths_test.py,
metrics_test.py, index_test.py, pipeline_test.py).
"""

import json
import math

import pytest

from experiments.benchmarks import harness


def _recorder(calls, name, value=None):
  def run():
    calls.append(name)
    return value
  return run


def test_interleaved_calls_every_runner_once_a_round_in_order():
  calls = []
  timings = harness.interleaved({"a": _recorder(calls, "a", 1), "b": _recorder(calls, "b", 2)},
                                rounds=3, warmup=1)
  assert calls == ["a", "b"] * 4                       # one warm-up round, three timed
  assert timings.values == {"a": [1, 1, 1], "b": [2, 2, 2]}
  assert [len(timings.seconds[k]) for k in "ab"] == [3, 3]
  assert all(s >= 0 for k in "ab" for s in timings.seconds[k])
  assert timings.ms("a") == [1e3 * s for s in timings.seconds["a"]]
  assert timings.median("a") == sorted(timings.seconds["a"])[1]


def test_interleaved_alternate_reverses_every_other_round():
  calls = []
  harness.interleaved({"a": _recorder(calls, "a"), "b": _recorder(calls, "b")}, rounds=4,
                      alternate=True)
  assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]


def test_interleaved_min_time_adds_rounds_up_to_max_rounds():
  calls = []
  timings = harness.interleaved({"a": _recorder(calls, "a")}, rounds=1, min_time=60.0,
                                max_rounds=5)
  assert len(timings.seconds["a"]) == 5


def test_table_aligns_titles_with_cells_and_shows_missing_values():
  text = harness.table([("name", "<6"), ("ms", ">7.1f"), ("note", "")],
                       [["a", 1.5, "x"], ["bb", None, ""], ["c", math.nan, "y"]])
  assert text.splitlines() == ["name        ms note",
                               "a          1.5 x",
                               "bb           —",
                               "c            — y"]


def test_in_fresh_process_reads_the_childs_json_and_its_own_peak(tmp_path, monkeypatch):
  (tmp_path / "fresh_child.py").write_text(
      "from experiments.benchmarks import harness\n"
      "block = bytearray(64 * 2**20)\n"
      "harness.report(peak_rss_mb=harness.peak_rss_mb(), rss_mb=harness.rss_mb())\n")
  monkeypatch.chdir(tmp_path)                         # python -m finds modules here
  got = harness.in_fresh_process("fresh_child")
  assert got["peak_rss_mb"] >= got["rss_mb"] >= 64


def test_in_fresh_process_says_why_a_child_failed(tmp_path, monkeypatch):
  (tmp_path / "slow_child.py").write_text("import time\ntime.sleep(30)\n")
  monkeypatch.chdir(tmp_path)
  with pytest.raises(harness.FreshProcessError, match="exit 1") as failed:
    harness.in_fresh_process("no_such_module_here")
  assert failed.value.reason == "exit 1" and "No module named" in str(failed.value)
  with pytest.raises(harness.FreshProcessError) as slow:
    harness.in_fresh_process("slow_child", timeout=1)
  assert slow.value.reason == "> 1 s"


def test_write_json_and_loglog_plot(tmp_path):
  harness.write_json(str(tmp_path / "r.json"), {"results": [1]})
  assert json.loads((tmp_path / "r.json").read_text()) == {"results": [1]}
  png = tmp_path / "r.png"
  harness.loglog_plot(str(png), [harness.Line("a", [(1, 2), (10, 20)]),
                                 harness.Line("empty", [], ":", color="black")],
                      xlabel="B", ylabel="ms", title="t", fontsize=9)
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_paired_ratio_is_the_median_of_each_rounds_ratio():
  """A load that doubles every time in one round does not move the paired ratio;
  the ratio of the medians would."""
  timings = harness.Timings({"a": [3.0, 6.0, 12.0], "floor": [2.0, 4.0, 6.0]},
                            {"a": [None] * 3, "floor": [None] * 3})
  assert timings.paired_ratio("a", "floor") == 1.5
  assert timings.median("a") / timings.median("floor") == 1.5
  timings.seconds["a"][1] = 20.0                       # one disturbed round
  assert timings.paired_ratio("a", "floor") == 2.0
  with pytest.raises(ValueError):
    harness.Timings({"a": [1.0], "b": []}, {}).paired_ratio("a", "b")
