"""Forms: parse and size-check what a researcher sends; the services judge the content."""

import copy

from django import forms
from django.conf import settings
from django.forms.models import model_to_dict

from attacks.audit import Upload
from attacks.exceptions import IntakeError
from attacks.intake import MAX_RECORD_BYTES, columns_named, table_columns
from safe_model.loader import model_file_problem
from safe_model.refusal import quote, size
from tre_audit.listing import ListingForm, risk_choices
from tre_audit.submissions.enums import Hosting, Status
from tre_audit.submissions.kept import FILE_ROLES, KeptFile
from tre_audit.submissions.models import Project, StoredFile
from tre_audit.submissions.services import NEW_VERSION_DECLARED, upload_size_refusal

#: A training file with more columns than this offers them as suggestions, not a list.
MAX_LABEL_CHOICES = 500


class LimitedFileField(forms.FileField):
    """A file no larger than the service's upload limit, checked before it is read.

    It cleans to an :class:`~attacks.audit.Upload`, or None when no file came.
    """

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        if not upload:
            return None
        refusal = upload_size_refusal(name=upload.name, size=upload.size)
        if refusal:
            raise forms.ValidationError(refusal)
        checked = Upload(name=upload.name, data=upload.read())
        refusal = self.refusal(checked)
        if refusal:
            raise forms.ValidationError(refusal)
        return checked

    def refusal(self, upload: Upload) -> str | None:
        """Why this file cannot be what the field asks for; None if it may be."""
        return None


class ModelFileField(LimitedFileField):
    """A model file that is no pickle and at least a zip archive; the sandbox checks the rest."""

    def refusal(self, upload: Upload) -> str | None:
        return model_file_problem(upload.data, filename=upload.name)


class TableFileField(LimitedFileField):
    """A CSV or Parquet file whose header can be read."""

    def refusal(self, upload: Upload) -> str | None:
        try:
            _columns(upload)
        except IntakeError as exc:
            return str(exc)
        return None


def _columns(upload: Upload) -> list[str]:
    return table_columns(
        upload.data, filename=upload.name, max_bytes=settings.TRE_AUDIT_MAX_UPLOAD_BYTES
    )


