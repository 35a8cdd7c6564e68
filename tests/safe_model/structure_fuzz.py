"""Fuzz ``check_model_structure`` against scikit-learn's compiled predict code.

Run as ``python -m tests.safe_model.structure_fuzz N SEED [--accepted-only] [--timeout=S]``;
the last line printed is a JSON summary. For each of N cases, one admitted
classifier (fitted on tiny data) has one of its arrays or counts corrupted
(out-of-range and huge integers, negatives, cycles in child indices, wrong
lengths, shapes and dtypes, NaN and infinities), exactly where a crafted skops
file would put it: plain attributes, a tree's pickled node state, a k-d tree's
state, HistGradientBoosting's predictor nodes. The corrupted model is checked
and then runs ``predict_proba`` in a worker process of its own, so a segfault
or an endless loop shows up as a dead or silent worker, not a dead fuzzer.

Counted: cases tried, crashes and hangs of unchecked predicts ("before"), and
crashes and hangs of predicts that ``check_model_structure`` accepted
("after", which must be zero), as well as any check that itself died or
raised something other than ``ModelRefused`` (also a failure). With
``--accepted-only`` only accepted models are run, which is what the test
does: it is quick and asserts "after" is zero.
"""

from __future__ import annotations

import copy
import json
import os
import random
import re
import resource
import select
import subprocess
import sys
import warnings
from collections import Counter

import numpy as np

#: Seconds a worker gets to mutate, check and predict one tiny model. A real
#: predict takes milliseconds; the margin is for a machine loaded by others.
CASE_TIMEOUT = 60.0

#: Address-space cap of a worker, so a corrupted size cannot exhaust memory.
WORKER_MEMORY = 3 * 2**30

#: Share of cases that corrupt fitted state rather than any attribute, since
#: hyperparameters (stored in the file too) are read only by ``fit``.
STRUCTURAL_SHARE = 0.8
HYPERPARAMETERS = frozenset(
    {"verbose", "random_state", "n_estimators", "min_samples_split", "min_samples_leaf", "n_jobs"}
    | {"max_iter", "max_leaf_nodes", "max_bins", "n_iter_no_change", "cv", "cache_size"}
)

INT_SPECIALS = (-1, -2, -(2**31), -(2**40), 2**31 - 1, 2**32 - 1, 10**9, 10**12, 0, 1)
FLOAT_SPECIALS = (np.nan, np.inf, -np.inf, 1e300, -1e300)
ARRAY_KINDS = ("element", "element", "element", "all", "cycle", "truncate", "extend")
ARRAY_KINDS += ("reshape", "dtype", "empty", "swap")
FIELD_KINDS = ("element", "element", "all", "cycle", "swap")  # a field keeps its length


# --------------------------------------------------------------------------- models


def _data(n_classes: int = 2):
    from sklearn.datasets import make_classification

    X, y = make_classification(
        n_samples=60, n_features=4, n_informative=3, n_redundant=0,
        n_classes=n_classes, random_state=0,
    )  # fmt: skip
    return X, y


