from django.conf import settings
from django.db import models
from django.urls import reverse
from django.utils import timezone

from tre_audit.submissions.enums import FileRole, Hosting, RunStatus, Status


class StoredFile(models.Model):
    """One file's bytes, stored once under its SHA-256 and never changed."""

    sha256 = models.CharField(max_length=64, primary_key=True)
    size = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self):
        return self.sha256[:12]


class Project(models.Model):
    """A research project: its members see each other's requests."""

    name = models.CharField(max_length=200, unique=True)
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="projects")

    def __str__(self):
        return self.name


class Submission(models.Model):
    """A researcher's request to release a model, across its versions."""

    title = models.CharField(max_length=200)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="submissions"
    )
    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.PROTECT, related_name="submissions"
    )
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.SUBMITTED)
    #: The current version; files and audits of earlier versions are kept.
    version = models.PositiveIntegerField(default=1)
    release_bundle = models.ForeignKey(
        StoredFile, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    label = models.CharField(max_length=200, default="label")
    # The researcher's declaration
    model_type = models.CharField(max_length=200, blank=True)
    preprocessing = models.TextField(blank=True)
    purpose = models.TextField(blank=True)
    hosting = models.CharField(max_length=32, choices=Hosting.choices, default=Hosting.PUBLIC_FILE)
    files_are_exact = models.BooleanField(default=False)
    # A checker's "I'm on it" in the review queue: a hint to the others, never a lock.
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"#{self.pk} {self.title}"

    def get_absolute_url(self):
        return reverse("submissions:detail", args=[self.pk])


#: The declaration's fields (on ``Submission`` for the current version, on each
#: ``SubmissionVersion`` as sent), with the names people read.
DECLARATION_LABELS = {
    "label": "Label column",
    "model_type": "Model type",
    "preprocessing": "Preprocessing",
    "purpose": "Purpose",
    "hosting": "Hosting",
    "files_are_exact": "Files declared exact",
}


class SubmissionVersion(models.Model):
    """One version of a request as its author sent it: the declaration with it, and the
    author's note on what changed. The request's own fields are the current version's."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="versions")
    number = models.PositiveIntegerField()
    note = models.TextField(blank=True)  # "what changed", for the checkers; empty for the first
    # The declaration, as on Submission
    label = models.CharField(max_length=200, default="label")
    model_type = models.CharField(max_length=200, blank=True)
    preprocessing = models.TextField(blank=True)
    purpose = models.TextField(blank=True)
    hosting = models.CharField(max_length=32, choices=Hosting.choices, default=Hosting.PUBLIC_FILE)
    files_are_exact = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)  # when it was sent

    class Meta:
        ordering = ["number"]
        constraints = [
            models.UniqueConstraint(fields=["submission", "number"], name="one_row_per_version")
        ]

    def declaration(self) -> dict:
        """The declared fields' values, by field name."""
        return {name: getattr(self, name) for name in DECLARATION_LABELS}


class SubmissionFile(models.Model):
    """A stored file in one role of one submission, with the name it was uploaded as."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="files")
    version = models.PositiveIntegerField(default=1)
    role = models.CharField(max_length=16, choices=FileRole.choices)
    stored = models.ForeignKey(StoredFile, on_delete=models.PROTECT)
    name = models.CharField(max_length=255)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["submission", "version", "role"], name="one_file_per_role_per_version"
            )
        ]


class AuditEntry(models.Model):
    """One line of the append-only audit log, chained to the previous by hash."""

    submission = models.ForeignKey(
        Submission, null=True, on_delete=models.PROTECT, related_name="audit_entries"
    )
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    action = models.CharField(max_length=64)
    before = models.CharField(max_length=32, blank=True)
    after = models.CharField(max_length=32, blank=True)
    reason = models.TextField(blank=True)
    created_at = models.DateTimeField()
    prev_hash = models.CharField(max_length=64)
    entry_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        ordering = ["id"]

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise ValueError("Audit entries are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit entries are append-only.")


class AuditRun(models.Model):
    """One audit of one submission: progress while it runs, the report when done."""

    submission = models.ForeignKey(Submission, on_delete=models.PROTECT, related_name="runs")
    version = models.PositiveIntegerField(default=1)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    stage = models.CharField(max_length=64, blank=True)
    progress = models.FloatField(default=0.0)
    # Where the current phase (shadows, attacks, sweep) started, for the time left
    # (attacks.progress.eta_seconds): when, at what progress, reported how often since.
    phase = models.CharField(max_length=16, blank=True)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    phase_start_progress = models.FloatField(default=0.0)
    phase_updates = models.PositiveIntegerField(default=0)
    attempts = models.PositiveIntegerField(default=0)  # times a worker started it
    task_id = models.CharField(max_length=64, blank=True)  # the Celery task running it
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # written while it runs
    report = models.JSONField(null=True, blank=True)
    risk = models.CharField(max_length=16, blank=True)  # the report's verdict, for lists
    report_pdf = models.ForeignKey(StoredFile, null=True, blank=True, on_delete=models.PROTECT)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # An audit whose shadows are Celery tasks (settings.TRE_AUDIT_FANOUT):
    shadows_done = models.PositiveIntegerField(default=0)  # trained, of this run
    shadows_wanted = models.PositiveIntegerField(default=0)  # the pool after this round
    shadows_max = models.PositiveIntegerField(default=0)  # the policy's maximum
    shadow_rounds = models.JSONField(default=list)  # each measured round's results
    # The saved policy version the run is judged by, pinned when it starts (0: the
    # default file), so a policy saved mid-audit changes neither its rounds nor its report.
    policy_version = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]


class AuditShadow(models.Model):
    """One shadow model of a fanned-out audit run: its confidences (numbers, never the
    model), or why it failed, and how many times a worker started training it."""

    run = models.ForeignKey(AuditRun, on_delete=models.CASCADE, related_name="shadows")
    index = models.PositiveIntegerField()
    starts = models.PositiveIntegerField(default=0)
    confidences = models.BinaryField(null=True)  # little-endian float64, one per record
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "index"], name="one_row_per_shadow_of_a_run")
        ]


class PolicyVersion(models.Model):
    """One saved version of the risk policy (TOML); audits use the newest."""

    version = models.PositiveIntegerField(unique=True)
    text = models.TextField()
    sha256 = models.CharField(max_length=64)
    note = models.CharField(max_length=300)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-version"]


class AuditChainHead(models.Model):
    """The audit log's newest entry, in one row: appends lock it, so they form one chain.

    An append checks the newest entry against it (an edited or removed tail shows at
    once, without reading the log); a full verification records a broken log here,
    and the service refuses to append to it until verification passes again.
    """

    entry_id = models.BigIntegerField(null=True)
    entry_hash = models.CharField(max_length=64)
    broken = models.TextField(blank=True)  # why verification failed; empty when it passed
    checked_at = models.DateTimeField(null=True)


class RecordQuery(models.Model):
    """ "Was this record in the training set?", asked of one finished audit run.

    The record is stored by its SHA-256 like any upload and named elsewhere only by
    that hash and the audit's keyed hash (in ``answer``), never by its values.
    """

    run = models.ForeignKey(AuditRun, on_delete=models.PROTECT, related_name="record_queries")
    asked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT)
    created_at = models.DateTimeField(auto_now_add=True)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    input = models.ForeignKey(StoredFile, on_delete=models.PROTECT, related_name="+")
    input_name = models.CharField(max_length=255)  # as uploaded: its suffix says CSV or JSON
    answer = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    @property
    def input_sha256(self) -> str:
        return self.input_id
