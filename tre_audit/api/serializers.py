"""API serializers: parse what clients send and shape what they get; no decisions here."""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import build_choice_field
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from attacks.audit import Upload
from attacks.checks import DATA_FORMATS
from attacks.intake import MAX_RECORD_BYTES
from attacks.record_query import MEMBER, NOT_MEMBER, UNKNOWN
from safe_model.refusal import size
from tre_audit.reviews.enums import Decision, ReleaseCondition
from tre_audit.reviews.models import Review
from tre_audit.reviews.selectors import review_list_visible_to
from tre_audit.submissions.enums import Hosting, RunStatus, Status
from tre_audit.submissions.models import AuditRun, Project, Submission
from tre_audit.submissions.selectors import current_run
from tre_audit.submissions.services import Declaration, upload_size_refusal

# -- input ------------------------------------------------------------------------------


@extend_schema_field(OpenApiTypes.BINARY)
class UploadField(serializers.FileField):
    """An uploaded file no larger than the service's limit (checked before it is read)."""

    def to_internal_value(self, data) -> Upload:
        file = super().to_internal_value(data)
        refusal = upload_size_refusal(name=file.name, size=file.size)
        if refusal:
            raise serializers.ValidationError(refusal)
        return Upload(name=file.name, data=file.read())


@extend_schema_field(OpenApiTypes.BINARY)
class RecordUploadField(serializers.FileField):
    """A record file no larger than a record may be (checked before it is read)."""

    def to_internal_value(self, data) -> Upload:
        file = super().to_internal_value(data)
        if file.size > MAX_RECORD_BYTES:
            raise serializers.ValidationError(
                f"The record is larger than the limit of {size(MAX_RECORD_BYTES)}."
            )
        return Upload(name=file.name, data=file.read())


class RecordQueryCreateSerializer(serializers.Serializer):
    record = RecordUploadField(
        help_text="A one-row CSV (.csv) or a JSON object of feature -> value (.json), with "
        "the training set's columns; the label column is optional. Or send the JSON object "
        "itself as an application/json body."
    )


class VersionFilesSerializer(serializers.Serializer):
    model = UploadField(
        help_text="The fitted model: scikit-learn saved with skops.io.dump (.skops), or a "
        "model exported to ONNX (.onnx): a neural network, or scikit-learn through skl2onnx."
    )
    declaration = UploadField(
        required=False,
        help_text="With an ONNX network only: its declared architecture and training recipe "
        "(JSON, docs/nn-declaration.md), so the audit can train shadow models of it. Without "
        "one only the attacks that need no shadow models run; with a skops model it is refused.",
    )
    train = UploadField(help_text=f"Exactly the rows the model was fitted on ({DATA_FORMATS}).")
    test = UploadField(help_text=f"Rows the model never saw in training ({DATA_FORMATS}).")


class SubmissionCreateSerializer(VersionFilesSerializer):
    title = serializers.CharField(max_length=200)
    label = serializers.CharField(max_length=200, help_text="The outcome column in both sets.")
    project = serializers.PrimaryKeyRelatedField(
        queryset=Project.objects.all(),
        required=False,
        allow_null=True,
        help_text="A project you are a member of; its members can follow the request.",
    )
    model_type = serializers.CharField(max_length=200, required=False, default="")
    preprocessing = serializers.CharField(required=False, default="")
    purpose = serializers.CharField(required=False, default="")
    hosting = serializers.ChoiceField(choices=Hosting.choices, default=Hosting.PUBLIC_FILE)
    files_are_exact = serializers.BooleanField(
        help_text="Must be true: you declare these are exactly the model and data used."
    )

    def validate_files_are_exact(self, value: bool) -> bool:
        if not value:
            raise serializers.ValidationError(
                "Declare that these files are exactly the model and data used: "
                "the audit is only meaningful for the exact files."
            )
        return value


def declaration_from(data: dict) -> Declaration:
    """The researcher's declaration out of validated submission data."""
    return Declaration(**{name: data[name] for name in Declaration.__dataclass_fields__})


class NewVersionSerializer(VersionFilesSerializer):
    """New files, what changed, and any declaration field this version changes (one left
    out keeps the current version's)."""

    note = serializers.CharField(max_length=500, help_text="What changed; checkers see it.")
    label = serializers.CharField(max_length=200, required=False, help_text="The outcome column.")
    model_type = serializers.CharField(max_length=200, required=False)
    preprocessing = serializers.CharField(required=False)
    purpose = serializers.CharField(required=False)
    hosting = serializers.ChoiceField(choices=Hosting.choices, required=False)


class ReasonSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=2000)


class ReviewCreateSerializer(serializers.Serializer):
    run_id = serializers.IntegerField(
        min_value=1, help_text="The audit run whose report you read (audit.id of the request)."
    )
    decision = serializers.ChoiceField(choices=Decision.choices)
    reason = serializers.CharField(max_length=4000, help_text="Why, in terms of the evidence.")
    evidence = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        default=list,
        help_text="Finding sources of the report relied on, e.g. attack:rmia or rule:...",
    )
    comment = serializers.CharField(
        max_length=4000, required=False, default="", help_text="Required to request changes."
    )
    justification = serializers.CharField(
        max_length=4000,
        required=False,
        default="",
        help_text="Required to approve against a high-risk verdict.",
    )
    condition = serializers.ChoiceField(
        choices=ReleaseCondition.choices, required=False, default=ReleaseCondition.AS_FILE
    )


# -- output -----------------------------------------------------------------------------


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()
    expiry = serializers.DateTimeField(help_text="When the token stops working.")


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="One sentence saying what went wrong.")
    errors = serializers.DictField(
        required=False, help_text="Per-field messages, when the input was invalid."
    )


class NamedChoiceField(serializers.ChoiceField):
    """Choices that appear in the schema as one enum of this name, wherever they are used."""

    def __init__(self, *, schema_name: str, **kwargs):
        self.schema_name = schema_name
        super().__init__(**kwargs)


class _NamedChoiceFieldSchema(OpenApiSerializerFieldExtension):
    target_class = NamedChoiceField
    match_subclasses = True

    def get_name(self) -> str:
        return self.target.schema_name

    def map_serializer_field(self, auto_schema, direction) -> dict:
        return build_choice_field(self.target)


def _request_status(**kwargs) -> NamedChoiceField:
    # both a request and its audit have a "status": unnamed, their enums would collide
    return NamedChoiceField(schema_name="RequestStatus", choices=Status.choices, **kwargs)


def _absolute(request, name: str, submission_id: int) -> str:
    return request.build_absolute_uri(reverse(name, args=[submission_id]))


class SubmissionRowSerializer(serializers.Serializer):
    """One row of ``submission_rows``: a request and the risk of its current audit."""

    id = serializers.IntegerField(source="submission.pk")
    title = serializers.CharField(source="submission.title")
    status = _request_status(source="submission.status")
    version = serializers.IntegerField(source="submission.version")
    risk = serializers.CharField(allow_null=True, help_text="Risk of the current audit, if any.")
    created_at = serializers.DateTimeField(source="submission.created_at")
    updated_at = serializers.DateTimeField(source="submission.updated_at")
    url = serializers.SerializerMethodField()

    def get_url(self, row) -> str:
        return _absolute(self.context["request"], "api-request-detail", row["submission"].pk)


class QueueRowSerializer(serializers.Serializer):
    """One row of a checker's queue."""

    id = serializers.IntegerField(source="submission.pk")
    title = serializers.CharField(source="submission.title")
    version = serializers.IntegerField(source="submission.version")
    author = serializers.CharField(source="submission.author.get_username")
    risk = serializers.CharField(allow_null=True)
    waiting_since = serializers.DateTimeField()
    url = serializers.SerializerMethodField()

    def get_url(self, row) -> str:
        return _absolute(self.context["request"], "api-request-detail", row["submission"].pk)


class AuditRunSerializer(serializers.ModelSerializer):
    status = NamedChoiceField(schema_name="AuditStatus", choices=RunStatus.choices, read_only=True)

    class Meta:
        model = AuditRun
        fields = [
            "id",
            "version",
            "status",
            "stage",
            "progress",
            "attempts",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]


class VerdictSerializer(serializers.Serializer):
    risk = serializers.CharField()
    summary = serializers.CharField()


class ReviewSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer.get_username", read_only=True)
    evidence = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = Review
        fields = [
            "id",
            "reviewer",
            "decision",
            "reason",
            "evidence",
            "comment",
            "justification",
            "condition",
            "needs_admin_signoff",
            "signed_off_at",
            "created_at",
        ]


class LinksSerializer(serializers.Serializer):
    request = serializers.URLField(help_text="This request in the API.")
    report_json = serializers.URLField(allow_null=True)
    report_pdf = serializers.URLField(allow_null=True)
    bundle = serializers.URLField(allow_null=True)


