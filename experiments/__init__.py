"""The launcher, tools and benchmarks around the library (extra: experiments)."""

from metric_learning import _extras

_extras.require_extra("experiments", "experiments (the launcher and its tools)")
