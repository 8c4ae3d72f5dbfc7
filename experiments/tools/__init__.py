"""Command-line tools around a trained run: ``python -m experiments.tools.NAME``.

``embed`` (images or arrays → embeddings), ``enroll`` (a gallery → an index),
``query`` (nearest gallery names), ``evaluate`` (evaluators on a checkpoint),
``export_weights`` (torchvision / timm weights → safetensors) and
``make_digits28`` (the 28×28 digits ``.npz`` of the ``npz`` dataset).
"""
