"""Fixed, seeded, stratified train / validation / test splits of the embedded data sets.

Hyper-parameters are chosen on ``validation``; ``test`` is touched once, at the end.

Example:
    >>> import numpy as np
    >>> from securetrain.data.splits import three_way_split
    >>> x, y = np.arange(100.0)[:, None], np.arange(100) % 2
    >>> parts = three_way_split(x, y, validation=10, test=20, seed=0)
    >>> {k: len(v[1]) for k, v in parts.items()}
    {'train': 70, 'validation': 10, 'test': 20}
    >>> [int(v[1].sum()) for v in parts.values()]   # stratified: half of each split is class 1
    [35, 5, 10]
"""

from __future__ import annotations

import numpy as np

Split = tuple[np.ndarray, np.ndarray]

EMBEDDED_SPLITS = ("train", "validation", "test")
"""The splits every embedded data set has (disjoint; together, the whole data set)."""

TRAIN_AND_VALIDATION = "train+validation"
"""A derived split: ``train`` followed by ``validation`` (in that fixed order), for the final refit.

Choose hyper-parameters on ``validation`` first; then train the chosen recipe once more on this
split and evaluate ``test`` once. Only data sets with a ``validation`` split have it."""

TRAIN_SPLITS = ("train", TRAIN_AND_VALIDATION)
"""The splits a model may be trained on (``test`` never)."""


def three_way_split(x: np.ndarray, y: np.ndarray, *, validation: int, test: int, seed: int) -> dict[str, Split]:
    """Disjoint stratified ``train`` / ``validation`` / ``test`` parts of ``(x, y)``.

    The test part is drawn first (so a data set's test split does not depend on the size
    of its validation split), then the validation part from the rest.
    """
    from sklearn.model_selection import train_test_split

    x_rest, x_te, y_rest, y_te = train_test_split(x, y, test_size=test, random_state=seed, stratify=y)
    x_tr, x_va, y_tr, y_va = train_test_split(x_rest, y_rest, test_size=validation, random_state=seed, stratify=y_rest)
    return {"train": (x_tr, y_tr), "validation": (x_va, y_va), "test": (x_te, y_te)}


__all__ = ["EMBEDDED_SPLITS", "TRAIN_AND_VALIDATION", "TRAIN_SPLITS", "Split", "three_way_split"]
