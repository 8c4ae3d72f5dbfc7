"""Write scikit-learn's bundled digits in MNIST's format: an .npz for ``npz`` data.

Each 8×8 digit is scaled to 0-255, resized to MNIST's 20×20 digit box
(bilinear), placed on a 28×28 black canvas and shifted so that its centre of
mass sits at the centre, as MNIST does. The result (1,797 real handwritten
digits, ``inputs`` [n, 28, 28] uint8 and ``labels`` [n]) is what
``experiments/configs/mnist_npz.py`` was checked on offline:

  python -m experiments.tools.make_digits28 --output=digits28.npz
  python -m experiments.main --config=experiments/configs/mnist_npz.py \\
      --config.data.path=digits28.npz --workdir=workdir/digits28
"""

import os

import numpy as np
from absl import app
from absl import flags

_OUTPUT = flags.DEFINE_string("output", "digits28.npz", "The .npz file to write.")


def digits28() -> tuple[np.ndarray, np.ndarray]:
  """``(inputs [1797, 28, 28] uint8, labels [1797] int64)``."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  from scipy import ndimage  # pylint: disable=import-outside-toplevel
  from sklearn import datasets  # pylint: disable=import-outside-toplevel
  d = datasets.load_digits()
  out = np.zeros((len(d.images), 28, 28), np.uint8)
  for i, image in enumerate(d.images):
    small = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
    box = np.asarray(Image.fromarray(small, mode="L").resize((20, 20), Image.BILINEAR),
                     np.float32)
    canvas = np.zeros((28, 28), np.float32)
    canvas[4:24, 4:24] = box
    cy, cx = ndimage.center_of_mass(canvas)
    canvas = ndimage.shift(canvas, (13.5 - cy, 13.5 - cx), order=1, mode="constant")
    out[i] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
  return out, d.target.astype(np.int64)


def main(argv):
  del argv
  inputs, labels = digits28()
  tmp = f"{_OUTPUT.value}.tmp.npz"
  np.savez_compressed(tmp, inputs=inputs, labels=labels)
  os.replace(tmp, _OUTPUT.value)
  print(f"wrote {len(labels)} images 28×28 to {_OUTPUT.value}")


if __name__ == "__main__":
  app.run(main)
