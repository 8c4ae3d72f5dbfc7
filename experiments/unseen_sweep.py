"""What helps on classes never seen in training? Runs recipe variants of the
default digits experiment and prints seen / unseen MAP@R against raw pixels.

  python -m experiments.unseen_sweep --workdir=/tmp/sweep --seeds=0,1,2
"""

import json
import os
import statistics

from absl import app
from absl import flags
from absl import logging

from metric_learning.training import rundir

_WORKDIR = flags.DEFINE_string("workdir", "workdir/unseen_sweep", "Where runs go.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds per variant (the split stays fixed).")
_ONLY = flags.DEFINE_list("only", [], "Run only these variants (comma-separated names).")
_MAX_STEPS = flags.DEFINE_integer("max_steps", 0, "Cap every variant at this many steps "
                                  "(0 = as the variant says); for a quick look.")


def variants():
  """name -> function editing a default config in place."""
  def steps(n):
    def f(c):
      c.num_steps, c.eval_every, c.checkpoint_every = n, 0, n
    return f

  def chain(*fs):
    def f(c):
      for g in fs:
        g(c)
    return f

  def set_(path, value):
    def f(c):
      *parents, leaf = path.split(".")
      node = c
      for p in parents:
        node = getattr(node, p)
      setattr(node, leaf, value)
    return f

  return {
      "default (batch-hard m=0.2 Adam 1e-4 1000 steps)": lambda c: None,
      "Adam 1e-3 (the first default)": set_("optimizer.learning_rate", 1e-3),
      "200 steps (early stop)": steps(200),
      "400 steps": steps(400),
      "soft margin (hermans preset)": set_("loss", dict(name="hermans")),
      "batch-all": set_("loss", dict(name="batch_all_triplet_loss", margin=0.2)),
      "multi-similarity": set_("loss", dict(name="multi_similarity_loss")),
      "contrastive m=0.5": set_("loss", dict(name="contrastive_loss", margin=0.5)),
      "embedding 16-D": set_("model.embedding_dim", 16),
      "embedding 128-D hidden 512": chain(set_("model.embedding_dim", 128),
                                           set_("model.hidden", (512,))),
      "dropout 0.3": set_("model.dropout", 0.3),
      "adamw wd 1e-2": chain(set_("optimizer.name", "adamw"),
                             set_("optimizer.weight_decay", 1e-2)),
      "shift augmentation 1px": set_("augment.max_shift", 1),
      "unnormalised embeddings": set_("model.normalize", False),
      "unnormalised + shift 1px": chain(set_("model.normalize", False),
                                        set_("augment.max_shift", 1)),
      "unnormalised 128-D hidden 512 100 steps": chain(
          set_("model.normalize", False), set_("model.embedding_dim", 128),
          set_("model.hidden", (512,)), steps(100)),
      "unnormalised 128-D hidden 512 30 steps": chain(
          set_("model.normalize", False), set_("model.embedding_dim", 128),
          set_("model.hidden", (512,)), steps(30)),
      # Wave-2 losses, by name with their own defaults (proxy losses train their proxies).
      **{f"loss {name}": set_("loss", dict(name=name)) for name in (
          "ntxent_loss", "supcon_loss", "sigmoid_loss", "circle_loss", "tuplet_margin_loss",
          "angular_loss", "generalized_lifted_structure_loss", "fast_ap_loss", "nca_loss",
          "proxy_anchor_loss", "proxy_nca_loss", "soft_triple_loss",
          "normalized_softmax_loss", "arcface_loss", "cosface_loss",
          "subcenter_arcface_loss")},
      "multi-similarity 200 steps 128-D": chain(
          set_("loss", dict(name="multi_similarity_loss")), steps(200),
          set_("model.embedding_dim", 128), set_("model.hidden", (512,))),
  }


def main(argv):
  del argv
  from experiments import train  # pylint: disable=import-outside-toplevel
  from experiments.configs import default  # pylint: disable=import-outside-toplevel
  logging.set_verbosity(logging.WARNING)
  results = {}
  for i, (name, edit) in enumerate(variants().items()):
    if _ONLY.value and name not in _ONLY.value:
      continue
    runs = []
    for seed in map(int, _SEEDS.value):
      c = default.get_config()
      c.seed, c.progress_bar, c.plots = seed, False, False
      c.evals = {k: c.evals[k] for k in ("seen", "unseen")}
      edit(c)
      if _MAX_STEPS.value:
        c.num_steps = min(c.num_steps, _MAX_STEPS.value)
        c.eval_every, c.checkpoint_every = 0, c.num_steps
      workdir = os.path.join(_WORKDIR.value, f"{i}_{seed}")
      summary = train.train_and_evaluate(c, workdir, fresh=True)
      with open(rundir.RunDir(workdir).path(rundir.METRICS)) as f:
        active = [r["train/active_anchor_fraction"] for r in map(json.loads, f)
                  if "train/active_anchor_fraction" in r]
      summary["dead_log_fraction"] = sum(a == 0 for a in active) / max(len(active), 1)
      summary["collapsed"] = float(any("collapsed" in w for w in summary["health_warnings"]))
      runs.append(summary)
    results[name] = {k: statistics.median(r[k] for r in runs)
                     for k in ("seen/map_at_r", "unseen/map_at_r", "raw/seen/map_at_r",
                               "raw/unseen/map_at_r", "dead_log_fraction")}
    results[name]["collapsed_runs"] = int(sum(r["collapsed"] for r in runs))
  print(f"\n{'variant':<48} {'seen MAP@R':>10} {'unseen MAP@R':>12} {'no-gradient logs':>16}"
        f" {'collapsed':>9}   (median of {len(_SEEDS.value)} seeds)")
  for name, r in results.items():
    print(f"{name:<48} {r['seen/map_at_r']:>10.4f} {r['unseen/map_at_r']:>12.4f} "
          f"{r['dead_log_fraction']:>16.0%} {r['collapsed_runs']:>9d}")
  raw = next(iter(results.values()))
  print(f"{'raw pixels':<48} {raw['raw/seen/map_at_r']:>10.4f} "
        f"{raw['raw/unseen/map_at_r']:>12.4f}")
  with open(os.path.join(_WORKDIR.value, "sweep.json"), "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