def _models() -> dict:
    """Every admitted classifier kind, as a factory of (fitted model, predict input)."""
    from sklearn import (
        calibration,
        ensemble,
        linear_model,
        multiclass,
        naive_bayes,
        neighbors,
        neural_network,
        svm,
        tree,
    )

    kinds = {
        "tree": lambda: tree.DecisionTreeClassifier(max_depth=4, random_state=0),
        "extra_tree": lambda: tree.ExtraTreeClassifier(random_state=0),
        "forest": lambda: ensemble.RandomForestClassifier(n_estimators=3, random_state=0),
        "extra_trees": lambda: ensemble.ExtraTreesClassifier(n_estimators=3, random_state=0),
        "gb": lambda: ensemble.GradientBoostingClassifier(n_estimators=3, random_state=0),
        "gb_multi": lambda: ensemble.GradientBoostingClassifier(n_estimators=2, random_state=0),
        "hgb": lambda: ensemble.HistGradientBoostingClassifier(max_iter=3, random_state=0),
        "hgb_cat": lambda: ensemble.HistGradientBoostingClassifier(
            max_iter=3, categorical_features=[0], random_state=0
        ),
        "ada": lambda: ensemble.AdaBoostClassifier(n_estimators=3, random_state=0),
        "bagging": lambda: ensemble.BaggingClassifier(n_estimators=3, random_state=0),
        "knn_kd": lambda: neighbors.KNeighborsClassifier(algorithm="kd_tree", leaf_size=5),
        "knn_ball": lambda: neighbors.KNeighborsClassifier(algorithm="ball_tree", leaf_size=5),
        "knn_brute": lambda: neighbors.KNeighborsClassifier(algorithm="brute"),
        "radius": lambda: neighbors.RadiusNeighborsClassifier(radius=10.0, leaf_size=5),
        "svc": lambda: svm.SVC(probability=True, random_state=0),
        "svc_linear_multi": lambda: svm.SVC(kernel="linear", probability=True, random_state=0),
        "nusvc": lambda: svm.NuSVC(probability=True, random_state=0),
        "logistic": lambda: linear_model.LogisticRegression(),
        "mlp": lambda: neural_network.MLPClassifier(hidden_layer_sizes=(5,), max_iter=50),
        "nb": lambda: naive_bayes.GaussianNB(),
        "calibrated": lambda: calibration.CalibratedClassifierCV(svm.LinearSVC(), cv=2),
        "ovr": lambda: multiclass.OneVsRestClassifier(svm.SVC(probability=True)),
        "pipeline": _pipeline,
    }
    return kinds


def _pipeline():
    """ColumnTransformer with a one-hot encoded column, then a forest."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    encode = ColumnTransformer(
        [("site", OneHotEncoder(handle_unknown="ignore"), [0])], remainder="passthrough"
    )
    return make_pipeline(encode, RandomForestClassifier(n_estimators=2, random_state=0))


def fitted_model(name: str):
    """(fitted model, X to predict on) for one kind."""
    warnings.filterwarnings("ignore")
    multi = name.endswith("_multi") or name == "ovr"
    X, y = _data(3 if multi else 2)
    if name in ("hgb_cat", "pipeline"):
        X = X.copy()
        X[:, 0] = np.digitize(X[:, 0], [-1.0, 0.0, 1.0])
    model = _models()[name]().fit(X, y)
    rng = np.random.default_rng(1)
    probe = np.vstack([X, rng.normal(scale=3.0, size=(20, X.shape[1]))])
    probe[-1, 1] = np.nan if name.startswith("hgb") else probe[-1, 1]
    return model, probe


# --------------------------------------------------------------------------- targets


class Target:
    """One corruptible value of a model: a name, its value, and how to write it back."""

    def __init__(self, name, get, put, kinds=ARRAY_KINDS):
        self.name, self.get, self.put, self.kinds = name, get, put, kinds


def targets(model) -> list[Target]:
    """Every corruptible array, count and list reachable from ``model``, in a fixed order."""
    from sklearn.tree._tree import Tree

    found, seen, stack = [], set(), [("model", model)]
    while stack:
        path, obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tree):
            found.extend(_tree_targets(path, obj))
        elif type(obj).__name__ in ("KDTree", "BallTree"):
            found.extend(_binary_tree_targets(path, obj))
        elif isinstance(obj, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(obj))))
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(obj.ravel()))
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn"):
            for name in sorted(vars(obj), reverse=True):
                value = getattr(obj, name)
                found.extend(_attribute_targets(f"{path}.{name}", obj, name, value))
                stack.append((f"{path}.{name}", value))
    return found


def _attribute_targets(path, owner, name, value) -> list[Target]:
    def put(new, owner=owner, name=name):
        setattr(owner, name, new)

    if isinstance(value, np.ndarray) and value.dtype.names:
        return _field_targets(path, lambda: getattr(owner, name), put)
    if isinstance(value, np.ndarray) and value.dtype.kind in "iufb":
        return [Target(path, lambda: getattr(owner, name), put)]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return [Target(path, lambda: getattr(owner, name), put)]
    if isinstance(value, list) and value and name.endswith("_") or name == "_predictors":
        return [Target(path, lambda: getattr(owner, name), put)]
    return []


def _field_targets(path, get, put) -> list[Target]:
    """A structured array: the whole array (lengths) and each of its fields (values)."""

    def field_put(new, field):
        array = get().copy()
        array[field] = new
        put(array)

    fields = [Target(path, get, put)]
    for field in get().dtype.names:
        fields.append(
            Target(
                f"{path}[{field}]",
                lambda f=field: get()[f].copy(),
                lambda v, f=field: field_put(v, f),
                FIELD_KINDS,
            )
        )
    return fields


def _tree_targets(path, tree) -> list[Target]:
    """A Tree's pickled state: node fields, values, counts and constructor arguments."""
    from sklearn.tree._tree import Tree

    def state_put(key, new):
        tree.__setstate__({**tree.__getstate__(), key: new})

    def nodes_put(new):
        state_put("nodes", new)

    found = _field_targets(f"{path}.nodes", lambda: tree.__getstate__()["nodes"].copy(), nodes_put)
    found.append(
        Target(
            f"{path}.values",
            lambda: tree.__getstate__()["values"].copy(),
            lambda v: state_put("values", v),
        )
    )
    for key in ("node_count", "max_depth"):
        found.append(
            Target(
                f"{path}.{key}",
                lambda k=key: tree.__getstate__()[k],
                lambda v, k=key: state_put(k, v),
            )
        )

    def rebuilt(n_features, n_classes, n_outputs):
        new = Tree(n_features, np.asarray(n_classes, dtype=np.intp), n_outputs)
        new.__setstate__(tree.__getstate__())
        return new

    for position, key in enumerate(("n_features", "n_classes", "n_outputs")):
        found.append(
            Target(
                f"{path}.{key}",
                lambda k=key: (
                    np.atleast_1d(getattr(tree, k)).copy() if k == "n_classes" else getattr(tree, k)
                ),
                _ctor_put(path, tree, position, rebuilt),
            )
        )
    return found


