"""The trainable holder of a proxy loss's class vectors (Flax NNX).

The proxy and classifier losses themselves (:mod:`metric_learning.losses.proxies`)
are pure functions of a ``[classes * per_class, dim]`` array and need only jax;
this module gives that array a home in a Flax model.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from metric_learning.losses import proxies as proxies_lib


class Proxies(nnx.Module):
  """Learnable class vectors (proxies, centres or classifier weights).

  Holds one ``[num_classes * per_class, dim]`` :class:`flax.nnx.Param`; calling
  the module returns it, ready for any loss of this module. Train it with the
  encoder, e.g. ``nnx.Optimizer(nnx.List([encoder, proxies]), tx, wrt=nnx.Param)``
  — proxy losses often use a larger learning rate for the proxies (Kim et al.
  2020 use 100x): ``metric_learning.training.optim.make_optimizer(...,
  lr_scales={"proxies": 100.0})`` for :class:`EncoderWithProxies`, or
  ``optax.multi_transform`` in your own layout.

  Example:
    >>> import jax.numpy as jnp
    >>> from flax import nnx
    >>> from metric_learning.models import Proxies
    >>> from metric_learning import proxy_anchor_loss
    >>> proxies = Proxies(3, 8, rngs=nnx.Rngs(0))
    >>> proxies().shape
    (3, 8)
    >>> x = jnp.ones((4, 8))
    >>> bool(jnp.isfinite(proxy_anchor_loss(x, jnp.array([0, 1, 2, 0]), proxies())))
    True
  """

  def __init__(self, num_classes: int, dim: int, *, per_class: int = 1,
               init: Callable = proxies_lib.default_proxy_init, dtype=jnp.float32, rngs: nnx.Rngs):
    num_classes = proxies_lib._static_count(num_classes, "num_classes")
    dim = proxies_lib._static_count(dim, "dim")
    self.per_class = proxies_lib._static_count(per_class, "per_class")
    self.num_classes = num_classes
    self.value = nnx.Param(init(rngs.params(), (num_classes * self.per_class, dim), dtype))

  def __call__(self) -> jax.Array:
    """The ``[num_classes * per_class, dim]`` proxy array."""
    return self.value[...]
