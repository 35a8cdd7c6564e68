"""The ``tre-audit`` command line: thin parsing around the attacks library.

``audit``, ``scan`` and ``example`` run here; ``submit`` and ``status`` talk to a
tre-audit server's REST API (``--url``/``TRE_AUDIT_URL``, ``--token``/``TRE_AUDIT_TOKEN``).

Exit status: 0 when the command did its job (an audit that ran, whatever its
verdict), 2 on bad input (a file that cannot be read, a model that fails on the data)
or a refusal by the server, 1 on an internal error; either with a one-line reason on
stderr, its data values left out (``--debug`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import shutil
import sys
import threading
import time
from pathlib import Path

from attacks.checks import DATA_FORMATS, audit_numbers_check
from attacks.exceptions import AuditError
from attacks.progress import (
    ATTACK_STAGES,
    elapsed_text,
    eta_seconds,
    eta_text,
    phase_mark_next,
    stage_text,
)
from safe_model.redact import exception_summary
from secure_compute.exceptions import SecureComputeError

BAD_INPUT = 2
INTERNAL_ERROR = 1
DEFAULT_URL = "http://127.0.0.1:8000"
#: Seconds to connect, and to wait for an answer (the server checks uploads on arrival).
HTTP_TIMEOUT = (10, 600)
#: Statuses in which the audit has not finished yet.
AUDIT_PENDING = {"submitted", "auditing"}
#: The files every audit, scan and submission takes.
TARGET = ("model", "train", "test")
#: The teaching networks ``tre-audit example`` writes (attacks.nn.teaching.CASES, named
#: here so that parsing the arguments imports nothing heavy).
NETWORK_EXAMPLES = ("breast-cancer-mlp", "digits-cnn-overfit", "digits-cnn-regularised")


class CommandError(Exception):
    """A user error the CLI reports in one line and exits 2 for."""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (CommandError, AuditError, SecureComputeError) as exc:
        print(f"tre-audit: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return BAD_INPUT
    except OSError as exc:  # a path the user gave: --out, --report-dir, a key file
        print(f"tre-audit: error: {_os_error(exc)}", file=sys.stderr)
        return BAD_INPUT
    except KeyboardInterrupt:
        print("tre-audit: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.debug:
            raise
        print(
            f"tre-audit: internal error: {exception_summary(exc)} (--debug shows where)",
            file=sys.stderr,
        )
        return INTERNAL_ERROR


def _os_error(exc: OSError) -> str:
    """ "<path>: <reason>." for an error about a file, without the errno's number."""
    reason = exc.strerror or type(exc).__name__
    return f"{exc.filename}: {reason}." if exc.filename else f"{reason}."


