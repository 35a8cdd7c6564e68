"""Forms: parse and size-check what a researcher sends; the services judge the content."""

import copy

from django import forms
from django.conf import settings
from django.forms.models import model_to_dict
from django.urls import reverse
from django.utils.html import format_html

from attacks.audit import Upload
from attacks.checks import DATA_FORMATS
from attacks.exceptions import IntakeError
from attacks.intake import MAX_RECORD_BYTES, columns_named, table_columns
from safe_model.loader import model_file_problem
from safe_model.refusal import quote, size
from tre_audit.listing import ListingForm, risk_choices
from tre_audit.submissions.enums import Hosting, Status
from tre_audit.submissions.kept import FILE_ROLES, OPTIONAL_FILE_ROLES, KeptFile
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


class DeclarationFileField(LimitedFileField):
    """A network's declaration that reads as one (JSON of the schema's layers and recipe);
    whether it is the model's own is checked with the model, in the sandbox."""

    def refusal(self, upload: Upload) -> str | None:
        from attacks.nn.declared import declaration_read  # no torch: JSON and dataclasses

        try:
            declaration_read(upload.data)
        except IntakeError as exc:
            return str(exc)
        return None


class TableFileField(LimitedFileField):
    """A table whose columns can be read: CSV, Parquet, a zip of images with labels.csv,
    or an .npz of arrays (attacks.intake.table_columns reads each)."""

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
    """The files of a version; those kept from an earlier post need not be sent again.

    The declaration is optional: a kept one is used unless the post ticks its
    "do not send" box (``<name>-drop``), which forgets it.
    """

    model = ModelFileField(
        label="Model file (.skops or .onnx)",
        help_text="A scikit-learn model saved with skops.io.dump, or a model exported to "
        "ONNX (a neural network, or scikit-learn through skl2onnx); pickle and joblib files "
        "are refused.",
    )
    architecture = DeclarationFileField(
        label="Declared architecture and training recipe (JSON)",
        required=False,
        help_text="For an ONNX network only.",  # with its link to the format: __init__
    )
    train = TableFileField(
        label="Training set",
        help_text=f"Exactly the rows the model was fitted on: {DATA_FORMATS}.",
    )
    test = TableFileField(
        label="Held-out set", help_text=f"Rows the model never saw in training: {DATA_FORMATS}."
    )

    def __init__(self, *args, kept: dict[str, KeptFile] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["architecture"].help_text = format_html(
            "For an ONNX network only: its layers and how it was trained, so that the audit "
            'can train shadow models of it (<a href="{}">the format</a>). Without it only the '
            "attacks that need no shadow models run.",
            reverse("submissions:declaration_format"),
        )
        #: The files of a post that passed their own checks: kept if the form fails.
        self.arrived: dict[str, Upload] = {}
        #: Optional kept files the post said not to send: forgotten if the form fails.
        self.dropped: set[str] = set()
        self.keep(kept or {})

    def keep(self, kept: dict[str, KeptFile]) -> None:
        """Show these files as kept, and use them for the inputs a post leaves empty."""
        self.kept = dict(kept)
        for role in FILE_ROLES:
            self.fields[role].required = role not in self.kept and role not in OPTIONAL_FILE_ROLES
            self.fields[role].kept = self.kept.get(role)
            self.fields[role].optional = role in OPTIONAL_FILE_ROLES

    def clean(self):
        cleaned = super().clean()
        self.arrived = {r: cleaned[r] for r in FILE_ROLES if cleaned.get(r) is not None}
        self.dropped = {
            r
            for r in OPTIONAL_FILE_ROLES
            if r in self.kept
            and r not in self.arrived
            and self.data.get(f"{self[r].html_name}-drop")
        }
        for role in FILE_ROLES:
            unsent = role not in self.arrived and role not in self.errors
            if unsent and role in self.kept and role not in self.dropped:
                cleaned[role] = self._kept_upload(role)
        return cleaned

    def _kept_upload(self, role: str) -> Upload | None:
        try:
            return self.kept[role].upload()
        except (OSError, StoredFile.DoesNotExist):
            self.add_error(role, "The kept file is no longer available: choose it again.")
            return None

    def uploads(self) -> dict[str, Upload | None]:
        """The files to submit (each sent now or kept; None for an optional one not
        given), by the services' names for them, once the form is valid."""
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
    field_order = ["title", "project", "model", "architecture", "train", "label", "test"]

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
