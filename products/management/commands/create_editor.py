"""manage.py create_editor NAME: a user who may add, change and delete products, and their token."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from ._common import UncheckedCommand

EDITOR_PERMISSIONS = ("add_product", "change_product", "delete_product")


class Command(UncheckedCommand):
    help = (
        "Create (or update) a user allowed to add, change and delete products, and print "
        "their API token. Safe to run again: the user is updated (reactivated, if deactivated) "
        "and keeps the same token."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("username", metavar="NAME", help="the editor's username")
        parser.add_argument(
            "--password-from-env",
            metavar="VAR",
            help="set the password from environment variable VAR (default: no password, token only)",
        )
        parser.add_argument(
            "--staff",
            action="store_true",
            help="let the editor into the Django admin too (staff; needs --password-from-env to sign in)",
        )

    def handle(
        self, *args, username: str, password_from_env: str | None, staff: bool = False, **options
    ) -> None:
        User = get_user_model()
        password = self._password(password_from_env)
        try:
            User._meta.get_field(User.USERNAME_FIELD).clean(username, None)
        except ValidationError as exc:
            raise CommandError(f"username {username!r}: {' '.join(exc.messages)}") from None
        permissions = list(
            Permission.objects.filter(content_type__app_label="products", codename__in=EDITOR_PERMISSIONS)
        )
        if len(permissions) != len(EDITOR_PERMISSIONS):
            raise CommandError("the product permissions do not exist yet: run `manage.py migrate` first")
        with transaction.atomic():
            user, created = User.objects.get_or_create(**{User.USERNAME_FIELD: username})
            if password is not None:
                try:
                    validate_password(password, user)
                except ValidationError as exc:
                    raise CommandError(f"${password_from_env}: {' '.join(exc.messages)}") from None
                user.set_password(password)
            elif created:
                user.set_unusable_password()  # token only, until a password is given
            reactivated = not created and not user.is_active
            user.is_active = True  # an editor deactivated in the admin is let in again, and told so
            if staff:
                user.is_staff = True  # never taken away here: a rerun without --staff changes nothing
            user.save()
            user.user_permissions.add(*permissions)
            token, _ = Token.objects.get_or_create(user=user)
        verb = "Created" if created else "Reactivated" if reactivated else "Updated"
        where = ", in the API and the admin" if user.is_staff else ""
        if user.is_staff and not user.has_usable_password():
            where += "; the admin needs a password first: --password-from-env VARIABLE"
        self.stderr.write(f"{verb} editor {username!r} (add, change, delete products{where}). Token:")
        self.output_lost = "the editor is saved: run the command again to print its token"
        self.stdout.write(token.key)  # alone on stdout: TOKEN=$(manage.py create_editor NAME)

    @staticmethod
    def _password(variable: str | None) -> str | None:
        if variable is None:
            return None
        value = os.environ.get(variable)
        if not value:
            raise CommandError(
                f"--password-from-env {variable}: the environment variable is not set or empty"
            )
        return value