class _Parser(argparse.ArgumentParser):
    """An argument error in one line, exit 2, as every other refusal (subcommands too)."""

    def error(self, message: str):
        self.exit(BAD_INPUT, f"tre-audit: error: {message} (see {self.prog} --help).\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tre-audit", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an internal error"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    audit = commands.add_parser("audit", help="audit a model for membership inference risk")
    _add_target_args(audit)
    audit.add_argument(
        "--out", required=True, type=Path, help="directory for report.json and report.pdf"
    )
    audit.add_argument(
        "--record", type=Path, help="row.json: one record to ask about (feature -> value)"
    )
    audit.add_argument(
        "--description", type=Path, help="per-column data description (JSON) for the shadow cohort"
    )
    audit.add_argument(
        "--attacks", help="comma-separated subset of: shadow,lira,lira_offline,rmia,worst_case"
    )
    audit.add_argument("--no-sweep", action="store_true", help="skip the hyperparameter sweep")
    audit.add_argument(
        "--include-raw-values",
        action="store_true",
        help="show raw values of the most exposed records (checkers only)",
    )
    audit.add_argument("--force", action="store_true", help="replace an existing report in --out")
    audit.set_defaults(handler=_audit)
    example = commands.add_parser("example", help="write a teaching example's files to audit")
    example.add_argument("name", choices=["famous-patient", *NETWORK_EXAMPLES])
    example.add_argument(
        "--gamma", type=float, default=3.0, help="SVC gamma (3 leaks; 0.1 is the mitigation)"
    )
    example.add_argument("--out", required=True, type=Path, help="directory for the files")
    example.set_defaults(handler=_example)
    scan = commands.add_parser("scan", help="hyperparameter risk scan only (rules and sweep)")
    _add_target_args(scan)
    scan.add_argument("--out", type=Path, help="also write scan.json here")
    scan.set_defaults(handler=_scan)
    _add_submit(commands)
    _add_status(commands)
    from tre_audit.cli_serving import add_commands  # imports this module: after it is loaded

    add_commands(commands, server_args=_add_server_args)
    return parser


def _add_submit(commands) -> None:
    submit = commands.add_parser(
        "submit",
        help="submit a model to a tre-audit server for audit and output checking",
        description="Submitting declares that the files are exactly the model and data used.",
    )
    _add_files_args(submit)
    submit.add_argument("--title", required=True, help="what the model is, in a few words")
    submit.add_argument(
        "--hosting",
        choices=["public_file", "another_tre", "query_only"],
        default="public_file",
        help="where the approved model will live (default: public_file)",
    )
    submit.add_argument("--model-type", default="", help="for example: random forest, 100 trees")
    submit.add_argument("--preprocessing", default="", help="what was done before fitting")
    submit.add_argument("--purpose", default="", help="what the model will be used for")
    submit.add_argument("--project", type=_positive, help="id of a project you are a member of")
    submit.add_argument("--wait", action="store_true", help="wait until the audit has finished")
    _add_server_args(submit)
    submit.set_defaults(handler=_submit)


def _add_status(commands) -> None:
    status = commands.add_parser("status", help="show a submitted request's status")
    status.add_argument("id", type=_positive, help="the request's number")
    status.add_argument("--wait", action="store_true", help="wait until the audit has finished")
    status.add_argument(
        "--report-dir", type=Path, help="download report.json and report.pdf into this directory"
    )
    _add_server_args(status)
    status.set_defaults(handler=_status)


def _add_server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--url", help=f"the server (default: $TRE_AUDIT_URL or {DEFAULT_URL})")
    p.add_argument("--token", help="your API token (default: $TRE_AUDIT_TOKEN)")
    p.add_argument(
        "--interval", type=_seconds, default=2.0, help="seconds between polls with --wait"
    )
    p.add_argument("--timeout", type=_seconds, help="with --wait: give up after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _add_files_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, type=Path, help="fitted model (.skops or .onnx)")
    p.add_argument(
        "--architecture",
        type=Path,
        help="an ONNX network's declared architecture and training recipe (JSON, "
        "docs/nn-declaration.md); without it the attacks needing shadow models do not run",
    )
    p.add_argument("--train", required=True, type=Path, help=f"training set ({DATA_FORMATS})")
    p.add_argument("--test", required=True, type=Path, help=f"held-out set ({DATA_FORMATS})")
    p.add_argument("--label", required=True, help="name of the label column")


def _add_target_args(p: argparse.ArgumentParser) -> None:
    _add_files_args(p)
    p.add_argument("--shadows", type=int, help="shadow models (default: the policy's)")
    p.add_argument("--seed", type=int, default=0, help="random seed, 0 to 2**32 - 1 (default 0)")
    p.add_argument("--jobs", type=int, help="processes for shadow models (default: all cores)")
    p.add_argument("--policy", type=Path, help="risk policy (TOML); default: the built-in policy")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _audit(args) -> int:
    audit_numbers_check(random_state=args.seed, n_shadow_models=args.shadows, n_jobs=args.jobs)
    _check_out_dir(args.out, force=args.force)
    files = _target_files(args)  # before the heavy imports: a wrong path fails in a blink
    extras = {role: _optional_file(getattr(args, role)) for role in ("record", "description")}
    attacks = _attack_names(args.attacks)
    from attacks.audit import DEFAULT_ATTACKS, AuditConfig
    from attacks.pdf import render_pdf
    from attacks.report import report_dumps
    from attacks.sandboxed import uploads_audit

    config = AuditConfig(
        attacks=attacks or DEFAULT_ATTACKS,
        n_shadow_models=args.shadows,
        random_state=args.seed,
        n_jobs=args.jobs,
        sweep=not args.no_sweep,
        include_raw_values=args.include_raw_values,
    )
    policy = _policy(args.policy)
    with _progress(args.quiet, first="loading") as progress:
        report = uploads_audit(
            **_as_uploads(files),
            label=args.label,
            policy=policy,
            config=config,
            **{role: _as_upload(extra) for role, extra in extras.items()},
            progress=progress,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    _write(args.out / "report.json", report_dumps(report).encode())
    _write(args.out / "report.pdf", render_pdf(report))
    print(f"{report['verdict']['risk'].upper()} risk. {report['verdict']['summary']}")
    print(f"Wrote {args.out / 'report.json'} and {args.out / 'report.pdf'}")
    return 0


def _example(args) -> int:
    if args.name in NETWORK_EXAMPLES:
        return _network_example(args.name.replace("-", "_"), args.out)
    from attacks.datasets import write_famous_patient_example

    for role, path in write_famous_patient_example(args.out, gamma=args.gamma).items():
        print(f"{role:12} {path}")
    return 0


def _network_example(name: str, out: Path) -> int:
    """A teaching network (attacks.nn.teaching) trained here and written as a researcher
    uploads it: model.onnx, its declaration, train.csv and test.csv."""
    try:
        from attacks.nn.teaching import teaching_write
        from attacks.nn.torch_model import export_onnx  # noqa: F401 (needs the torch extra)
    except ImportError:
        print("tre-audit: the network examples are trained with PyTorch: install the torch "
              "extra (pip install 'tre-audit[torch]').", file=sys.stderr)  # fmt: skip
        return 2
    for role, path in teaching_write(name, out).items():
        print(f"{role:12} {path}")
    return 0


def _scan(args) -> int:
    sweep_shadows = {} if args.shadows is None else {"n_sweep_shadow_models": args.shadows}
    audit_numbers_check(random_state=args.seed, n_jobs=args.jobs, **sweep_shadows)
    files = _target_files(args)  # before the heavy imports, as in ``audit``
    from attacks.audit import AuditConfig
    from attacks.sandboxed import uploads_scan

    config = AuditConfig(random_state=args.seed, n_jobs=args.jobs)
    if args.shadows is not None:
        config = dataclasses.replace(config, n_sweep_shadow_models=args.shadows)
    policy = _policy(args.policy)
    with _progress(args.quiet, first="loading") as progress:
        result = uploads_scan(
            **_as_uploads(files), label=args.label, policy=policy, config=config, progress=progress
        )
    _print_scan(result)
    if args.out is not None:
        from attacks.report import report_dumps

        args.out.mkdir(parents=True, exist_ok=True)
        _write(args.out / "scan.json", report_dumps(result).encode())
    return 0


def _print_scan(result: dict) -> None:
    for rule in result["rules"]:
        print(f"[{rule['risk'].upper():6}] {rule['title']}: {rule['reason']}")
    if not result["rules"]:
        print("No structural findings.")
    sweep = result["sweep"]
    for p in sweep["points"]:
        tpr = "n/a" if p["tpr_at_1pct_fpr"] is None else f"{p['tpr_at_1pct_fpr']:.3f}"
        mark = " (current)" if p["is_original"] else ""
        print(
            f"  {p['param']}={p['value']!s:<8} AUC {p['auc']:.3f}  TPR@1%FPR {tpr:>5}  "
            f"held-out accuracy {p['test_accuracy']:.3f}{mark}"
        )
    rec = sweep["recommendation"]
    print(rec["text"] if rec else (sweep.get("note") or "No sweep applies to this model."))


def _target_files(args) -> dict[str, tuple[str, bytes]]:
    """The model, training and held-out files (and a declaration, as ``declaration``: the
    library's and the API's name for it) as (name, bytes), read without the audit."""
    files = {role: (getattr(args, role).name, _read(getattr(args, role))) for role in TARGET}
    if args.architecture is not None:
        files["declaration"] = (args.architecture.name, _read(args.architecture))
    return files


def _optional_file(path: Path | None) -> tuple[str, bytes] | None:
    return None if path is None else (path.name, _read(path))


def _as_uploads(files: dict[str, tuple[str, bytes]]) -> dict:
    return {role: _as_upload(file) for role, file in files.items()}


def _as_upload(file: tuple[str, bytes] | None):
    from attacks.audit import Upload

    return None if file is None else Upload(name=file[0], data=file[1])


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CommandError(f"{path} does not exist.") from None
    except IsADirectoryError:
        raise CommandError(f"{path} is a directory, not a file.") from None
    except PermissionError:
        raise CommandError(f"{path} cannot be read (permission denied).") from None
    except OSError as exc:
        raise CommandError(
            f"{path} cannot be read ({exc.strerror or type(exc).__name__})."
        ) from None


def _policy(path: Path | None):
    from attacks.policy import load_policy

    if path is None:
        return load_policy()
    try:
        return load_policy(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        raise CommandError(f"The policy file {path} cannot be read.") from None


def _attack_names(text: str | None) -> tuple[str, ...] | None:
    """The attacks asked for (None: the audit's default), checked without loading them."""
    if not text:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in ATTACK_STAGES]
    if unknown or not names:
        raise CommandError(
            f"Unknown attack {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(ATTACK_STAGES)}."
        )
    return names


def _check_out_dir(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CommandError(f"{out} exists and is not a directory.")
    if (out / "report.json").exists() and not force:
        raise CommandError(f"{out} already holds a report; choose another --out or pass --force.")
    existing = next(p for p in (out, *out.parents) if p.exists())  # made once the audit ran
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise CommandError(f"{out} cannot be made: {existing} is not a writable folder.")


def _write(path: Path, data: bytes) -> None:
    """Write atomically, so an interrupted run never leaves half a report."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError("must be more than 0 and finite")
    return value


def _submit(args) -> int:
    files = _target_files(args)
    server = _Server.from_args(args)
    data = {
        "title": args.title,
        "label": args.label,
        "hosting": args.hosting,
        "model_type": args.model_type,
        "preprocessing": args.preprocessing,
        "purpose": args.purpose,
        "files_are_exact": "true",  # running submit is the declaration (see --help)
    }
    if args.project is not None:
        data["project"] = str(args.project)
    request = server.call(
        "POST",
        "requests/",
        data=data,
        files=files,
    )
    _print_request(request)
    if args.wait:
        request = _wait(server, request["id"], args)
        print(f"status: {request['status']}")
        _print_outcome(request)
    return 0


def _status(args) -> int:
    server = _Server.from_args(args)
    request = server.call("GET", f"requests/{args.id}/")
    if args.wait:
        request = _wait(server, args.id, args)
    _print_request(request)
    _print_outcome(request)
    if args.report_dir is not None:
        _download_reports(server, args.id, args.report_dir)
    return 0


def _print_request(request: dict) -> None:
    print(f"id: {request['id']}")
    print(f"status: {request['status']}")


def _print_outcome(request: dict) -> None:
    """The verdict once audited, or why the audit failed."""
    if request.get("verdict"):
        print(f"risk: {request['verdict']['risk']}. {request['verdict']['summary']}")
    elif request["status"] == "audit_failed" and request.get("audit"):
        print(f"audit failed: {request['audit']['error']}")


def _wait(server: _Server, request_id: int, args) -> dict:
    """Poll until the audit has finished, showing its progress; the request at the end."""
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    with _progress(args.quiet) as progress:
        while True:
            request = server.call("GET", f"requests/{request_id}/")
            audit = request.get("audit") or {}
            if progress is not None:
                progress(audit.get("stage") or request["status"], audit.get("progress") or 0.0)
            if request["status"] not in AUDIT_PENDING:
                return request
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(
                    f"Request {request_id} is still {request['status']} after {args.timeout:g} s."
                )
            time.sleep(args.interval)


def _download_reports(server: _Server, request_id: int, directory: Path) -> None:
    if directory.exists() and not directory.is_dir():
        raise CommandError(f"{directory} exists and is not a directory.")
    report_json = server.call("GET", f"requests/{request_id}/report.json", raw=True)
    report_pdf = server.call("GET", f"requests/{request_id}/report.pdf", raw=True)
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "report.json", report_json)
    _write(directory / "report.pdf", report_pdf)
    print(f"Wrote {directory / 'report.json'} and {directory / 'report.pdf'}")


class _Server:
    """The tre-audit REST API at ``url``, called with a token; errors become CommandError."""

    def __init__(self, url: str, token: str):
        import requests

        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    @classmethod
    def from_args(cls, args) -> _Server:
        url = args.url or os.environ.get("TRE_AUDIT_URL") or DEFAULT_URL
        token = args.token or os.environ.get("TRE_AUDIT_TOKEN")
        if not token:
            raise CommandError(
                "No API token: pass --token or set TRE_AUDIT_TOKEN "
                f"(POST your username and password to {url.rstrip('/')}/api/v1/token/)."
            )
        return cls(url, token)

    def call(self, method: str, path: str, *, raw: bool = False, **kwargs):
        """The answer's JSON (or bytes when ``raw``); CommandError for any failure."""
        import requests

        try:
            response = self.session.request(
                method, f"{self.url}/api/v1/{path}", timeout=HTTP_TIMEOUT, **kwargs
            )
        except requests.ConnectionError:
            raise CommandError(f"Cannot reach the tre-audit server at {self.url}.") from None
        except requests.Timeout:
            raise CommandError(f"The server at {self.url} did not answer in time.") from None
        except requests.RequestException as exc:
            raise CommandError(f"Cannot call the server at {self.url}: {exc}") from None
        if response.status_code >= 400:
            raise CommandError(_error_message(response))
        return response.content if raw else _json(response, self.url)


def _error_message(response) -> str:
    """The server's one-sentence reason, on one line, with the HTTP status."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if not detail:
        detail = response.reason or "The server refused the request."
    return f"{' '.join(str(detail).split())} (HTTP {response.status_code})"


def _json(response, url: str):
    try:
        return response.json()
    except ValueError:
        raise CommandError(f"{url} did not answer like a tre-audit server.") from None


#: Seconds between redraws of the live line on a terminal...
LIVE_SECONDS = 1.0
#: ...and, elsewhere (a log, a pipe), the longest silence before the line is printed again.
QUIET_SECONDS = 30.0


def progress_line(*, elapsed: float, stage: str, done: float, eta: float | None) -> str:
    """``[12 s] Running: RMIA (45%), about 3 min left``: one line of the audit's progress."""
    left = eta_text(eta)
    return f"[{elapsed_text(elapsed)}] {stage_text(stage)} ({done:.0%})" + (
        f", {left}" if left else ""
    )


class ProgressPrinter:
    """The audit's progress on ``stream``: a live line redrawn every second on a terminal,
    else one line per stage (and again after a long silence), so a timer never freezes.

    ``update`` is the audit's progress callback; ``tick`` redraws (a thread calls it).
    """

    def __init__(self, stream, *, live: bool, clock=time.monotonic):
        self.stream, self.live, self.clock = stream, live, clock
        self.started = self.printed_at = clock()
        self.stage, self.done, self.mark, self.last_line = "", 0.0, None, None
        self.lock = threading.Lock()

    def update(self, stage: str, done: float) -> None:
        with self.lock:
            now = self.clock()
            self.mark = phase_mark_next(self.mark, stage=stage, done=done, now=now)
            self.stage, self.done = stage, done
            self._show(now, changed=True)

    def tick(self) -> None:
        with self.lock:
            self._show(self.clock(), changed=False)

    def _show(self, now: float, *, changed: bool) -> None:
        if not self.stage:
            return
        eta = eta_seconds(self.mark, done=self.done, now=now)
        line = progress_line(elapsed=now - self.started, stage=self.stage, done=self.done, eta=eta)
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            self.stream.write(f"\r{line[:width]:<{width}}")
        elif (changed and _without_timer(line) != _without_timer(self.last_line)) or (
            now - self.printed_at >= QUIET_SECONDS
        ):
            self.stream.write(line + "\n")
            self.printed_at, self.last_line = now, line
        self.stream.flush()

    def close(self) -> None:
        if self.live and self.stage:
            self.stream.write("\n")
            self.stream.flush()


def _without_timer(line: str | None) -> str | None:
    """A line without its timer and time left: printed again only when something moved."""
    return None if line is None else line.split("] ", 1)[-1].split(", about ")[0]


@contextlib.contextmanager
def _progress(quiet: bool, *, first: str = ""):
    """The progress callback (None with ``--quiet``), on stderr, with the result on stdout;
    ``first`` is shown until the first report (loading takes seconds)."""
    if quiet:
        yield None
        return
    printer = ProgressPrinter(sys.stderr, live=sys.stderr.isatty())
    if first:
        printer.update(first, 0.0)
    stop = threading.Event()
    ticker = threading.Thread(target=_tick_until, args=(printer, stop), daemon=True)
    ticker.start()
    try:
        yield printer.update
    finally:
        stop.set()
        ticker.join()
        printer.close()


def _tick_until(printer: ProgressPrinter, stop: threading.Event) -> None:
    interval = LIVE_SECONDS if printer.live else QUIET_SECONDS / 6
    while not stop.wait(interval):
        printer.tick()


if __name__ == "__main__":
    sys.exit(main())
