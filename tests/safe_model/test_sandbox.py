"""The sandbox: real child processes, each misbehaving as a crafted model can.

Wall-clock limits here are only ever small on purpose (a hang must be
stopped); every other limit is generous so a loaded machine cannot fail a
test, and every wait that polls says what it waited for.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import billiard
import cbor2
import numpy as np
import pytest

from attacks.exceptions import IntakeError
from safe_model import _wire, sandbox
from safe_model.exceptions import ModelRefused
from safe_model.sandbox import (
    GiB,
    MiB,
    SandboxCrashed,
    SandboxFailed,
    SandboxLimits,
    SandboxOutOfCpu,
    SandboxOutOfMemory,
    SandboxTimedOut,
    sandbox_call,
    sandbox_capabilities,
    sandbox_emit,
)

TARGETS = "tests.safe_model.sandbox_targets"
LIMITS = SandboxLimits(
    memory_bytes=3 * GiB,
    cpu_seconds=120,
    wall_seconds=300,
    file_bytes=MiB,
    max_result_bytes=4 * MiB,
)
#: How long a test waits for the kernel to finish a process it killed.
GONE_TIMEOUT_SECONDS = 60


def call(name: str, limits: SandboxLimits = LIMITS, **kwargs):
    return sandbox_call(f"{TARGETS}:{name}", kwargs=kwargs, limits=limits)


def limits(**changes) -> SandboxLimits:
    return SandboxLimits(**{**LIMITS.__dict__, **changes})


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path, monkeypatch):
    """Scratch directories of this test's calls go under its own tmp_path."""
    scratch_root = tmp_path / "scratch-root"
    scratch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch_root))
    return scratch_root


def test_plain_data_and_arrays_make_the_round_trip():
    result = call("arrays", n_rows=4)

    assert result["floats"].shape == (4, 1) and result["floats"].dtype == np.float64
    np.testing.assert_array_equal(result["floats"].ravel(), np.linspace(0.0, 1.0, 4))
    np.testing.assert_array_equal(result["ints"], np.arange(4))
    np.testing.assert_array_equal(result["flags"], [True, False, True, False])
    assert result["labels"].tolist() == ["yes", "no", "yes", "no"]
    assert result["nested"] == [{"bytes": b"\x00\xff", "none": None, "pair": [1, 2.5]}]


def test_kwargs_reach_the_child_as_they_were_sent():
    value = {"matrix": np.arange(12.0).reshape(3, 4), "text": "é", "blob": bytes(range(256))}

    echoed = call("echo", value=value)

    np.testing.assert_array_equal(echoed["matrix"], value["matrix"])
    assert (echoed["text"], echoed["blob"]) == (value["text"], value["blob"])


def test_events_reach_on_event_in_order():
    events = []

    n = sandbox_call(
        f"{TARGETS}:emit_events", kwargs={"n_events": 3}, limits=LIMITS, on_event=events.append
    )

    assert n == 3
    assert events == [{"stage": "step", "done": i / 3} for i in range(3)]


def test_an_error_in_on_event_stops_the_child_and_reaches_the_caller():
    def refuse(event):
        raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError, match="the caller gave up"):
        sandbox_call(f"{TARGETS}:events_forever", kwargs={}, limits=LIMITS, on_event=refuse)

    zygote = sandbox._ZYGOTE._process.pid
    assert _wait_until(lambda: not _children(zygote)), f"zygote children left: {_children(zygote)}"


def test_output_on_stdout_and_stderr_cannot_reach_the_channel(capfd):
    assert call("chatter") == "quiet"

    out, err = capfd.readouterr()
    assert "patient" not in out + err and "convergence" not in out + err


def test_emit_outside_a_sandbox_does_nothing():
    assert sandbox_emit({"stage": "nowhere"}) is None


def test_a_segfault_is_one_sentence_and_the_sandbox_carries_on():
    with pytest.raises(SandboxCrashed) as caught:
        call("segfault")

    assert str(caught.value) == (
        "The model crashed the sandbox (SIGSEGV, segmentation fault): "
        "its arrays are inconsistent or corrupt."
    )
    assert isinstance(caught.value, ModelRefused)
    assert call("echo", value="still here") == "still here"


def test_a_hang_is_stopped_at_the_wall_clock_limit():
    with pytest.raises(
        SandboxTimedOut, match=r"^The model did not finish within 3 s and was stopped\.$"
    ):
        call("loop_forever", limits(wall_seconds=3))


