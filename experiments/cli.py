"""The command line's config: ``--config=FILE`` and ``--config.SECTION.FIELD=VALUE``.

Shared by the launchers (``experiments.main``, ``experiments.reality_check``):
ml_collections overrides only the fields a config file has, so a part's field
the file leaves out (``--config.model.head_init=identity``) is taken from the
command line here, added to the config, and checked against the part's own
arguments like any other; a part's name override switches to that part's
defaults (:func:`experiments.config.resolve_part_overrides`). Mistakes end in
one line naming the field and exit status 2.
"""

from __future__ import annotations

import ast
import os
import sys

from absl import flags
from ml_collections import config_flags

from experiments import config as config_lib

DEFAULT_CONFIG = "experiments/configs/default.py"

# Sections whose fields are the arguments of a part chosen by name: the command
# line may set a field the config file leaves out (the part's own default).
PART_SECTIONS = ("data", "model", "loss", "sampler", "optimizer", "schedule", "augment")
_NEW_FIELDS: dict[str, object] = {}


def fail(message: str) -> None:
  """One line on stderr and exit status 2, like absl's flag errors; no traceback."""
  print(f"FATAL config error: {message}", file=sys.stderr)
  sys.exit(2)


def _literal(text: str):
  """A command-line value as Python: numbers, tuples, booleans, None; else the string."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def take_new_fields(argv: list[str]) -> list[str]:
  """Removes ``--config.SECTION.FIELD=VALUE`` for fields the config file lacks from
  ``argv`` and keeps them for :func:`config_from_flags`; a ConfigError names a
  mistaken override. Call it before the config flag is defined (ml_collections
  reads ``sys.argv`` then)."""
  config_file = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
                     DEFAULT_CONFIG)
  if not os.path.isfile(config_file):
    return argv
  file_config = config_lib.load_config_file(config_file)
  config_lib.check_overrides(file_config, argv[1:], PART_SECTIONS)
  kept = []
  for arg in argv:
    key, _, value = arg.partition("=")
    parts = key[len("--config."):].split(".") if key.startswith("--config.") else []
    if (len(parts) == 2 and parts[0] in PART_SECTIONS and parts[0] in file_config
        and parts[1] not in file_config[parts[0]]):
      _NEW_FIELDS[".".join(parts)] = _literal(value)
    else:
      kept.append(arg)
  return kept


def strip_new_fields() -> None:
  """:func:`take_new_fields` on ``sys.argv`` in place; a mistake ends the program."""
  try:
    sys.argv[:] = take_new_fields(sys.argv)
  except config_lib.ConfigError as e:
    fail(str(e))


def parse_flags(argv):
  """absl flag parsing whose config mistakes end in one line naming the field."""
  for arg in argv[1:]:
    if arg.startswith("--config=") and not os.path.isfile(arg.split("=", 1)[1]):
      fail(f"--config: no such config file {arg.split('=', 1)[1]!r} (relative paths start "
           "at the current directory; run from the repository root).")
  try:
    kept = take_new_fields(argv)
  except config_lib.ConfigError as e:
    fail(str(e))
  try:
    return flags.FLAGS(kept)
  except flags.Error as e:
    print(f"FATAL Flags parsing error: {e}", file=sys.stderr)
    sys.exit(2)
  except (AttributeError, KeyError) as e:   # an override of a field the config lacks
    field = str(e).strip("\"'")
    bad = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")
           and a.split("=", 1)[0].rsplit(".", 1)[-1] == field]
    fail(f"{bad[0] if bad else field}: the config has no field {field!r}.")
  except (TypeError, ValueError) as e:
    fail(str(e))


def config_from_flags(name: str = "config"):
  """The config of the ``--config`` flag with every command-line field applied
  (new fields included) and part-name overrides resolved; a mistake ends the
  program in one line."""
  flag = flags.FLAGS[name]
  config = flag.value
  with config.unlocked():
    for path, value in _NEW_FIELDS.items():
      section, field = path.split(".")
      config[section][field] = value
  try:
    return config_lib.resolve_part_overrides(
        config, config_lib.load_config_file(config_flags.get_config_filename(flag)),
        {**config_flags.get_override_values(flag), **_NEW_FIELDS})
  except config_lib.ConfigError as e:
    fail(str(e))