class SubmissionDetailSerializer(serializers.ModelSerializer):
    """A request as its reader may see it: progress, verdict, reviews and links."""

    status = _request_status(read_only=True)
    author = serializers.CharField(source="author.get_username", read_only=True)
    project = serializers.CharField(source="project.name", allow_null=True, read_only=True)
    audit = serializers.SerializerMethodField()
    verdict = serializers.SerializerMethodField()
    reviews = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = Submission
        fields = [
            "id",
            "title",
            "status",
            "version",
            "author",
            "project",
            "label",
            "model_type",
            "preprocessing",
            "purpose",
            "hosting",
            "files_are_exact",
            "created_at",
            "updated_at",
            "audit",
            "verdict",
            "reviews",
            "links",
        ]

    @extend_schema_field(AuditRunSerializer(allow_null=True))
    def get_audit(self, submission) -> dict | None:
        """The newest audit of the current version, finished or not."""
        run = submission.runs.filter(version=submission.version).order_by("-created_at").first()
        return AuditRunSerializer(run).data if run else None

    @extend_schema_field(VerdictSerializer(allow_null=True))
    def get_verdict(self, submission) -> dict | None:
        run = current_run(submission)
        if run is None or not run.report:
            return None
        verdict = run.report.get("verdict", {})
        return {"risk": verdict.get("risk", ""), "summary": verdict.get("summary", "")}

    @extend_schema_field(ReviewSerializer(many=True))
    def get_reviews(self, submission) -> list[dict]:
        user = self.context["request"].user
        reviews = review_list_visible_to(user=user, submission=submission)
        return ReviewSerializer(reviews, many=True).data

    @extend_schema_field(LinksSerializer)
    def get_links(self, submission) -> dict:
        request, pk = self.context["request"], submission.pk
        has_report = current_run(submission) is not None
        return {
            "request": _absolute(request, "api-request-detail", pk),
            "report_json": _absolute(request, "api-report-json", pk) if has_report else None,
            "report_pdf": _absolute(request, "api-report-pdf", pk) if has_report else None,
            "bundle": _absolute(request, "api-bundle", pk)
            if submission.release_bundle_id
            else None,
        }


class RecordAttackSerializer(serializers.Serializer):
    name = serializers.CharField()
    title = serializers.CharField(help_text="The attack, named for people.")
    membership_probability = serializers.FloatField(
        help_text="Of the audit's records scored this high, the share that were members."
    )
    false_positive_rate = serializers.FloatField(
        help_text="The share of non-members scored at least as high."
    )
    meaning = serializers.CharField(help_text="The two numbers in a sentence.")


class RecordErrorSerializer(serializers.Serializer):
    title = serializers.CharField()
    error = serializers.CharField()


class RecordAnswerSerializer(serializers.Serializer):
    verdict = NamedChoiceField(
        schema_name="RecordVerdict",
        choices=[(MEMBER, "Likely a member"), (NOT_MEMBER, "Likely not"), (UNKNOWN, "Cannot tell")],
    )
    in_words = serializers.CharField(help_text="The verdict in one sentence.")
    record_hash = serializers.CharField(help_text="The record's keyed hash, as in the report.")
    in_audit_data = serializers.CharField(help_text="Whether it is one of the audit's rows.")
    label_source = serializers.CharField(help_text="given, or predicted by the model.")
    strongest = serializers.CharField(help_text="The attack the verdict follows.")
    membership_probability = serializers.FloatField()
    attacks = RecordAttackSerializer(many=True)
    reasons = serializers.ListField(child=serializers.CharField())
    errors = RecordErrorSerializer(many=True)
    shadows = serializers.CharField(help_text='"stored" or "trained again".')
    n_shadow_models = serializers.IntegerField()


class RecordQuerySerializer(serializers.Serializer):
    """One record question, from ``record_query_view``."""

    id = serializers.IntegerField()
    run = serializers.IntegerField(help_text="The audit run asked.")
    status = NamedChoiceField(schema_name="AuditStatus", choices=RunStatus.choices)
    asked_by = serializers.CharField()
    created_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    input_sha256 = serializers.CharField(help_text="SHA-256 of the uploaded record.")
    error = serializers.CharField(help_text="Why it could not be answered, if so.")
    answer = RecordAnswerSerializer(allow_null=True)
    url = serializers.SerializerMethodField()

    def get_url(self, view) -> str:
        request, submission_id = self.context["request"], self.context["submission_id"]
        return request.build_absolute_uri(
            reverse("api-record-query-detail", args=[submission_id, view["id"]])
        )