def test_a_child_that_closes_its_channel_and_lingers_is_stopped_at_the_limit():
    with pytest.raises(SandboxTimedOut):
        call("close_channel_and_linger", limits(wall_seconds=3), seconds=3600)


def test_a_child_that_closes_its_channel_and_exits_sent_no_result():
    with pytest.raises(SandboxFailed, match="stopped without sending a result"):
        call("close_channel_and_linger", seconds=0)


def test_allocating_past_the_memory_limit_names_the_limit():
    with pytest.raises(SandboxOutOfMemory, match=r"^The model needed more than 2 GiB of memory\.$"):
        call("allocate", limits(memory_bytes=2 * GiB), n_bytes=3 * GiB)


def test_spinning_past_the_cpu_limit_names_the_limit():
    with pytest.raises(SandboxOutOfCpu, match=r"^The model used more than 2 CPU seconds"):
        call("spin_cpu", limits(cpu_seconds=2))


def test_a_result_over_the_limit_is_not_read():
    with pytest.raises(SandboxFailed, match=r"sent back more than 4 MiB, over the sandbox's limit"):
        call("huge_result", n_bytes=5 * MiB)


def test_events_without_end_are_cut_off_at_the_same_limit():
    with pytest.raises(SandboxFailed, match="sent back more than 4 MiB"):
        call("events_forever")


def test_garbage_on_the_channel_is_refused():
    with pytest.raises(SandboxFailed, match="^The model sent back data the sandbox could not read"):
        call("garbage_on_channel")


def _hostile_bodies() -> dict[str, bytes]:
    """Well-framed results whose CBOR is not what the sandbox writes."""

    def result(value) -> bytes:
        return cbor2.dumps({"value": value, "network_isolated": True})

    array = cbor2.CBORTag(_wire.ARRAY_TAG, ["<f8", [2], b"\x00" * 8])
    return {
        "regex tag": result(cbor2.CBORTag(35, "(a+)+$")),
        "date tag": result(cbor2.CBORTag(1, 0)),
        "shared reference cycle": result(cbor2.CBORTag(28, [cbor2.CBORTag(29, 0)])),
        "array bytes short of its shape": result(array),
        "object array": result(cbor2.CBORTag(_wire.ARRAY_TAG, ["|O", [1], b"\x00" * 8])),
        "nesting 1000 deep": b"\xa2"
        + cbor2.dumps("value")
        + b"\x81" * 1000
        + b"\x00"
        + cbor2.dumps("network_isolated")
        + b"\xf5",
        "list as a key": result({(1, 2): 3}),
        "undefined": result(cbor2.undefined),
        "no isolation flag": cbor2.dumps({"value": 1}),
        "not cbor": b"\xff\xfe",
    }


@pytest.mark.parametrize("case", sorted(_hostile_bodies()))
def test_a_result_that_is_not_plain_data_is_refused(case):
    body = _hostile_bodies()[case]

    with pytest.raises(SandboxFailed, match="sent back data the sandbox could not read"):
        call("send_frame", kind=b"R", body=body)


def test_an_exception_frame_without_its_types_is_refused():
    body = cbor2.dumps({"types": "ModelRefused", "message": "x", "network_isolated": True})

    with pytest.raises(SandboxFailed, match="could not read"):
        call("send_frame", kind=b"X", body=body)


@pytest.mark.parametrize(
    ("target", "error"), [("raise_refused", ModelRefused), ("raise_intake_error", IntakeError)]
)
def test_an_allowed_exception_is_raised_again_with_its_sentence(target, error):
    with pytest.raises(error) as caught:
        sandbox_call(
            f"{TARGETS}:{target}",
            kwargs={"message": "The tree's arrays are inconsistent."},
            limits=LIMITS,
            reraise=(IntakeError, ModelRefused),
        )

    assert type(caught.value) is error
    assert str(caught.value) == "The tree's arrays are inconsistent."


def test_an_allowed_exception_comes_back_on_one_line():
    with pytest.raises(ModelRefused) as caught:
        sandbox_call(
            f"{TARGETS}:raise_refused",
            kwargs={"message": "The tree is\ninconsistent:\r\x1b[2J\ttruly."},
            limits=LIMITS,
            reraise=(ModelRefused,),
        )

    assert str(caught.value) == "The tree is inconsistent: [2J truly."


