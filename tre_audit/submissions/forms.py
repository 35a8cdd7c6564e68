"""Forms: parse and size-check what a researcher sends; the services judge the content."""

from django import forms

from tre_audit.listing import ListingForm, risk_choices
from tre_audit.submissions.enums import Hosting, Status
from tre_audit.submissions.models import Project
from tre_audit.submissions.services import upload_size_refusal


class LimitedFileField(forms.FileField):
    """A file no larger than the service's upload limit, checked before it is read."""

    def clean(self, data, initial=None):
        upload = super().clean(data, initial)
        refusal = upload and upload_size_refusal(name=upload.name, size=upload.size)
        if refusal:
            raise forms.ValidationError(refusal)
        return upload


class VersionFilesForm(forms.Form):
    model = LimitedFileField(
        label="Model file (.skops)",
        help_text="Save with skops.io.dump; pickle and joblib files are refused.",
    )
    train = LimitedFileField(
        label="Training set (CSV or Parquet)", help_text="Exactly the rows the model was fitted on."
    )
    test = LimitedFileField(
        label="Held-out set (CSV or Parquet)", help_text="Rows the model never saw in training."
    )


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
    field_order = ["title", "project", "label", "model", "train", "test"]

    def __init__(self, *args, user=None, **kwargs):
        super().__init__(*args, **kwargs)
        if user is not None:
            self.fields["project"].queryset = Project.objects.filter(members=user)


class NewVersionForm(VersionFilesForm):
    note = forms.CharField(
        max_length=500, label="What changed", help_text="Shown to the checkers with the new audit."
    )


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000)


class SubmissionListForm(ListingForm):
    """The request list's filters (its GET parameters)."""

    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any"), *Status.choices]
    )
    risk = forms.ChoiceField(label="Risk", required=False, choices=risk_choices())
