"""The TRE teaching example: a drug-response model and a famous patient.

Reproduces the published notebook's data exactly (see shared FAMOUS_PATIENT.md):
Python's ``random`` seeded with 12345 and NumPy's with 1234, columns drawn one
after another, responders first. This module seeds the *global* generators
because the recipe does; it restores their state before returning.
"""

from __future__ import annotations

import math
import random
from contextlib import contextmanager

import numpy as np
import pandas as pd
from scipy.stats import poisson

from attacks.exceptions import AuditError

LABEL = "response"
FEATURES = ["diabetes", "asthma", "bmi_group", "blood_pressure", "smoker", "age"]
FAMOUS_PATIENT = {
    "diabetes": 1,
    "asthma": 1,
    "bmi_group": 3,
    "blood_pressure": 2,
    "smoker": 1,
    "age": 62,
}
AGES = list(range(20, 90))

#: Per column and class: (values, weights). Label 1 responds to the drug.
RECIPE = {
    "diabetes": {1: ([1, 0], [0.7, 0.3]), 0: ([1, 0], [0.2, 0.8])},
    "asthma": {1: ([1, 0], [0.7, 0.3]), 0: ([1, 0], [0.5, 0.5])},
    "bmi_group": {1: ([1, 2, 3, 4], [0.5, 5, 7, 5]), 0: ([1, 2, 3, 4], [1, 7, 4, 1])},
    "blood_pressure": {
        1: (list(range(6)), [0.5, 1, 5, 6, 1, 0.5]),
        0: (list(range(6)), [0.5, 5, 5, 1, 1, 0.5]),
    },
    "smoker": {1: ([1, 0], [0.8, 0.2]), 0: ([1, 0], [0.2, 0.8])},
    "age": {1: (AGES, poisson.pmf(AGES, 72).tolist()), 0: (AGES, poisson.pmf(AGES, 55).tolist())},
}


def famous_patient_data() -> tuple[pd.DataFrame, pd.DataFrame]:
    """The 200 training rows (famous patient last, row 199) and 200 non-members."""
    with _seeded(python=12345, numpy=1234):
        train = _cohort(99, 100)
        test = _cohort(100, 100)
    famous = pd.DataFrame([{**FAMOUS_PATIENT, LABEL: 1}])
    return pd.concat([train, famous], ignore_index=True), test


def famous_patient_model(train: pd.DataFrame, gamma: float = 3.0):
    """The example's target: SVC(C=1, gamma, probability=True), seeded as published."""
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 < gamma < math.inf:
        raise AuditError(f"The example's gamma must be a number above 0, not {gamma}.")
    from sklearn.svm import SVC

    from attacks.shadows import fit_quietly

    model = SVC(C=1, gamma=gamma, probability=True, random_state=np.random.RandomState(12))
    return fit_quietly(model, train[FEATURES], train[LABEL])  # probability=True: as published


def famous_patient_description(n_per_class: int = 100) -> dict:
    """The recipe as a data description, for a freshly generated shadow cohort."""
    return {
        "label": LABEL,
        "classes": {
            str(label): {
                "n": n_per_class,
                "columns": {
                    col: {"values": RECIPE[col][label][0], "weights": RECIPE[col][label][1]}
                    for col in FEATURES
                },
            }
            for label in (1, 0)
        },
    }


def _cohort(n_responders: int, n_non_responders: int) -> pd.DataFrame:
    columns = {
        col: _draw(col, 1, n_responders) + _draw(col, 0, n_non_responders) for col in FEATURES
    }
    columns[LABEL] = [1] * n_responders + [0] * n_non_responders
    return pd.DataFrame(columns)


def _draw(column: str, label: int, n: int) -> list[int]:
    values, weights = RECIPE[column][label]
    if values == [1, 0]:  # the recipe's "1 if random.random() <= p else 0"
        return [1 if random.random() <= weights[0] else 0 for _ in range(n)]
    return [random.choices(values, weights=weights)[0] for _ in range(n)]


@contextmanager
def _seeded(*, python: int, numpy: int):
    py_state, np_state = random.getstate(), np.random.get_state()
    random.seed(python)
    np.random.seed(numpy)  # noqa: NPY002 - the published recipe seeds the global generator
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def write_famous_patient_example(directory, *, gamma: float = 3.0) -> dict[str, str]:
    """Write the example as a researcher would submit it; returns role -> path.

    Files: ``model.skops``, ``train.csv``, ``test.csv``, ``famous_patient.json``
    (the record an attacker knows, without its label) and ``description.json``.
    """
    import json
    from pathlib import Path

    from safe_model import skops_io

    train, test = famous_patient_data()
    model = famous_patient_model(train, gamma)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        role: directory / name
        for role, name in (
            ("model", "model.skops"),
            ("train", "train.csv"),
            ("test", "test.csv"),
            ("record", "famous_patient.json"),
            ("description", "description.json"),
        )
    }
    skops_io.dump(model, paths["model"])
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    paths["record"].write_text(json.dumps(FAMOUS_PATIENT, indent=2) + "\n")
    paths["description"].write_text(json.dumps(famous_patient_description(), indent=2) + "\n")
    return {role: str(path) for role, path in paths.items()}
