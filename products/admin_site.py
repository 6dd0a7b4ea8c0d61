"""The admin site: Django's, with the password-change form under the failed sign-in limits.

Django's form checks the old password with ``check_password()``, outside
``authenticate()``: neither the limits' backend nor the ``user_login_failed``
signal sees it, so whoever holds a staff session could guess the account's
password there without limit. Here each wrong old password counts as a
failed sign-in (address and username, products.auth_limits), and a locked
account gets the same 429 as the login pages.
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.admin.forms import AdminPasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.urls import reverse
from django.utils.html import escape

from . import auth_limits
from .exceptions import html_page


class LimitedPasswordChangeForm(AdminPasswordChangeForm):
    def __init__(self, user, *args, request=None, **kwargs) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self):
        username = self.user.get_username()
        auth_limits.check(self.request, username)  # TooManyFailedLogins: a 429 (FailedLoginLimitMiddleware)
        try:
            return super().clean_old_password()
        except ValidationError:
            auth_limits.record_failure(self.request, username)
            raise


class LimitedPasswordChangeView(PasswordChangeView):
    form_class = LimitedPasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}


def logout_confirmation(request: HttpRequest) -> HttpResponse:
    """The page a GET of a logout URL shows (a bookmark, a typed address): a button that logs out.

    Django logs out on POST only (a link could be forged onto any page), and
    answered a GET with an empty 405 that browsers show as a broken page.
    """
    if not request.user.is_authenticated:
        return html_page(
            200, "Not logged in", "You are not logged in.", title="Log out", back="/", back_text="Home"
        )
    form = (
        f'<form method="post" action="{escape(request.get_full_path())}">'
        f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(get_token(request))}">'
        '<button type="submit">Log out</button></form>'
    )
    return html_page(
        200, "Log out?", f"You are logged in as {escape(request.user.get_username())}.", form, title="Log out"
    )


class ProductAdminSite(admin.AdminSite):
    def logout(self, request, extra_context=None):
        if request.method in ("GET", "HEAD"):
            return logout_confirmation(request)
        return super().logout(request, extra_context)

    def password_change(self, request, extra_context=None):
        # As AdminSite.password_change, with the limited form.
        defaults = {
            "success_url": reverse("admin:password_change_done", current_app=self.name),
            "extra_context": {**self.each_context(request), **(extra_context or {})},
        }
        if self.password_change_template is not None:
            defaults["template_name"] = self.password_change_template
        request.current_app = self.name
        return LimitedPasswordChangeView.as_view(**defaults)(request)
