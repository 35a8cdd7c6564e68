"""The admin dashboard's forms: they parse input; the services decide and write."""

from django import forms

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
