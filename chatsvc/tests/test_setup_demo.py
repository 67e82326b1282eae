"""`manage.py setup_demo`, run by `make run`: the demo accounts and token, made once and kept."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


def setup_demo(*args):
    out = io.StringIO()
    call_command("setup_demo", *args, stdout=out)
    return out.getvalue()


def test_setup_demo_creates_the_demo_user_the_admin_and_a_token():
    output = setup_demo()

    users = get_user_model().objects
    demo, admin = users.get(username="demo"), users.get(username="admin")
    assert demo.check_password("demo")
    assert not demo.is_staff
    assert admin.check_password("admin")
    assert admin.is_superuser
    assert admin.is_staff
    token = Token.objects.get(user=demo)
    assert f"Demo API token: {token.key}" in output
    assert f"curl -N -H 'Authorization: Token {token.key}'" in output
    assert "http://127.0.0.1:8000/api/ai/chat/stream" in output


def test_setup_demo_run_again_keeps_the_users_and_the_token():
    setup_demo()
    users = get_user_model().objects
    first = (users.get(username="demo").pk, users.get(username="admin").pk, Token.objects.get().key)

    output = setup_demo()

    assert (users.get(username="demo").pk, users.get(username="admin").pk, Token.objects.get().key) == first
    assert users.count() == 2
    assert Token.objects.count() == 1
    assert first[2] in output


def test_setup_demo_prints_the_given_host_and_port():
    output = setup_demo("--host", "0.0.0.0", "--port", "9000")

    assert "http://0.0.0.0:9000/api/ai/chat/stream" in output


def test_the_printed_token_authenticates_the_api(client):
    setup_demo()
    key = Token.objects.get().key

    response = client.get("/api/conversations/", HTTP_AUTHORIZATION=f"Token {key}")

    assert response.status_code == 200