class VersionFilesForm(forms.Form):
    """The three files of a version; those kept from an earlier post need not be sent again."""

    model = ModelFileField(
        label="Model file (.skops)",
        help_text="Save with skops.io.dump; pickle and joblib files are refused.",
    )
    train = TableFileField(
        label="Training set (CSV or Parquet)", help_text="Exactly the rows the model was fitted on."
    )
    test = TableFileField(
        label="Held-out set (CSV or Parquet)", help_text="Rows the model never saw in training."
    )

    def __init__(self, *args, kept: dict[str, KeptFile] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        #: The files of a post that passed their own checks: kept if the form fails.
        self.arrived: dict[str, Upload] = {}
        self.keep(kept or {})

    def keep(self, kept: dict[str, KeptFile]) -> None:
        """Show these files as kept, and use them for the inputs a post leaves empty."""
        self.kept = dict(kept)
        for role in FILE_ROLES:
            self.fields[role].required = role not in self.kept
            self.fields[role].kept = self.kept.get(role)

    def clean(self):
        cleaned = super().clean()
        self.arrived = {r: cleaned[r] for r in FILE_ROLES if cleaned.get(r) is not None}
        for role in FILE_ROLES:
            if role not in self.arrived and role not in self.errors and role in self.kept:
                cleaned[role] = self._kept_upload(role)
        return cleaned

    def _kept_upload(self, role: str) -> Upload | None:
        try:
            return self.kept[role].upload()
        except (OSError, StoredFile.DoesNotExist):
            self.add_error(role, "The kept file is no longer available: choose it again.")
            return None

    def uploads(self) -> dict[str, Upload]:
        """The three files to submit (each sent now or kept), once the form is valid."""
        return {role: self.cleaned_data[role] for role in FILE_ROLES}


class SubmissionForm(VersionFilesForm):
    title = forms.CharField(max_length=200, help_text="What the model is, in a few words.")
    label = forms.CharField(
        max_length=200, label="Label column", help_text="The outcome column in both data sets."
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.none(),
        required=False,
        help_text="Members of the project can follow the request too.",
    )
    model_type = forms.CharField(
        max_length=200, label="Model type", help_text="For example: random forest, 100 trees."
    )
    preprocessing = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Scaling, encoding, feature selection: anything done before fitting.",
    )
    purpose = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="What the model will be used for."
    )
    hosting = forms.ChoiceField(
        choices=Hosting.choices,
        label="Where will it be hosted?",
        widget=forms.RadioSelect,
        initial=Hosting.PUBLIC_FILE,
    )
    files_are_exact = forms.BooleanField(
        label="I declare these files are exactly the model and data used.",
        help_text="The audit is only meaningful for the exact files.",
    )
    field_order = ["title", "project", "model", "train", "label", "test"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is not None:
            self.fields["project"].queryset = Project.objects.filter(members=user)

    def keep(self, kept: dict[str, KeptFile]) -> None:
        super().keep(kept)
        label = self.fields["label"]
        label.widget.attrs.update({"list": "id_label_columns", "data-columns-of": "id_train"})
        columns = self._kept_columns()
        if columns and len(columns) <= MAX_LABEL_CHOICES:
            choices = [("", "Choose the label column"), *((c, c) for c in columns)]
            label.widget = forms.Select(choices=choices)

    def _kept_columns(self) -> list[str]:
        if "train" not in self.kept:
            return []
        try:
            return _columns(self.kept["train"].upload())
        except (IntakeError, OSError):
            return []

    def clean(self):
        cleaned = super().clean()
        train, label = cleaned.get("train"), cleaned.get("label")
        if train is not None and label:
            columns = _columns(train)
            if label not in columns:
                self.add_error(
                    "label",
                    f"The training file has no column {quote(label)}; "
                    f"its columns are {columns_named(columns)}.",
                )
        return cleaned


def _kept_if_blank(field: forms.Field) -> forms.Field:
    """A copy of a declaration field that a new version may leave blank (kept as it was)."""
    field = copy.deepcopy(field)
    field.required = False
    return field


class NewVersionForm(VersionFilesForm):
    note = forms.CharField(
        max_length=500, label="What changed", help_text="Shown to the checkers with the new audit."
    )
    # The declaration, pre-filled with the current version's: change what differs.
    label = _kept_if_blank(SubmissionForm.base_fields["label"])
    model_type = _kept_if_blank(SubmissionForm.base_fields["model_type"])
    preprocessing = _kept_if_blank(SubmissionForm.base_fields["preprocessing"])
    purpose = _kept_if_blank(SubmissionForm.base_fields["purpose"])
    hosting = _kept_if_blank(SubmissionForm.base_fields["hosting"])

    def __init__(self, *args, submission=None, **kwargs):
        if submission is not None:
            kwargs.setdefault("initial", model_to_dict(submission, fields=NEW_VERSION_DECLARED))
        super().__init__(*args, **kwargs)


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


class WithdrawForm(ReasonForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
        error_messages={"required": "Say why you withdraw the request."},
    )
    confirm = forms.BooleanField(
        label="I understand that a withdrawn request cannot be reopened.",
        error_messages={"required": "Tick the box to confirm that you withdraw the request."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, auto_id="id_withdraw_%s", **kwargs)  # unique beside other forms


class RecordQueryForm(forms.Form):
    record = forms.FileField(
        label="The record (a one-row CSV or a JSON object)",
        help_text="The training set's columns; without the label column the model's "
        "prediction stands in for it.",
    )

    def clean_record(self):
        upload = self.cleaned_data["record"]
        if upload.size > MAX_RECORD_BYTES:  # refused before it is read
            raise forms.ValidationError(
                f"The record is larger than the limit of {size(MAX_RECORD_BYTES)}."
            )
        return upload


class SubmissionListForm(ListingForm):
    """The request list's filters (its GET parameters)."""

    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any"), *Status.choices]
    )
    risk = forms.ChoiceField(label="Risk", required=False, choices=risk_choices())
