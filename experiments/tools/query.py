"""Name every input by its nearest enrolled classes.

``python -m experiments.tools.query --workdir=W --index=IDX.npz --inputs=PATH [--k=1]``

``IDX.npz`` is an index written by ``experiments.tools.enroll`` (or a run's own
``W/index.npz``); ``PATH`` is an ``.npz`` or an image folder, as for
``experiments.tools.embed``. Prints one line per input, ``FILE-OR-ROW -> NAME
(DISTANCE)``: the class voted by the ``k`` nearest gallery rows and the distance
to its nearest row among them. When the inputs are labelled (class folders, or
an npz with labels named by its ``names`` or the run's ``labels.json``), a last
line gives the top-1 accuracy by class name.

The index must be of ``W``'s encoder: one that records another model (another
run's config, or another checkpoint of this run) is refused in one line (exit
status 2), since its distances would mean nothing. An index that records no
model (written by library code or an older version) is queried with a one-line
warning on stderr.
"""

from __future__ import annotations

import sys

import numpy as np
from absl import app
from absl import flags

from experiments.tools import embed as embed_lib
from experiments.tools import enroll as enroll_lib


def run(workdir: str, index: str, inputs: str, *, k: int = 1) -> dict:
  """Predicts the class name of every row of ``inputs`` from ``index``.

  Args:
    workdir: the training run whose encoder made ``index``.
    index: an ``EmbeddingIndex`` ``.npz`` (``experiments.tools.enroll`` writes one).
    inputs: an ``.npz`` or an image folder (see ``experiments.tools.embed``).
    k: the nearest gallery rows that vote.

  Returns:
    ``{"rows": [n], "predicted": [n] names, "distances": [n], "true": [n] names
    or None, "accuracy": float or None}``; prints the predictions (and the
    accuracy when the inputs are labelled).

  Raises:
    ToolError: a missing workdir, index or inputs; inputs that do not fit the
      model; an index made by another model (its recorded identity differs
      from ``workdir``'s) or of another embedding size; ``k`` out of range.
  """
  gallery = enroll_lib.load_index(
      index, hint="; python -m experiments.tools.enroll writes one")
  if not 1 <= k <= len(gallery):
    raise embed_lib.ToolError(f"--k must be in [1, {len(gallery)}] (the rows of {index!r}); "
                              f"got {k}.")
  embed = embed_lib.load_embedder(workdir)
  mismatch = enroll_lib.model_mismatch(index, gallery.model, embed.identity)
  if mismatch:
    raise embed_lib.ToolError(f"{mismatch}; query it with that model's --workdir, or enroll "
                              "the gallery again with this one.")
  if gallery.model is None or embed.identity is None:
    unknown = (f"--index: {index!r} does not record which model embedded it"
               if gallery.model is None else
               f"--workdir: {workdir!r} has no config.json that identifies its model")
    print(f"WARNING {unknown}; the answers are right only if --workdir's model embedded the "
          "index (enroll again to record it).", file=sys.stderr)
  data = embed_lib.read_run_inputs(inputs, embed, workdir)
  emb = embed(data.inputs)
  if gallery.embeddings.shape[1] != emb.shape[1]:
    raise embed_lib.ToolError(f"--index: {index!r} holds embeddings of dim "
                              f"{gallery.embeddings.shape[1]} but the model in {workdir!r} "
                              f"embeds to dim {emb.shape[1]}.")
  predicted = gallery.predict(emb, k=k)
  neighbours, dist = gallery.search(emb, k=k)
  # The distance to the nearest of the k rows that carry the voted label.
  nearest = np.argmax(gallery.labels[neighbours] == predicted[:, None], axis=1)
  distance = dist[np.arange(len(emb)), nearest]
  names = [gallery.name_of(label) for label in predicted]
  for row, name, d in zip(data.rows, names, distance):
    print(f"{row} -> {name} ({d:.4f})")
  true = data.row_classes()
  accuracy = None
  if true is not None and true:
    correct = sum(p == t for p, t in zip(names, true))
    accuracy = correct / len(true)
    enrolled = {gallery.name_of(label) for label in np.unique(gallery.labels)}
    missing = sorted(set(true) - enrolled)
    note = f"; classes not in the index: {missing}" if missing else ""
    print(f"top-1 accuracy by class name: {accuracy:.4f} ({correct}/{len(true)}){note}")
  return {"rows": data.rows, "predicted": names, "distances": distance, "true": true,
          "accuracy": accuracy}


def main() -> None:
  workdir = flags.DEFINE_string("workdir", None, "The training run whose encoder made --index.")
  index = flags.DEFINE_string("index", None, "An index .npz (experiments.tools.enroll writes one).")
  inputs = flags.DEFINE_string("inputs", None,
                               "An .npz (inputs, labels optional) or an image folder.")
  k = flags.DEFINE_integer("k", 1, "How many nearest gallery rows vote.")
  flags.mark_flags_as_required(["workdir", "index", "inputs"])
  app.run(embed_lib.main_of(lambda: run(workdir.value, index.value, inputs.value,
                                        k=k.value)),
          flags_parser=embed_lib.parse_flags)


if __name__ == "__main__":
  main()
