from django import forms

from tre_audit.listing import ListingForm, risk_choices
from tre_audit.reviews.enums import Decision, ReleaseCondition


class ReviewForm(forms.Form):
    #: The audit run whose report the checker read (the page sends it, hidden).
    run_id = forms.IntegerField(
        widget=forms.HiddenInput,
        min_value=1,
        error_messages={"required": "Reload the page: the form did not say which audit you read."},
    )
    decision = forms.ChoiceField(choices=Decision.choices, widget=forms.RadioSelect)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        max_length=4000,
        help_text="Why you decide so, in terms of the evidence you tick below.",
    )
    evidence = forms.MultipleChoiceField(
        choices=(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Evidence relied on",
    )
    comment = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=4000,
        label="What should change",
        help_text="Required to request changes; sent to the researcher.",
    )
    justification = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        max_length=4000,
        help_text="Required to approve against a high-risk verdict; a TRE admin must sign off.",
    )
    condition = forms.ChoiceField(
        choices=ReleaseCondition.choices,
        initial=ReleaseCondition.AS_FILE,
        widget=forms.RadioSelect,
        label="If approved, the model may leave",
    )

    def __init__(self, *args, findings: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["evidence"].choices = list(findings.items())


class CommentForm(forms.Form):
    finding = forms.ChoiceField(choices=(), required=False, label="About")
    text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}), max_length=4000, label="Comment"
    )

    def __init__(self, *args, findings: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["finding"].choices = [("", "The request as a whole"), *findings.items()]


class ReleaseForm(forms.Form):
    """Releasing cannot be undone: the person says they mean it, with or without JavaScript."""

    confirm = forms.BooleanField(
        label="I understand that this releases the model from the TRE, and cannot be undone.",
        error_messages={"required": "Tick the box to confirm the release."},
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, auto_id="id_release_%s", **kwargs)  # unique beside other forms


class QueueForm(ListingForm):
    """The review queue's filters (its GET parameters); oldest first by default."""

    sorts = ("date", "risk", "title")
    default_sort = "date"

    risk = forms.ChoiceField(label="Risk", required=False, choices=risk_choices())
    claim = forms.ChoiceField(
        label="Claimed",
        required=False,
        choices=[("", "Any"), ("unclaimed", "Nobody is on it"), ("mine", "I am on it")],
    )