def _ctor_put(path, tree, position, rebuilt):
    """Constructor arguments are fixed at load: swap a rebuilt Tree into its owner."""

    def put(new):
        args = [tree.n_features, tree.n_classes, tree.n_outputs]
        args[position] = new
        _OWNERS[id(tree)].tree_ = rebuilt(*args)

    return put


_OWNERS: dict[int, object] = {}


def _binary_tree_targets(path, tree) -> list[Target]:
    """A k-d or ball tree's pickled state tuple: arrays and counts, one entry at a time."""

    def put(index, new):
        state = list(tree.__getstate__())
        state[index] = new
        tree.__setstate__(tuple(state))

    names = ("data", "idx_array", "node_data", "node_bounds", "leaf_size", "n_levels", "n_nodes")
    found = []
    for index, name in enumerate(names):
        get = lambda i=index: copy.copy(tree.__getstate__()[i])  # noqa: E731
        if name == "node_data":
            found.extend(_field_targets(f"{path}.{name}", get, lambda v, i=index: put(i, v)))
        else:
            found.append(Target(f"{path}.{name}", get, lambda v, i=index: put(i, v)))
    return found


# --------------------------------------------------------------------------- mutations


def mutate(value, rng: random.Random, kinds=ARRAY_KINDS):
    """One random corruption of an array, a count or a list, and its name."""
    if isinstance(value, list):
        if rng.random() < 0.5 or len(value) < 2:
            return "list-extend", value + value[:1]
        return "list-drop", value[: rng.randrange(len(value))]
    if not isinstance(value, np.ndarray):
        return "count", rng.choice(
            (0, -1, 1, int(value) + 1, int(value) - 1, 10**12, 2**31, -(2**40))
        )
    kind = rng.choice(kinds)
    return kind, _mutate_array(np.array(value, copy=True), kind, rng)


def _mutate_array(array: np.ndarray, kind: str, rng: random.Random) -> np.ndarray:
    if kind == "truncate" and len(array):
        return array[: rng.randrange(len(array))]
    if kind == "extend" and len(array):
        return np.concatenate([array, array[: rng.randrange(1, len(array) + 1)]])
    if kind == "reshape":
        return array.reshape(-1) if array.ndim > 1 else array.reshape(1, -1)
    if kind == "dtype" and not array.dtype.names:
        return array.astype(rng.choice((np.float32, np.float64, np.int32, np.int64)))
    if kind == "empty":
        return array[:0]
    if not array.size or array.dtype.names:
        return array
    flat = array.reshape(-1)
    if kind == "swap":
        return flat[np.random.default_rng(rng.randrange(2**32)).permutation(flat.size)].reshape(
            array.shape
        )
    if kind == "cycle":
        at = rng.randrange(flat.size)
        flat[at] = rng.randrange(at + 1) if flat.dtype.kind in "iu" else flat[at]
        return array
    where = slice(None) if kind == "all" else rng.randrange(flat.size)
    flat[where] = _special(flat.dtype, rng, size=flat.size)
    return array