def test_an_exception_not_allowed_names_only_its_type():
    with pytest.raises(SandboxFailed) as caught:
        sandbox_call(f"{TARGETS}:raise_other", kwargs={}, limits=LIMITS, reraise=(ModelRefused,))

    assert str(caught.value) == "The model failed in the sandbox (KeyError)."
    assert "PATIENT" not in str(caught.value)


def test_only_the_classes_in_reraise_are_raised_again():
    with pytest.raises(SandboxFailed, match=r"\(ModelRefused\)"):
        sandbox_call(
            f"{TARGETS}:raise_refused", kwargs={"message": "x"}, limits=LIMITS, reraise=(KeyError,)
        )


def test_what_names_the_subject_of_the_sentence():
    with pytest.raises(SandboxCrashed, match="^The uploaded pipeline crashed the sandbox"):
        sandbox_call(f"{TARGETS}:segfault", kwargs={}, limits=LIMITS, what="the uploaded pipeline")


def test_an_exit_code_without_a_result_is_reported():
    with pytest.raises(SandboxFailed, match=r"exited unexpectedly \(exit code 7\)"):
        call("exit_quietly", code=7)


def test_a_function_that_cannot_be_imported_fails_by_type():
    with pytest.raises(SandboxFailed, match=r"\(ModuleNotFoundError\)"):
        sandbox_call("tests.safe_model.no_such_module:f", kwargs={}, limits=LIMITS)


def test_a_malformed_function_name_is_a_programming_error():
    with pytest.raises(ValueError, match="module:function"):
        sandbox_call("os.system", kwargs={}, limits=LIMITS)


def test_the_child_cannot_reach_a_listening_localhost_port():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port), timeout=30):
            pass  # reachable from here

        assert sandbox_capabilities().network_isolated is True
        assert call("connect", port=port) == "ENETUNREACH"


def test_a_child_without_network_isolation_is_warned_about_once(caplog, monkeypatch):
    monkeypatch.setattr(sandbox, "_WARNED", threading.Event())
    body = cbor2.dumps({"value": 1, "network_isolated": False})

    with caplog.at_level("WARNING", logger="safe_model.sandbox"):
        results = [call("send_frame", kind=b"R", body=body) for _ in range(2)]

    warnings = [r.getMessage() for r in caplog.records if r.name == "safe_model.sandbox"]
    assert results == [1, 1]
    assert len(warnings) == 1 and "without network isolation" in warnings[0]


def test_the_child_works_in_its_scratch_dir_which_is_removed(_private_tempdir):
    seen = call("where_am_i")

    scratch = Path(seen["cwd"])
    assert scratch.parent == _private_tempdir and seen["tmp"] == str(scratch)
    assert not scratch.exists()
    assert list(_private_tempdir.iterdir()) == []


def test_the_child_gets_no_secret_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SECRET_KEY", "not for the model")
    sandbox._ZYGOTE.stop()  # the next zygote starts from this environment

    assert "DJANGO_SECRET_KEY" not in call("where_am_i")["env"]


def test_file_writes_are_limited_in_size_but_not_confined(tmp_path):
    """Documented: RLIMIT_FSIZE bounds every file; the scratch dir is a default, not a jail."""
    outside = tmp_path / "outside.bin"

    assert call("write_file", path=str(outside), n_bytes=1024) == 1024
    with pytest.raises(SandboxFailed, match=r"wrote more than 1 MiB to a file"):
        call("write_file", path=str(outside), n_bytes=2 * MiB)


def test_a_grandchild_is_killed_with_the_group(tmp_path):
    pid_file = tmp_path / "grandchild.pid"

    call("fork_grandchild", pid_file=str(pid_file))

    grandchild = int(pid_file.read_text())
    assert _wait_until_gone(grandchild), f"grandchild {grandchild} still alive after the call"


def test_a_crash_is_seen_even_while_a_grandchild_holds_the_channel(tmp_path):
    pid_file = tmp_path / "grandchild.pid"

    with pytest.raises(SandboxCrashed, match="SIGSEGV"):
        call("segfault_leaving_grandchild", pid_file=str(pid_file))

    grandchild = int(pid_file.read_text())
    assert _wait_until_gone(grandchild), f"grandchild {grandchild} still alive after the call"


