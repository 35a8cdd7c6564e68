"""The admin dashboard's forms: they parse input; the services decide and write."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from tre_audit.listing import ListingForm, risk_choices
from tre_audit.reviews.enums import Role
from tre_audit.submissions.enums import AuditAction, RunStatus, Status


class SignOffForm(forms.Form):
    reason = forms.CharField(
        label="Why you sign off this approval",
        widget=forms.Textarea(attrs={"rows": 2}),
        max_length=2000,
    )


class UserRolesForm(forms.Form):
    roles = forms.MultipleChoiceField(
        label="Roles",
        choices=Role.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )


class UserCreateForm(forms.Form):
    username = forms.CharField(label="Username", max_length=150)
    email = forms.EmailField(label="Email", required=False)
    password = forms.CharField(
        label="Initial password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Give it to the user in person; they should change it when they first sign in.",
    )
    roles = forms.MultipleChoiceField(
        label="Roles",
        choices=Role.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
    )

    def clean(self):
        """A weak password is said at its field (the service checks it again)."""
        cleaned = super().clean()
        if cleaned.get("password") and cleaned.get("username"):
            user = get_user_model()(username=cleaned["username"], email=cleaned.get("email", ""))
            try:
                validate_password(cleaned["password"], user)
            except ValidationError as exc:
                self.add_error("password", exc)
        return cleaned


class PolicyForm(forms.Form):
    text = forms.CharField(
        label="Policy (TOML)",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 30, "class": "mono", "spellcheck": "false"}),
    )
    note = forms.CharField(
        label="What changed and why",
        max_length=300,
        help_text="Kept with the version and shown in its history.",
    )


class RunListForm(ListingForm):
    """The audit-run list's filters (its GET parameters)."""

    status = forms.ChoiceField(
        label="Status",
        required=False,
        choices=[("", "Any"), ("active", "Queued or running"), *RunStatus.choices],
    )
    retried = forms.BooleanField(label="Needed another attempt", required=False)
    risk = forms.ChoiceField(label="Risk", required=False, choices=risk_choices())


class AuditLogForm(ListingForm):
    """The audit log's filters (its GET parameters); the export takes the same."""

    sorts = ("date",)

    action = forms.ChoiceField(
        label="What", required=False, choices=[("", "Anything"), *AuditAction.choices]
    )
    actor = forms.CharField(label="By (username)", required=False, max_length=150)
    request = forms.IntegerField(
        label="Request #", required=False, min_value=1, max_value=2**31 - 1
    )
    status = forms.ChoiceField(
        label="Became (status)", required=False, choices=[("", "Any"), *Status.choices]
    )
    author = forms.CharField(label="Request's author", required=False, max_length=150)

    field_order = ["q", "action", "actor", "request", "author", "project", "status", "since"]
