"""Benchmarks: ``python -m experiments.benchmarks.NAME`` (results in docs/benchmarks.md).

``benchmark`` (batch-hard), ``loss_benchmark``, ``eval_benchmark``,
``search_benchmark``, ``pipeline_benchmark`` and ``train_benchmark``; what they
share (interleaved timing, fresh-process peak memory, table / JSON / plot
writing) is ``harness``.
"""
