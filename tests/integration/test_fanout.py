"""An audit's shadow models fanned out over real Celery workers (TRE_AUDIT_FANOUT): the
same report for one worker or two, and a worker killed mid-shadow loses only that one."""

import pytest

from tests import factories
from tests.integration.conftest import wait_for
from tests.nn_support import LIGHT_EPOCHS, MLP_LABEL
from tre_audit.submissions.enums import RunStatus, Status
from tre_audit.submissions.models import AuditRun, AuditShadow
from tre_audit.submissions.services import audit_chain_verify, submission_create

pytestmark = pytest.mark.django_db(transaction=True)

#: Each worker at concurrency 1 and one thread, fanning out (4 shadows: conftest).
FANOUT = {"TRE_AUDIT_FANOUT": "true", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
#: No worker dies in this one: a message is redelivered only after an hour, not after the
#: kill tests' 8 s, which a shadow on a busy machine can outlast (it was then trained twice).
NO_REDELIVERY = {**FANOUT, "TRE_AUDIT_VISIBILITY_TIMEOUT": "3600"}


def _submit(files, label="response"):
    return submission_create(
        author=factories.create_user(role="researcher"),
        title="SVC",
        label=label,
        declaration=factories.EXACT,
        **files,
    )


def _done(submission, seen: list | None = None):
    run = AuditRun.objects.get(submission=submission)
    assert run.status != RunStatus.FAILED, run.error
    if seen is not None:
        seen.append(run.shadows_done)
    return run if run.status == RunStatus.DONE else None


def _ready(worker) -> bool:
    return worker.log.exists() and " ready." in worker.log.read_text(errors="replace")


def _shadows_trained_by(worker) -> int:
    return worker.log.read_text(errors="replace").count("submissions.audit_shadow_train[")


def test_one_worker_and_two_workers_give_the_same_report(worker_factory, example_files):
    first = worker_factory(**NO_REDELIVERY)
    seen = []
    alone = _submit(example_files)
    one = wait_for(lambda: _done(alone, seen), what="the audit on one worker", log=first.log)
    second = worker_factory(**NO_REDELIVERY)
    wait_for(lambda: _ready(second), what="the second worker to start", log=second.log)
    trained_by_first = _shadows_trained_by(first)
    shared = _submit(example_files)
    two = wait_for(lambda: _done(shared), what="the audit on two workers", log=second.log)
    assert _without_run(two.report) == _without_run(one.report)
    assert two.report["reproducibility"]["n_shadow_models"] == 4
    assert _shadows_trained_by(first) > trained_by_first and _shadows_trained_by(second) > 0
    assert seen == sorted(seen) and one.shadows_done == 4  # progress counted each shadow
    assert one.attempts == two.attempts == 1
    assert AuditShadow.objects.filter(run=two, starts=1).count() == 4
    assert audit_chain_verify().ok


def run_of(submission) -> AuditRun:
    return AuditRun.objects.get(submission=submission)


def _training(submission) -> AuditShadow | None:
    run = AuditRun.objects.get(submission=submission)
    assert run.status != RunStatus.FAILED, run.error
    return run.shadows.filter(starts=1, finished_at__isnull=True).first()


def test_a_worker_killed_mid_shadow_loses_that_shadow_only(worker_factory, example_files):
    """The first shadow a worker trains also starts its sandbox's zygote (seconds of
    imports): that is the shadow caught in training, and the test checks that it was."""
    first = worker_factory(**FANOUT)
    submission = _submit(example_files)
    shadow = wait_for(
        lambda: _training(submission),
        what="a shadow model to be in training",
        interval=0.02,
        log=first.log,
    )
    finished = set(
        run_of(submission).shadows.filter(finished_at__isnull=False).values_list("index", flat=True)
    )
    first.kill()
    shadow.refresh_from_db()
    assert shadow.finished_at is None, "the shadow finished before its worker was killed"
    second = worker_factory(**FANOUT)
    run = wait_for(lambda: _done(submission), what="the killed shadow's redelivery", log=second.log)
    starts = dict(run.shadows.values_list("index", "starts"))
    # a stored shadow is never trained again; one still running may be redelivered too
    # when a busy machine makes it outlast the 8 s visibility timeout
    assert starts[shadow.index] >= 2 and sorted(starts) == list(range(4))
    assert all(starts[k] == 1 for k in finished), (finished, starts)
    assert run.attempts == 1 and run.shadows_done == 4
    assert run.report["shadow_rounds"]["n_models"] == 4
    assert not [a for a in run.report["attacks"] if a["error"]]
    submission.refresh_from_db()
    assert submission.status == Status.AWAITING_REVIEW
    assert audit_chain_verify().ok


def _without_run(report: dict) -> dict:
    """The report but for its ``run``, the one part that differs between runs."""
    return {k: v for k, v in report.items() if k != "run"}


def test_a_network_fans_out_from_its_recipe_alike_on_one_worker_or_two(worker_factory, mlp_files):
    """An ONNX network with its declaration: each shadow task trains the declared recipe
    (tre-audit's own loop, in the sandbox), and the report is the same on two workers."""
    network = {**mlp_files, "architecture": mlp_files["declaration"]}
    del network["declaration"]  # the services' name for it is architecture
    submit = lambda: _submit(network, label=MLP_LABEL)  # noqa: E731
    first = worker_factory(**NO_REDELIVERY)
    alone = submit()
    one = wait_for(lambda: _done(alone), what="the network's audit on one worker", log=first.log)
    second = worker_factory(**NO_REDELIVERY)
    wait_for(lambda: _ready(second), what="the second worker to start", log=second.log)
    shared = submit()
    two = wait_for(lambda: _done(shared), what="the network's audit on two workers", log=second.log)
    attacks = {a["name"]: a for a in two.report["attacks"]}
    assert all(attacks[name]["error"] is None for name in ("shadow", "lira", "rmia")), attacks
    assert two.report["model"]["declaration"]["recipe"]["epochs"] == LIGHT_EPOCHS
    assert _without_run(two.report) == _without_run(one.report)
    assert _shadows_trained_by(second) > 0