def _special(dtype: np.dtype, rng: random.Random, *, size: int):
    choices = INT_SPECIALS + (size, size + 1, rng.randrange(max(size, 1)))
    if dtype.kind == "f":
        choices += FLOAT_SPECIALS
    value = rng.choice(choices)
    if dtype.kind == "b":
        return bool(value)
    if dtype.kind in "iu" and not np.isfinite(value):
        value = 0
    with np.errstate(all="ignore"):
        return np.array(value).astype(dtype, casting="unsafe")


# --------------------------------------------------------------------------- worker


def worker() -> None:
    """Read "name case seed" lines; answer M (mutated), A/R (checked), D (predicted)."""
    resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY, WORKER_MEMORY))
    from safe_model.exceptions import ModelRefused
    from safe_model.structure import check_model_structure

    fitted = {}
    for line in sys.stdin:
        name, case, seed, accepted_only = line.split()
        if name not in fitted:
            fitted[name] = fitted_model(name)
        model, probe = copy.deepcopy(fitted[name])
        label = _corrupt(model, rng=random.Random(f"{seed}:{case}"))
        _say(f"M {label}")
        try:
            check_model_structure(model)
            _say("A")
        except ModelRefused:
            _say("R")
            if accepted_only == "1":
                _say("D skipped")
                continue
        _say(f"D {_predict(model, probe)}")


def _corrupt(model, *, rng: random.Random) -> str:
    _OWNERS.clear()
    _note_tree_owners(model)
    found = targets(model)
    structural = [t for t in found if t.name.rsplit(".", 1)[-1] not in HYPERPARAMETERS]
    pool = structural if structural and rng.random() < STRUCTURAL_SHARE else found
    target = pool[rng.randrange(len(pool))]
    try:
        kind, value = mutate(target.get(), rng, target.kinds)
        target.put(value)
    except Exception as exc:  # refused at load (setstate or our own put), like a bad file
        return f"{target.name} unloadable({type(exc).__name__})"
    return f"{target.name} {kind}"


def _note_tree_owners(model) -> None:
    from sklearn.tree import BaseDecisionTree

    for obj in _objects(model):
        if isinstance(obj, BaseDecisionTree) and hasattr(obj, "tree_"):
            _OWNERS[id(obj.tree_)] = obj


def _objects(model):
    seen, stack = set(), [model]
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        yield obj
        if isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, np.ndarray) and obj.dtype == object:
            stack.extend(obj.ravel())
        elif hasattr(obj, "__dict__") and type(obj).__module__.startswith("sklearn"):
            stack.extend(vars(obj).values())


def _predict(model, probe) -> str:
    try:
        model.predict_proba(probe)
    except Exception as exc:
        return f"error {type(exc).__name__}"
    return "ok"


_MARK = b"@@ "


def _say(message: str) -> None:
    sys.stdout.write(_MARK.decode() + message.replace("\n", " ") + "\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------- driver


class _Worker:
    """A worker process and a line reader with a timeout."""

    def __init__(self):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.safe_model.structure_fuzz", "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            bufsize=0, env=env,
        )  # fmt: skip
        self.buffer = b""

    def send(self, line: str) -> None:
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()

    def read(self, timeout: float) -> str:
        """The next line the worker says; raises _Silent if it dies or stays silent."""
        while True:
            while b"\n" not in self.buffer:
                ready, _, _ = select.select([self.process.stdout], [], [], timeout)
                if not ready:
                    raise _Silent("hang")
                chunk = os.read(self.process.stdout.fileno(), 65536)
                if not chunk:
                    raise _Silent("crash")
                self.buffer += chunk
            line, self.buffer = self.buffer.split(b"\n", 1)
            if line.startswith(_MARK):  # anything else is a library printing
                return line[len(_MARK) :].decode()

    def stop(self, outcome: str) -> str:
        """Kill the worker if it still runs; a crash is a death by signal."""
        if outcome == "hang":
            self.process.kill()
        code = self.process.wait()
        return outcome if outcome == "hang" or code < 0 else f"exit{code}"


