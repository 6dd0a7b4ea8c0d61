"""manage.py create_editor: a re-runnable way to make an API editor and get their token."""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from .support.users import token_client

pytestmark = pytest.mark.django_db


def create_editor(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("create_editor", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_creates_an_editor_whose_token_can_write(anon_client):
    token, message = create_editor("alice")
    assert "Created editor 'alice'" in message
    assert Token.objects.get(user__username="alice").key == token
    user = User.objects.get(username="alice")
    assert not user.has_usable_password()
    response = token_client(user).post(
        "/api/products/", {"name": "Blue mug", "price": "12.50", "quantity": 10}
    )
    assert response.status_code == 201, response.content
    client = anon_client
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.delete("/api/products/Blue mug/").status_code == 204


def test_running_twice_updates_and_keeps_the_same_token():
    first, _ = create_editor("bob")
    User.objects.get(username="bob").user_permissions.clear()
    second, message = create_editor("bob")
    assert second == first
    assert "Updated editor 'bob'" in message
    assert User.objects.filter(username="bob").count() == 1
    user = User.objects.get(username="bob")
    assert user.has_perms(["products.add_product", "products.change_product", "products.delete_product"])


def test_running_again_for_a_deactivated_user_reactivates_and_says_so():
    create_editor("dora")
    User.objects.filter(username="dora").update(is_active=False)  # as the admin's checkbox does
    _, message = create_editor("dora")
    assert "Reactivated editor 'dora'" in message
    assert User.objects.get(username="dora").is_active
    _, message = create_editor("dora")
    assert "Updated editor 'dora'" in message


def test_password_comes_from_the_named_environment_variable(monkeypatch, client):
    monkeypatch.setenv("EDITOR_PW", "a-long-and-unusual-passphrase")
    create_editor("carol", "--password-from-env", "EDITOR_PW")
    assert client.login(username="carol", password="a-long-and-unusual-passphrase")


def test_staff_lets_the_editor_into_the_admin(monkeypatch, client):
    monkeypatch.setenv("EDITOR_PW", "a-long-and-unusual-passphrase")
    create_editor("frank", "--password-from-env", "EDITOR_PW")
    assert (
        client.post(
            "/admin/login/", {"username": "frank", "password": "a-long-and-unusual-passphrase"}
        ).status_code
        == 200
    )  # not staff: the form again
    _, said = create_editor("frank", "--password-from-env", "EDITOR_PW", "--staff")
    assert "in the API and the admin" in said and "needs a password" not in said
    assert client.login(username="frank", password="a-long-and-unusual-passphrase")
    assert client.get("/admin/products/product/").status_code == 200
    assert client.get("/admin/products/product/add/").status_code == 200
    assert client.get("/admin/auth/user/").status_code == 403  # products only
    create_editor("frank")  # a rerun without --staff takes nothing away
    assert User.objects.get(username="frank").is_staff


@pytest.mark.parametrize(
    "args, message",
    [
        (["dave", "--password-from-env", "NO_SUCH_VARIABLE_SET"], "not set or empty"),
        (["bad name!"], "username 'bad name!'"),
        (["nul\x00byte"], "username"),
        (["x" * 151], "at most 150 characters"),
        (["erin", "--password-from-env", "WEAK_PW"], "WEAK_PW"),
    ],
)
def test_bad_input_is_a_command_error_and_creates_nobody(monkeypatch, args, message):
    monkeypatch.setenv("WEAK_PW", "123")
    with pytest.raises(CommandError, match=message):
        create_editor(*args)
    assert not User.objects.exists()


def test_staff_without_a_password_says_the_admin_needs_one():
    _, said = create_editor("gina", "--staff")
    assert "the admin needs a password first: --password-from-env" in said
    assert User.objects.get(username="gina").is_staff
