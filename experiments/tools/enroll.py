"""Enroll a gallery of classes, by name, into an index: no retraining.

``python -m experiments.tools.enroll --workdir=W --gallery=PATH --index=OUT.npz
[--append|--overwrite]``

``PATH`` is an image folder ``ROOT/CLASS_NAME/IMAGE.png`` (classes named after
their folders) or an ``.npz`` of ``inputs`` and ``labels`` (class names from its
``names`` array, else from the run's ``labels.json``, else the label numbers).
The gallery is embedded with the run's encoder and saved as an
``ml.index.EmbeddingIndex`` with class names and the encoder's identity (its
``model``: the hash of ``W/config.json`` and the checkpoint step, see
``ml.training.model_identity``).

``OUT.npz`` is written anew when it does not exist. An existing one is never
replaced silently: ``--append`` adds the gallery to it, ``--overwrite``
replaces it, and without either enroll refuses. With ``--append`` classes are
matched by name: a name the index already holds keeps its label, a new name
gets a fresh label that no class of the index uses. Appending needs the index
to record the same encoder as ``W`` (config and checkpoint step): embeddings of
another model, or another checkpoint of this one, are not comparable, and
appending to an index that records no encoder (written by library code or by
an older version) is refused too, since it cannot be checked; enroll that
gallery again with ``--overwrite`` (or into a new ``--index``). Every refusal is
one line (exit status 2) and writes nothing.

Query it with ``python -m experiments.tools.query --workdir=W --index=OUT.npz --inputs=...``.
"""

from __future__ import annotations

import os

import numpy as np
from absl import app
from absl import flags

from experiments.tools import embed as embed_lib
from metric_learning import distances
from metric_learning import index as index_lib
from metric_learning import training


def load_index(path: str, *, hint: str = "") -> index_lib.EmbeddingIndex:
  """The ``EmbeddingIndex`` at ``path``; failures name ``--index`` (and add ``hint``)."""
  if not os.path.isfile(path):
    raise embed_lib.ToolError(f"--index: no such index {path!r}{hint}.")
  try:
    return index_lib.EmbeddingIndex.load(path)
  except (OSError, KeyError, ValueError) as e:
    raise embed_lib.ToolError(f"--index: cannot read {path!r} as an index: {e}") from e


def describe_model(identity: dict | None) -> str:
  """``the model of WORKDIR at checkpoint step S (config 1a2b3c4d5e6f)``, for messages."""
  if identity is None:
    return "an unrecorded model"
  config = str(identity.get("config_sha256"))[:12]
  return (f"the model of {identity.get('workdir', '?')} at checkpoint step "
          f"{identity.get('step')} (config {config})")


def model_mismatch(path: str, recorded: dict | None, identity: dict | None) -> str | None:
  """The start of a one-line refusal when the index at ``path``, made by the
  encoder ``recorded``, is known to be of another encoder than ``identity``
  (``--workdir``'s); None when they agree or either is unknown."""
  if recorded is None or identity is None or training.same_model(recorded, identity):
    return None
  return (f"--index: {path!r} was embedded by {describe_model(recorded)}, but --workdir "
          f"holds {describe_model(identity)}; their embeddings are not comparable")


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
        overwrite: bool = False, metric: str = "euclidean") -> index_lib.EmbeddingIndex:
  """Embeds ``gallery`` with the encoder of ``workdir`` and enrolls it in ``index``.

  Args:
    workdir: a finished training run's ``--workdir``.
    gallery: an image folder or an ``.npz`` with labels (see the module docstring).
    index: the ``.npz`` index to write (and, with ``append``, to add to).
    append: add to the index at ``index`` (made by the same encoder) instead of
      writing a new one.
    overwrite: replace an existing ``index`` (without ``append`` or
      ``overwrite``, an existing ``index`` is refused).
    metric: the distance of a new index (an appended index keeps its own).

  Returns:
    The saved index; prints one line saying what was enrolled.

  Raises:
    ToolError: a missing workdir, gallery or (with ``append``) index; an
      existing index without ``append`` or ``overwrite``; both of them; an
      index of another encoder, or of an unrecorded one, to append to; an
      unlabelled gallery; inputs that do not fit the model. Nothing is written.
  """
  if metric not in distances.METRICS:
    raise embed_lib.ToolError(f"--metric must be one of {list(distances.METRICS)}; got "
                              f"{metric!r}.")
  if append and overwrite:
    raise embed_lib.ToolError("--append and --overwrite contradict each other: --append adds "
                              "to the index at --index, --overwrite replaces it; give one.")
  if os.path.isdir(index):
    raise embed_lib.ToolError(f"--index: {index!r} is a folder; give the .npz file to write.")
  if not append and not overwrite and os.path.exists(index):
    raise embed_lib.ToolError(f"--index: {index!r} already exists; pass --append to add this "
                              "gallery to it, or --overwrite to replace it.")
  existing = load_index(index, hint="; leave out --append to create it") if append else None
  embed = embed_lib.load_embedder(workdir)
  if existing is not None:
    _check_append(existing, index, workdir, embed.identity)
  data = embed_lib.read_run_inputs(gallery, embed, workdir, flag="--gallery")
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
    out = index_lib.EmbeddingIndex.create(emb, labels, metric=metric, names=names,
                                          model=embed.identity)
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


def _check_append(existing: index_lib.EmbeddingIndex, path: str, workdir: str,
                  identity: dict | None) -> None:
  """Refuses to append ``workdir``'s embeddings (its encoder: ``identity``) to an
  index of another encoder, or of one that either side does not record."""
  mismatch = model_mismatch(path, existing.model, identity)
  if mismatch:
    raise embed_lib.ToolError(f"{mismatch}; append with that model's --workdir, or enroll "
                              "into a new --index (--overwrite replaces this one).")
  if existing.model is None:
    raise embed_lib.ToolError(f"--index: {path!r} does not record which model embedded it "
                              "(written by library code or an older version), so rows of "
                              "--workdir's model cannot safely be added; enroll its gallery "
                              "again with --overwrite, or into a new --index.")
  if identity is None:
    raise embed_lib.ToolError(f"--workdir: {workdir!r} has no config.json, so its model "
                              f"cannot be checked against {describe_model(existing.model)}, "
                              f"which embedded {path!r}; enroll into a new --index.")


def main() -> None:
  workdir = flags.DEFINE_string("workdir", None, "A finished training run's --workdir.")
  gallery = flags.DEFINE_string("gallery", None,
                                "An image folder ROOT/CLASS_NAME/IMAGE or an .npz with labels.")
  index = flags.DEFINE_string("index", None, "The index .npz to write (or add to).")
  append = flags.DEFINE_bool("append", False,
                             "Add to the index at --index (made by the same model), "
                             "matching classes by name.")
  overwrite = flags.DEFINE_bool("overwrite", False,
                                "Replace an existing --index (without --append or "
                                "--overwrite an existing index is refused).")
  metric = flags.DEFINE_enum("metric", "euclidean", list(distances.METRICS),
                             "Distance of a new index (an appended index keeps its own).")
  flags.mark_flags_as_required(["workdir", "gallery", "index"])
  app.run(embed_lib.main_of(lambda: run(workdir.value, gallery.value, index.value,
                                        append=append.value, overwrite=overwrite.value,
                                        metric=metric.value)),
          flags_parser=embed_lib.parse_flags)


if __name__ == "__main__":
  main()