def test_many_calls_leave_no_process_descriptor_or_directory(_private_tempdir):
    call("echo", value=0)  # the zygote is up
    zygote = sandbox._ZYGOTE._process.pid
    fds_before = len(os.listdir("/proc/self/fd"))

    for i in range(20):
        assert call("echo", value=i) == i
    with pytest.raises(SandboxCrashed):
        call("segfault")

    assert _wait_until(lambda: not _children(zygote)), f"zygote children left: {_children(zygote)}"
    assert len(os.listdir("/proc/self/fd")) == fds_before
    assert list(_private_tempdir.iterdir()) == []


def test_two_threads_calling_at_once_both_get_their_own_result():
    results, errors = {}, []

    def run(i):
        try:
            results[i] = call("arrays", n_rows=2 * (i + 1))["ints"].tolist()
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert results == {0: [0, 1], 1: [0, 1, 2, 3]}


def _call_into(queue):
    try:
        queue.put(call("echo", value="from a daemon"))
    except Exception as exc:  # reported by the test
        queue.put(repr(exc))


def test_usable_from_a_daemonic_multiprocessing_process():
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    process = context.Process(target=_call_into, args=(queue,), daemon=True)
    process.start()
    try:
        assert queue.get(timeout=GONE_TIMEOUT_SECONDS * 2) == "from a daemon"
    finally:
        process.join(timeout=GONE_TIMEOUT_SECONDS)


def _echo_in_pool(value):
    return call("echo", value=value)


def test_usable_from_a_billiard_pool_child_as_in_celery():
    with billiard.get_context("fork").Pool(1) as pool:
        result = pool.apply_async(_echo_in_pool, ("from billiard",))
        assert result.get(timeout=GONE_TIMEOUT_SECONDS * 2) == "from billiard"


def test_joblib_loky_workers_run_inside_the_limits():
    scores = call("parallel_fit", limits(memory_bytes=4 * GiB), n_jobs=2)

    assert scores == [1.0, 1.0, 1.0, 1.0]


def test_the_zygote_forks_single_threaded_after_its_preloads():
    call("parallel_fit", limits(memory_bytes=4 * GiB), n_jobs=1)  # its module imported too

    zygote = sandbox._ZYGOTE._process.pid
    assert os.listdir(f"/proc/{zygote}/task") == [str(zygote)]


def test_a_dead_zygote_is_replaced():
    call("echo", value=1)
    sandbox._ZYGOTE._process.kill()
    sandbox._ZYGOTE._process.wait()

    assert call("echo", value=2) == 2


def test_a_zygote_killed_mid_call_takes_its_child_along_and_the_call_ends():
    call("echo", value=0)
    zygote = sandbox._ZYGOTE._process
    outcome = []
    caller = threading.Thread(
        target=lambda: outcome.append(_failure_of("loop_forever", limits(wall_seconds=600)))
    )
    caller.start()
    assert _wait_until(lambda: _children(zygote.pid)), "the looping child never started"
    (child,) = _children(zygote.pid)

    zygote.kill()
    caller.join(timeout=GONE_TIMEOUT_SECONDS * 2)

    assert [type(exc) for exc in outcome] == [SandboxFailed]
    assert str(outcome[0]) == "The sandbox lost track of its process."
    assert _wait_until_gone(child), f"child {child} outlived its zygote"


def _failure_of(name: str, limits: SandboxLimits) -> Exception | None:
    try:
        call(name, limits)
    except Exception as exc:  # the test looks at it
        return exc
    return None


def test_the_zygote_ends_with_the_process_that_started_it():
    code = (
        "from safe_model import sandbox; from safe_model.sandbox import INTAKE_LIMITS; "
        f"sandbox.sandbox_call('{TARGETS}:echo', kwargs={{'value': 1}}, limits=INTAKE_LIMITS); "
        "print(sandbox._ZYGOTE._process.pid)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600
    )

    assert done.returncode == 0, done.stderr
    zygote = int(done.stdout.split()[-1])
    assert _wait_until_gone(zygote), f"zygote {zygote} outlived its parent"


def _children(pid: int) -> list[int]:
    children = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as file:
            children += [int(c) for c in file.read().split()]
    return children


def _wait_until_gone(pid: int) -> bool:
    """True once ``pid`` has exited (gone, or a zombie nobody reaps in this container)."""
    return _wait_until(lambda: _state(pid) in (None, "Z", "X"))


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def _wait_until(condition) -> bool:
    if condition():
        return True
    print(
        f"waiting up to {GONE_TIMEOUT_SECONDS} s for killed processes to be gone (a loaded machine)"
    )
    deadline = time.monotonic() + GONE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if condition():
            return True
    return False
