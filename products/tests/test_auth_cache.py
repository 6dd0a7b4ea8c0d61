"""Authenticated writes: few queries, and cached authentication never outlives a change."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from products import token_cache, transport

from .support.users import token_client

pytestmark = pytest.mark.django_db


def _create(client, name: str):
    return client.post("/api/products/", {"name": name, "price": "9.99", "quantity": 3}, format="json")


def test_authenticated_create_takes_at_most_three_queries(editor, django_assert_max_num_queries):
    client = token_client(editor)
    assert _create(client, "first").status_code == 201  # authenticates once, from the database
    # Token, user and permissions come from Redis; what is left is the name
    # check and the INSERT (the invalidation goes to Redis, not the database).
    with django_assert_max_num_queries(3) as captured:
        response = _create(client, "second")
    assert response.status_code == 201
    assert not any("authtoken_token" in q["sql"] or "auth_permission" in q["sql"] for q in captured)


def test_revoked_permission_refuses_the_next_write(editor):
    client = token_client(editor)
    assert _create(client, "before").status_code == 201
    editor.user_permissions.remove(Permission.objects.get(codename="add_product"))
    assert _create(client, "after").status_code == 403


def test_permission_removed_from_a_group_refuses_the_next_write(plain_user):
    group = Group.objects.create(name="editors")
    group.permissions.add(Permission.objects.get(codename="add_product"))
    plain_user.groups.add(group)
    client = token_client(plain_user)
    assert _create(client, "before").status_code == 201
    group.permissions.clear()
    assert _create(client, "after").status_code == 403


def test_user_removed_from_a_group_through_the_group_refuses_the_next_write(plain_user):
    group = Group.objects.create(name="editors")
    group.permissions.add(Permission.objects.get(codename="add_product"))
    group.user_set.add(plain_user)
    client = token_client(plain_user)
    assert _create(client, "before").status_code == 201
    group.user_set.remove(plain_user)
    assert _create(client, "after").status_code == 403


def test_granted_permission_applies_to_the_next_write(plain_user):
    client = token_client(plain_user)
    assert _create(client, "before").status_code == 403
    plain_user.user_permissions.add(Permission.objects.get(codename="add_product"))
    assert _create(client, "after").status_code == 201


def test_deleted_token_and_deactivated_user_are_refused_at_once(editor):
    client = token_client(editor)
    assert _create(client, "one").status_code == 201
    editor.is_active = False
    editor.save()
    assert _create(client, "two").status_code == 401
    editor.is_active = True
    editor.save()
    assert _create(client, "three").status_code == 201
    Token.objects.filter(user=editor).delete()
    assert _create(client, "four").status_code == 401


def test_a_fill_that_read_before_a_change_is_never_served(editor, monkeypatch, django_assert_num_queries):
    """A request reads the user's permissions, then a revocation lands before it stores them."""
    client = token_client(editor)
    read_from_database = TokenAuthentication.authenticate_credentials

    def read_then_change(self, key):
        found = read_from_database(self, key)
        found[0].get_all_permissions()  # the old permissions, as the fill will store them
        token_cache.invalidate()  # a change commits between the read and the fill
        return found

    monkeypatch.setattr(TokenAuthentication, "authenticate_credentials", read_then_change)
    assert _create(client, "racing").status_code == 201
    monkeypatch.undo()
    # The racing fill was refused: the next request reads the database again.
    with django_assert_num_queries(5):
        assert _create(client, "next").status_code == 201


def test_cached_user_saves_only_what_it_loaded(editor):
    """The cached user has no password hash; saving it must not blank the stored one."""
    client = token_client(editor)
    assert _create(client, "warm").status_code == 201
    key = Token.objects.get(user=editor).key
    user, token = token_cache.CachedTokenAuthentication().authenticate_credentials(key)
    assert token.key == key and user.pk == editor.pk
    assert user.has_perm("products.add_product")
    user.first_name = "Edited"
    user.save()
    editor.refresh_from_db()
    assert editor.first_name == "Edited" and editor.check_password("pw-editor")


def test_a_timeout_of_zero_caches_no_token_and_leaves_redis_trusted(
    editor, settings, django_assert_num_queries
):
    # Redis refuses `SET ... EX 0`: the fill used to fail as an outage,
    # opening the breaker (the product cache off, the limits failing open).
    settings.AUTH_CACHE_TIMEOUT = 0
    client = token_client(editor)
    assert _create(client, "first").status_code == 201
    assert not transport.breaker_open()
    response = client.get("/api/products/first/")
    assert response.status_code == 200 and response["X-Cache"] == "MISS"
    assert client.get("/api/products/first/")["X-Cache"] == "HIT"
    # Every request reads the token from the database.
    with django_assert_num_queries(1) as captured:
        client.get("/api/products/first/")
    assert "authtoken_token" in captured[0]["sql"]