class _Silent(Exception):
    """The worker stopped answering: its ``args[0]`` says whether it died or hangs."""


def run(
    n_cases: int, seed: int, *, accepted_only: bool = False, timeout: float = CASE_TIMEOUT
) -> dict:
    """Run ``n_cases`` corruptions, spread over every model kind; count the outcomes."""
    names = sorted(_models())
    rng = random.Random(seed)
    counts, unchecked, worker_ = Counter(), [], None
    fatal = Counter()  # what was corrupted, for every crash or hang
    for case in range(n_cases):
        name = names[rng.randrange(len(names))]
        worker_ = worker_ or _Worker()
        worker_.send(f"{name} {case} {seed} {int(accepted_only)}")
        outcome, label, verdict = _one_case(worker_, timeout)
        if outcome in ("crash", "hang") or outcome.startswith("exit"):
            worker_ = None
        counts[f"{verdict}:{outcome}"] += 1
        if outcome in ("crash", "hang"):
            fatal[f"{name}: {_where(label)}"] += 1
        if verdict == "checking" or (verdict == "accepted" and outcome in ("crash", "hang")):
            unchecked.append(f"{name} #{case}: {label} -> {outcome} ({verdict})")
        if case % 100 == 99:
            print(f"{case + 1} cases: {dict(counts)}", file=sys.stderr, flush=True)
    if worker_:
        worker_.process.stdin.close()
        worker_.process.wait()
    return {**_summary(n_cases, seed, counts, unchecked), "fatal_corruptions": dict(fatal)}


def _where(label: str) -> str:
    """A mutation label without list positions: what kind of value was corrupted."""
    return re.sub(r"\[\d+\]", "[i]", label.split(" ")[0].removeprefix("model."))


def _one_case(worker_: _Worker, timeout: float) -> tuple[str, str, str]:
    """(outcome, mutation label, verdict) of the case just sent.

    Building the case (starting a worker, fitting the model) is not under test
    and gets CASE_TIMEOUT; checking and predicting get ``timeout``.
    """
    label, verdict = "?", "unbuilt"
    try:
        for _ in range(3):
            line = worker_.read(CASE_TIMEOUT if verdict == "unbuilt" else timeout)
            if line.startswith("M "):
                label, verdict = line[2:], "checking"
            elif line in ("A", "R"):
                verdict = {"A": "accepted", "R": "refused"}[line]
            elif line.startswith("D "):
                return line[2:].split()[0], label, verdict
    except _Silent as silent:
        return worker_.stop(silent.args[0]), label, verdict
    return "protocol", label, verdict


def _summary(n_cases: int, seed: int, counts: Counter, unchecked: list[str]) -> dict:
    def count(verdict_outcomes):
        return sum(counts[key] for key in verdict_outcomes)

    return {
        "cases": n_cases,
        "seed": seed,
        "refused": count(f"refused:{o}" for o in ("ok", "error", "crash", "hang", "skipped")),
        "before_validation_crashes": count(
            f"{v}:crash" for v in ("refused", "accepted", "unbuilt")
        ),
        "before_validation_hangs": count(f"{v}:hang" for v in ("refused", "accepted", "unbuilt")),
        "after_validation_crashes": counts["accepted:crash"],
        "after_validation_hangs": counts["accepted:hang"],
        "crashed_while_checking": counts["checking:crash"] + counts["checking:hang"],
        "crashed_while_building": counts["unbuilt:crash"] + counts["unbuilt:hang"],
        "outcomes": dict(sorted(counts.items())),
        "unvalidated_failures": unchecked,
    }


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        worker()
        return 0
    accepted_only = "--accepted-only" in argv
    timeout = next((float(a[10:]) for a in argv if a.startswith("--timeout=")), CASE_TIMEOUT)
    n_cases, seed = (int(a) for a in [a for a in argv if not a.startswith("--")][:2])
    summary = run(n_cases, seed, accepted_only=accepted_only, timeout=timeout)
    for failure in summary["unvalidated_failures"]:
        print(failure)
    print(json.dumps(summary))
    return 1 if summary["unvalidated_failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
