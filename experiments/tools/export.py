"""Export a finished run's encoder to serve it with JAX alone.

``python -m experiments.tools.export --workdir=W --output=FILE [--dtype=float32|bfloat16]
[--step=N] [--platforms=cpu,cuda,rocm,tpu]``

``FILE`` is a serialized ``jax.export`` artifact: the encoder in evaluation
mode with its weights as constants, its input conversion and output
normalisation included, for any batch size (a symbolic batch dimension):
``float32 [b, *input_shape] -> float32 [b, dim]``, the numbers
``load_embedder(W)`` gives. ``FILE.json`` beside it holds the metadata (input
shape and dtype, embedding width, normalisation and metric, the checkpoint step,
the model identity, the JAX version); :mod:`metric_learning.serving` lists its
fields. Both are written atomically; the folder of ``FILE`` must exist.

Serve it without Flax, Optax or this project's experiments::

  embed = metric_learning.serving.load(FILE)        # or, with jax alone:
  exported = jax.export.deserialize(open(FILE, "rb").read()); exported.call(x)

``--dtype=bfloat16`` stores the weights in bfloat16 and runs the backbone in
bfloat16 (embeddings stay float32); the default is the run's own model dtype.
``--step`` exports that checkpoint instead of the newest; ``--platforms`` limits
where the artifact runs (default: every platform JAX lowers for; no such device
is needed to export).
"""

from __future__ import annotations

import os

from absl import app
from absl import flags

from experiments.tools import embed as embed_tool
from metric_learning import serving
from metric_learning.training import embedder


def run(workdir: str, output: str, *, dtype: str | None = None, step: int | None = None,
        platforms=embedder.EXPORT_PLATFORMS) -> dict:
  """Exports the encoder of ``workdir`` to ``output`` and ``output + ".json"``.

  Args:
    workdir: a finished training run's ``--workdir``.
    output: the artifact to write; its folder must exist.
    dtype: ``"float32"``, ``"bfloat16"`` or None (the run's own).
    step: the checkpoint to export; None: the newest restorable one.
    platforms: where the artifact runs.

  Returns:
    The metadata written (see :mod:`metric_learning.serving`); prints one line.

  Raises:
    ToolError: a missing workdir or checkpoint, or an output that cannot be
      written; nothing is written then.
  """
  if dtype is not None and dtype not in embedder.EXPORT_DTYPES:
    raise embed_tool.ToolError(f"--dtype must be one of {', '.join(embedder.EXPORT_DTYPES)}; "
                               f"got {dtype!r}.")
  unknown = [p for p in platforms if p not in embedder.EXPORT_PLATFORMS]
  if unknown or not platforms:
    raise embed_tool.ToolError(f"--platforms: each must be one of "
                               f"{', '.join(embedder.EXPORT_PLATFORMS)}; got "
                               f"{','.join(platforms)!r}.")
  folder = os.path.dirname(os.path.abspath(output))
  if os.path.isdir(output):
    raise embed_tool.ToolError(f"--output: {output!r} is a folder; give the file to write.")
  if not os.path.isdir(folder):
    raise embed_tool.ToolError(f"--output: no such folder {folder!r}; create it first.")
  if not os.access(folder, os.W_OK):
    raise embed_tool.ToolError(f"--output: cannot write in {folder!r} (permission denied).")
  if not os.path.isdir(workdir):
    raise embed_tool.ToolError(f"--workdir: no such directory {workdir!r}; give the --workdir "
                               "of a finished training run (python -m experiments.main "
                               "--workdir=...).")
  try:
    embedder.load_model_spec(workdir)
  except FileNotFoundError as e:
    raise embed_tool.ToolError(f"--workdir: {e}") from e
  # With no --step a missing checkpoint is the workdir's fault; with one, the step's.
  flag = "--workdir" if step is None else "--step"
  try:
    exported, metadata = embedder.export_embedder(workdir, step=step, dtype=dtype,
                                                  platforms=platforms)
  except (FileNotFoundError, KeyError, ValueError) as e:
    raise embed_tool.ToolError(f"{flag}: {e}") from e
  try:
    written = serving.save(output, exported, metadata)
  except OSError as e:
    raise embed_tool.ToolError(f"--output: cannot write {output!r}: {e}") from e
  print(f"exported {metadata['model']} (checkpoint step {metadata['step']}, dim "
        f"{written['embedding_dim']}, {metadata['compute_dtype']}, for "
        f"{','.join(written['platforms'])}) -> {output} (metadata: {serving.sidecar_path(output)})")
  return written


def main() -> None:
  workdir = flags.DEFINE_string("workdir", None, "A finished training run's --workdir.")
  output = flags.DEFINE_string("output", None, "The jax.export artifact to write "
                               "(metadata beside it, OUTPUT.json); its folder must exist.")
  dtype = flags.DEFINE_enum("dtype", None, list(embedder.EXPORT_DTYPES),
                            "The encoder's arithmetic (default: the run's model dtype).")
  step = flags.DEFINE_integer("step", None, "The checkpoint step (default: the newest).")
  platforms = flags.DEFINE_list("platforms", list(embedder.EXPORT_PLATFORMS),
                                "Where the artifact runs, comma-separated.")
  flags.mark_flags_as_required(["workdir", "output"])
  app.run(embed_tool.main_of(lambda: run(workdir.value, output.value, dtype=dtype.value,
                                         step=step.value, platforms=platforms.value)),
          flags_parser=embed_tool.parse_flags)


if __name__ == "__main__":
  main()
