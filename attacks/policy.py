"""Risk policies: the thresholds a TRE judges audits by, in a TOML file."""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from attacks.exceptions import PolicyError
from attacks.rounds import RoundRule

#: Every threshold a policy must hold, with the range it must lie in.
BOUNDS = {
    ("audit", "min_shadow_models"): (2, 1024),
    ("audit", "max_shadow_models"): (2, 1024),
    ("audit", "convergence_tolerance"): (0.0, 100.0),
    ("audit", "max_auc_change"): (0.0, 1.0),
    ("audit", "top_k"): (0, 1000),
    ("attacks", "auc_medium"): (0.5, 1.0),
    ("attacks", "auc_high"): (0.5, 1.0),
    ("attacks", "tpr_ratio_medium"): (1.0, 1000.0),
    ("attacks", "tpr_ratio_high"): (1.0, 1000.0),
    ("attacks", "min_false_positives"): (1, 1_000_000),
    ("record", "probability_medium"): (0.0, 1.0),
    ("record", "probability_high"): (0.0, 1.0),
    ("record", "max_false_positive_rate"): (0.0, 1.0),
    ("rules", "min_leaf_records"): (1, 10_000),
    ("rules", "svc_gamma_high"): (0.0, 1e6),
    ("rules", "max_params_per_record"): (0.0, 1e6),
    ("serving", "max_calls_per_day"): (1, 1_000_000),
    ("serving", "max_rows_per_day"): (1, 10**12),
    ("neural_networks", "max_epochs"): (1, 100_000),
    ("neural_networks", "max_parameters"): (1, 10**9),
    ("neural_networks", "max_layers"): (1, 1024),
    ("neural_networks", "max_batch_size"): (1, 1_000_000),
}

#: Sections a policy holds.
SECTIONS = ("audit", "attacks", "record", "rules", "serving", "neural_networks")
#: Sections added after policies were first saved: a saved policy without one gets the
#: default's.
LATER_SECTIONS = ("serving", "neural_networks")


@dataclass(frozen=True)
class Policy:
    """A validated risk policy. ``sha256`` identifies the exact text it came from."""

    name: str
    version: str
    sha256: str
    sections: dict[str, dict[str, Any]] = field(repr=False)

    def __getitem__(self, key: tuple[str, str]) -> Any:
        section, name = key
        return self.sections[section][name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "thresholds": self.sections,
        }


def default_policy_text() -> str:
    return resources.files("attacks").joinpath("policy_default.toml").read_text()


def load_policy(text: str | None = None) -> Policy:
    """Parse and validate a policy; None gives the documented default."""
    text = default_policy_text() if text is None else text
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"The policy file is not valid TOML: {exc}.") from None
    sections = {name: dict(data.get(name, {})) for name in SECTIONS}
    for name in LATER_SECTIONS:
        if name not in data:
            sections[name] = tomllib.loads(default_policy_text())[name]
    sections["attacks"].setdefault("require_significant_auc", True)
    _fixed_count_of_old_policies(sections["audit"])
    for (section, name), (low, high) in BOUNDS.items():
        _check(sections, section, name, low, high)
    if sections["audit"]["min_shadow_models"] > sections["audit"]["max_shadow_models"]:
        raise PolicyError("In [audit], min_shadow_models must not exceed max_shadow_models.")
    for section, pair in (("attacks", "auc"), ("attacks", "tpr_ratio"), ("record", "probability")):
        if sections[section][f"{pair}_medium"] > sections[section][f"{pair}_high"]:
            raise PolicyError(f"In [{section}], {pair}_medium must not exceed {pair}_high.")
    return Policy(
        name=str(data.get("name", "unnamed")),
        version=str(data.get("version", "")),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        sections=sections,
    )


def _fixed_count_of_old_policies(audit: dict) -> None:
    """A policy written before adaptive rounds named one ``n_shadow_models``: a fixed count."""
    if "n_shadow_models" not in audit or "min_shadow_models" in audit:
        return
    count = audit.pop("n_shadow_models")
    defaults = tomllib.loads(default_policy_text())["audit"]
    audit.update({k: v for k, v in defaults.items() if k not in audit})
    audit["min_shadow_models"] = audit["max_shadow_models"] = count


def round_rule(policy: Policy) -> RoundRule:
    """The policy's rule for how many shadow models an audit trains."""
    audit = policy.sections["audit"]
    return RoundRule(
        min_models=audit["min_shadow_models"],
        max_models=audit["max_shadow_models"],
        tolerance=float(audit["convergence_tolerance"]),
        max_auc_change=float(audit["max_auc_change"]),
        min_false_positives=policy["attacks", "min_false_positives"],
    )


def _check(sections, section, name, low, high):
    value = sections[section].get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"The policy needs a number for {name} in [{section}].")
    if not low <= value <= high:
        raise PolicyError(f"{name} in [{section}] must lie between {low} and {high}.")
    if isinstance(low, int) and isinstance(high, int):  # a count: 1e6 is read as 1000000
        if not float(value).is_integer():
            raise PolicyError(f"{name} in [{section}] must be a whole number.")
        sections[section][name] = int(value)
