"""Enroll a gallery of classes, by name, into an index: no retraining.

``python -m experiments.enroll --workdir=W --gallery=PATH --index=OUT.npz [--append]``

``PATH`` is an image folder ``ROOT/CLASS_NAME/IMAGE.png`` (classes named after
their folders) or an ``.npz`` of ``inputs`` and ``labels`` (class names from its
``names`` array, else from the run's ``labels.json``, else the label numbers).
The gallery is embedded with the run's encoder and saved as an
``ml.index.EmbeddingIndex`` with class names. Without ``--append`` ``OUT.npz``
is written anew; with it the gallery is added to the index there, and classes
are matched by name: a name the index already holds keeps its label, a new name
gets a fresh label that no class of the index uses.

Query it with ``python -m experiments.query --workdir=W --index=OUT.npz --inputs=...``.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app
from absl import flags

from experiments import embed as embed_lib
from metric_learning import distances
from metric_learning import index as index_lib


def load_index(path: str, *, hint: str = "") -> index_lib.EmbeddingIndex:
  """The ``EmbeddingIndex`` at ``path``; failures name ``--index`` (and add ``hint``)."""
  if not os.path.isfile(path):
    raise embed_lib.ToolError(f"--index: no such index {path!r}{hint}.")
  try:
    return index_lib.EmbeddingIndex.load(path)
  except (OSError, KeyError, ValueError) as e:
    raise embed_lib.ToolError(f"--index: cannot read {path!r} as an index: {e}") from e


def labels_by_name(names, existing: index_lib.EmbeddingIndex | None,
                   own_labels: dict[str, int]) -> dict[str, int]:
  """Each class name's label in the index.

  Args:
    names: the gallery's class names.
    existing: the index appended to, or None for a new index.
    own_labels: the gallery's own label of each name (kept in a new index).

  Returns:
    ``{name: label}``: a name ``existing`` holds keeps its label there; other
    names get fresh labels above every label ``existing`` uses, in sorted name
    order.
  """
  if existing is None:
    return {name: own_labels[name] for name in sorted(set(names))}
  used = set(existing.labels.tolist()) | set((existing.names or {}).keys())
  known = {existing.name_of(label): int(label) for label in sorted(used)}
  out, fresh = {}, max(used, default=-1) + 1
  for name in sorted(set(names)):
    if name in known:
      out[name] = known[name]
    else:
      out[name], fresh = fresh, fresh + 1
  return out


def run(workdir: str, gallery: str, index: str, *, append: bool = False,
        metric: str = "euclidean") -> index_lib.EmbeddingIndex:
  """Embeds ``gallery`` with the encoder of ``workdir`` and enrolls it in ``index``.

  Args:
    workdir: a finished training run's ``--workdir``.
    gallery: an image folder or an ``.npz`` with labels (see the module docstring).
    index: the ``.npz`` index to write (and, with ``append``, to add to).
    append: add to the index at ``index`` instead of writing a new one.
    metric: the distance of a new index (an appended index keeps its own).

  Returns:
    The saved index; prints one line saying what was enrolled.

  Raises:
    ToolError: a missing workdir, gallery or (with ``append``) index; an
      unlabelled gallery; inputs that do not fit the model.
  """
  if metric not in distances.METRICS:
    raise embed_lib.ToolError(f"--metric must be one of {list(distances.METRICS)}; got "
                              f"{metric!r}.")
  existing = load_index(index, hint="; leave out --append to create it") if append else None
  embed = embed_lib.load_embedder(workdir)
  data = embed_lib.read_inputs(gallery, embed.input_shape, flag="--gallery",
                               known_names=embed_lib.workdir_names(workdir),
                               transform=getattr(embed, "transform", None))
  if data.labels is None:
    raise embed_lib.ToolError(f"--gallery: {gallery!r} has no labels, and enrollment needs "
                              "classes: give ROOT/CLASS_NAME/IMAGE.png or an .npz with labels.")
  given = list(data.names.values())
  shared = sorted({name for name in given if given.count(name) > 1})
  if shared:
    raise embed_lib.ToolError(f"--gallery: {gallery!r} gives several labels the class names "
                              f"{shared}; each class needs its own name.")
  row_classes = data.row_classes()
  mapping = labels_by_name(row_classes, existing,
                           {name: label for label, name in data.names.items()})
  labels = np.asarray([mapping[name] for name in row_classes], np.int32)
  names = {label: name for name, label in mapping.items()}
  emb = embed(data.inputs)
  if existing is None:
    out = index_lib.EmbeddingIndex.create(emb, labels, metric=metric, names=names)
    new = len(mapping)
  else:
    if existing.embeddings.shape[1] != emb.shape[1]:
      raise embed_lib.ToolError(f"--index: {index!r} holds embeddings of dim "
                                f"{existing.embeddings.shape[1]} but the model in {workdir!r} "
                                f"embeds to dim {emb.shape[1]}.")
    new = len(set(mapping.values()) - set(existing.labels.tolist()))
    out = existing.add(emb, labels, names=names)
  os.makedirs(os.path.dirname(os.path.abspath(index)), exist_ok=True)
  out.save(index)
  print(f"enrolled {len(labels)} samples of {len(mapping)} classes ({new} new) -> {index}: "
        f"{len(out)} samples of {len(np.unique(out.labels))} classes, checkpoint step "
        f"{embed.step}")
  return out


def main() -> None:
  workdir = flags.DEFINE_string("workdir", None, "A finished training run's --workdir.")
  gallery = flags.DEFINE_string("gallery", None,
                                "An image folder ROOT/CLASS_NAME/IMAGE or an .npz with labels.")
  index = flags.DEFINE_string("index", None, "The index .npz to write (or add to).")
  append = flags.DEFINE_bool("append", False,
                             "Add to the index at --index, matching classes by name.")
  metric = flags.DEFINE_enum("metric", "euclidean", list(distances.METRICS),
                             "Distance of a new index (an appended index keeps its own).")
  flags.mark_flags_as_required(["workdir", "gallery", "index"])
  app.run(embed_lib.main_of(lambda: run(workdir.value, gallery.value, index.value,
                                        append=append.value, metric=metric.value)),
          flags_parser=embed_lib.parse_flags)


if __name__ == "__main__":
  main()
