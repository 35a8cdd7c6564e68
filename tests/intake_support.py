"""Small tables, a forest fitted on them and a refusal helper, for the intake tests
of both the model loader (``safe_model``) and the table intake (``attacks``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import RandomForestClassifier

FEATURES = ["f0", "f1", "f2"]


def one_sentence(error: type[Exception], function, *args, **kwargs) -> str:
    """Call ``function``, expect ``error``, and return its one-line message."""
    with pytest.raises(error) as info:
        function(*args, **kwargs)
    message = str(info.value)
    assert message
    assert "\n" not in message
    assert "Traceback" not in message
    return message


def _frame(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, len(FEATURES)))
    frame = pd.DataFrame(X, columns=FEATURES)
    frame["y"] = (X[:, 0] + X[:, 1] > 0).astype(int)
    return frame


@pytest.fixture(scope="module")
def train() -> pd.DataFrame:
    return _frame(40, seed=0)


@pytest.fixture(scope="module")
def test() -> pd.DataFrame:
    return _frame(20, seed=1)


@pytest.fixture(scope="module")
def forest(train) -> RandomForestClassifier:
    return RandomForestClassifier(n_estimators=5, random_state=0).fit(train[FEATURES], train["y"])


@pytest.fixture(scope="module")
def forest_skops(forest) -> bytes:
    return skops.io.dumps(forest)
