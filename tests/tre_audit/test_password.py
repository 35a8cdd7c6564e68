"""Password change and reset, in the app's own pages, linked from the user menu."""

import re

import pytest
from django.core import mail
from django.urls import reverse

from tests import factories
from tre_audit.reviews.enums import Role

pytestmark = pytest.mark.django_db

NEW = "correct horse battery staple"


@pytest.fixture
def user():
    user = factories.create_user("rosalind", Role.RESEARCHER)
    user.email = "rosalind@example.org"
    user.set_password("an old long passphrase")
    user.save()
    return user


def test_the_user_menu_links_to_password_change_and_sign_out(client, user):
    client.force_login(user)
    page = client.get(reverse("submissions:list")).content.decode()
    menu = page.split('<details class="signout usermenu">', 1)[1].split("</details>", 1)[0]
    assert f'href="{reverse("password_change")}"' in menu and "Change password" in menu
    assert f'action="{reverse("logout")}"' in menu and "Sign out" in menu


def test_a_password_is_changed_in_the_apps_style(client, user):
    client.force_login(user)
    page = client.get(reverse("password_change")).content.decode()
    assert '<header class="top">' in page and 'id="id_old_password_field"' in page
    assert "Django administration" not in page
    weak = client.post(
        reverse("password_change"),
        {
            "old_password": "an old long passphrase",
            "new_password1": "short",
            "new_password2": "short",
        },
    )
    assert weak.status_code == 200 and 'aria-invalid="true"' in weak.content.decode()
    done = client.post(
        reverse("password_change"),
        {"old_password": "an old long passphrase", "new_password1": NEW, "new_password2": NEW},
    )
    assert done.status_code == 302 and done.url == reverse("password_change_done")
    user.refresh_from_db()
    assert user.check_password(NEW)


def test_a_reset_sends_a_link_that_sets_a_new_password(client, user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    login = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("password_reset")}"' in login and "Forgot your password?" in login
    sent = client.post(reverse("password_reset"), {"email": "rosalind@example.org"})
    assert sent.status_code == 302 and len(mail.outbox) == 1
    assert mail.outbox[0].to == ["rosalind@example.org"]
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form = client.get(link, follow=True)
    assert "Choose a new password" in form.content.decode()
    done = client.post(form.redirect_chain[-1][0], {"new_password1": NEW, "new_password2": NEW})
    assert done.status_code == 302 and done.url == reverse("password_reset_complete")
    user.refresh_from_db()
    assert user.check_password(NEW)


def test_resets_past_the_rate_are_refused_in_a_sentence_and_send_nothing(client, user, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["password_reset"]
    allowed = int(rate.split("/")[0])
    for _ in range(allowed):
        assert client.post(reverse("password_reset"), {"email": user.email}).status_code == 302
    refused = client.post(reverse("password_reset"), {"email": user.email})
    assert refused.status_code == 429
    assert "Too many reset requests from this address: try again in" in refused.content.decode()
    assert len(mail.outbox) == allowed
