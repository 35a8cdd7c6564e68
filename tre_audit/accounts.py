"""Account pages beyond Django's own: a password reset that cannot be used to flood
an inbox (each request sends an e-mail, and anyone may ask)."""

from __future__ import annotations

from django.contrib.auth import views as auth_views

from tre_audit.api.throttling import PasswordResetRateThrottle


class PasswordResetView(auth_views.PasswordResetView):
    """Django's reset, refused with a form error and 429 past the ``password_reset``
    rate (settings) per client address."""

    def post(self, request, *args, **kwargs):
        throttle = PasswordResetRateThrottle()
        if throttle.allow_request(request, self):
            return super().post(request, *args, **kwargs)
        form = self.get_form()
        minutes = max(1, round((throttle.wait() or 60) / 60))
        form.add_error(
            None,
            f"Too many reset requests from this address: try again in {minutes} minute"
            f"{'s' if minutes != 1 else ''}.",
        )
        return self.render_to_response(self.get_context_data(form=form), status=429)
