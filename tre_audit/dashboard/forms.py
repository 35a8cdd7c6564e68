"""The admin dashboard's forms: they parse input; the services decide and write."""

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError

from tre_audit.reviews.enums import Role


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
