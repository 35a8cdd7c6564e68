import pandas as pd
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier

from attacks.datasets import FEATURES, LABEL, famous_patient_data, famous_patient_model
from attacks.target import Target


def make_target(model, X, y, n_train):
    X = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    model.fit(X.iloc[:n_train], y[:n_train])
    return Target(
        model,
        X.iloc[:n_train].reset_index(drop=True),
        y[:n_train],
        X.iloc[n_train:].reset_index(drop=True),
        y[n_train:],
        record_key=b"k",
    )


@pytest.fixture(scope="session")
def famous_data():
    return famous_patient_data()


def famous_target(data, gamma):
    train, test = data
    return Target(
        famous_patient_model(train, gamma),
        train[FEATURES],
        train[LABEL].to_numpy(),
        test[FEATURES],
        test[LABEL].to_numpy(),
        record_key=b"train-sha",
    )


@pytest.fixture(scope="session")
def famous_leaky(famous_data):
    return famous_target(famous_data, 3.0)


@pytest.fixture(scope="session")
def famous_mitigated(famous_data):
    return famous_target(famous_data, 0.1)


@pytest.fixture(scope="session")
def overfit_knn():
    """1-NN on noisy multi-class data: memorises every training row."""
    X, y = make_classification(
        n_samples=600, n_features=8, n_informative=5, n_classes=4, flip_y=0.4, random_state=0
    )
    return make_target(KNeighborsClassifier(n_neighbors=1), X, y, 300)


@pytest.fixture(scope="session")
def safe_logreg():
    """Regularised logistic regression on plenty of data: nothing to find."""
    X, y = make_classification(n_samples=4000, n_features=10, n_informative=5, random_state=1)
    return make_target(LogisticRegression(C=0.1), X, y, 2000)
