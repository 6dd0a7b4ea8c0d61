"""Users with given permissions, and API clients that authenticate as them."""

from __future__ import annotations

from django.contrib.auth.models import Permission, User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient


def make_user(username: str, *codenames: str) -> User:
    """Create a user holding the given permission codenames."""
    user = User.objects.create_user(username, password="pw-" + username)
    if codenames:
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def token_client(user: User) -> APIClient:
    """Return an API client sending the user's token."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client
