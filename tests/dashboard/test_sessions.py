"""Sign-in, sessions and CSRF over HTTP, against a running stack (projector and API
processes, real NATS and Postgres)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Iterator

import aiohttp
import asyncpg
import nats
import pytest

from tests.api._client import Client
from tests.api.conftest import Stack, running_stack
from tests.dashboard._person import Person, create_user

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    env = {
        **stack_env,
        "CLINAI_SIGN_IN_FAILURES_PER_ACCOUNT": "3",
        "CLINAI_SIGN_IN_FAILURES_PER_ADDRESS": "6",
    }
    with running_stack(env, ["projector", "api"]) as running:
        yield running


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _address() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


async def test_sign_in_sets_a_session_cookie_that_the_api_accepts(stack: Stack) -> None:
    name = _name("ana")
    user_id = await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with Person(stack.url, address=_address()) as ana:
        status, _, headers = await ana.form("/sign-in", {"name": name, "password": PASSWORD})
        assert status == 303 and headers["location"] == "/models"
        cookie = headers["set-cookie"]
        assert cookie.startswith("clinai_session=")
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # served over plain HTTP here
        me = await ana.api("GET", "/v1/me")
        assert me.status == 200 and me.body["user_id"] == user_id
        assert me.body["key_id"].startswith("ses_")

        status, text, headers = await ana.page("/models")
        assert status == 200 and name in text
        csp = headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert headers["x-content-type-options"] == "nosniff"


async def test_over_https_the_cookie_is_secure(stack: Stack) -> None:
    """Behind a TLS proxy on the host (X-Forwarded-Proto, trusted from 127.0.0.1)."""
    name = _name("tls")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with Person(stack.url, address=_address()) as person:
        _, text, headers = await person.page("/sign-in")
        assert "Secure" not in headers["set-cookie"]  # the form's cookie, over HTTP
        token = re.findall(r'name="csrf_token" value="([^"]*)"', text)[0]
        person.http.headers["X-Forwarded-Proto"] = "https"
        status, _, headers = await person.form(
            "/sign-in", {"name": name, "password": PASSWORD}, token=token
        )
        assert status == 303
        assert "Secure" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]


async def test_not_signed_in_the_pages_send_you_to_sign_in(stack: Stack) -> None:
    async with Person(stack.url) as nobody:
        status, _, headers = await nobody.page("/")
        assert status == 303 and headers["location"] == "/sign-in"
        status, _, headers = await nobody.page("/models/mdl_x")
        assert status == 303 and headers["location"] == "/sign-in?next=/models/mdl_x"
        assert (await nobody.api("GET", "/v1/me")).status == 401


async def test_a_command_without_the_csrf_token_is_refused(stack: Stack) -> None:
    name = _name("bo")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with Person(stack.url, address=_address()) as bo:
        assert await bo.sign_in(name, PASSWORD) == 303
        body = {"name": _name("m")}
        for token in ("", "0" * 64):
            refused = await bo.api("POST", "/v1/models", json=body, csrf=token)
            assert refused.status == 403, refused.body
            assert "CSRF" in refused.body["detail"]
        made = await bo.api("POST", "/v1/models", json=body)
        assert made.status == 201, made.body
        # A form without its token: 403, and the session goes on.
        status, _, _ = await bo.form("/sign-out", {}, token="forged")
        assert status == 403
        assert (await bo.api("GET", "/v1/me")).status == 200
    # Bearer keys work as before, with no CSRF token.
    reply = await Client(stack.url, stack.admin_key).post("/v1/models", json={"name": _name("k")})
    assert reply.status == 201


async def test_a_failed_sign_in_does_not_say_whether_the_user_exists(stack: Stack) -> None:
    name = _name("cy")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    answers = []
    for who in (name, _name("nobody")):
        async with Person(stack.url, address=_address()) as someone:
            status, text, _ = await someone.form(
                "/sign-in", {"name": who, "password": "wrong!!!!!!"}
            )
            answers.append((status, re.findall(r'<p class="error"[^>]*>([^<]*)</p>', text)))
            assert "set-cookie" not in _ or "clinai_session" not in _["set-cookie"]
    assert answers[0] == answers[1] == (401, ["The user name, e-mail or password is wrong."])


async def test_failed_sign_ins_are_limited_per_account(stack: Stack) -> None:
    """3 failures per name: the 4th try is refused even with the right password, from
    any address; a name no user has is limited the same way."""
    name, other = _name("di"), _name("ed")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    await create_user(stack.url, stack.admin_key, other, PASSWORD)
    for who in (name, _name("ghost")):
        for _ in range(3):
            async with Person(stack.url, address=_address()) as attacker:
                assert await attacker.sign_in(who, "not the password") == 401
        async with Person(stack.url, address=_address()) as late:
            status, text, headers = await late.form("/sign-in", {"name": who, "password": PASSWORD})
            assert status == 429 and int(headers["retry-after"]) > 0
            assert "Too many failed sign-ins" in text
    async with Person(stack.url, address=_address()) as ed:
        assert await ed.sign_in(other, PASSWORD) == 303


async def test_failed_sign_ins_are_limited_per_address(stack: Stack) -> None:
    name = _name("fa")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    address = _address()
    async with Person(stack.url, address=address) as attacker:
        for _ in range(6):  # a different name each time: no account reaches its limit
            assert await attacker.sign_in(_name("guess"), "not the password") == 401
        assert await attacker.sign_in(name, PASSWORD) == 429
    async with Person(stack.url, address=_address()) as fa:
        assert await fa.sign_in(name, PASSWORD) == 303


async def test_sign_out_ends_the_session_on_the_server(stack: Stack) -> None:
    name = _name("gu")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with Person(stack.url, address=_address()) as gu:
        assert await gu.sign_in(name, PASSWORD) == 303
        stolen = {c.key: c.value for c in gu.http.cookie_jar}["clinai_session"]
        status, _, headers = await gu.form("/sign-out", {}, token=gu.csrf)
        assert status == 303 and headers["location"] == "/sign-in"
    async with Person(stack.url) as thief:
        thief.http.cookie_jar.update_cookies({"clinai_session": stolen})
        assert (await thief.api("GET", "/v1/me")).status == 401
        status, _, headers = await thief.page("/models")
        assert status == 303 and headers["location"].startswith("/sign-in")


async def test_a_password_change_ends_the_other_sessions(stack: Stack) -> None:
    name, new_password = _name("ha"), "a brand new password"
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with (
        Person(stack.url, address=_address()) as laptop,
        Person(stack.url, address=_address()) as phone,
    ):
        assert await laptop.sign_in(name, PASSWORD) == 303
        assert await phone.sign_in(name, PASSWORD) == 303
        status, text, _ = await laptop.form(
            "/account", {"current_password": PASSWORD, "password": new_password}
        )
        assert status == 200 and "1 other session ended" in text
        assert (await laptop.api("GET", "/v1/me")).status == 200
        assert (await phone.api("GET", "/v1/me")).status == 401
        assert await phone.sign_in(name, PASSWORD) == 401
        assert await phone.sign_in(name, new_password) == 303
        # An admin's reset ends every session of the user.
        user_id = (await laptop.api("GET", "/v1/me")).body["user_id"]
        reset = await Client(stack.url, stack.admin_key).request(
            "PUT", f"/v1/users/{user_id}/password", json={"password": PASSWORD}
        )
        assert reset.status == 202 and reset.body["sessions_ended"] == 2
        assert (await laptop.api("GET", "/v1/me")).status == 401


async def test_a_wrong_current_password_changes_nothing(stack: Stack) -> None:
    name = _name("io")
    await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with Person(stack.url, address=_address()) as io:
        assert await io.sign_in(name, PASSWORD) == 303
        status, _, _ = await io.form(
            "/account", {"current_password": "not it at all", "password": "whatever else 1"}
        )
        assert status == 403
        me = await io.api("GET", "/v1/me")
        path = f"/v1/users/{me.body['user_id']}/password"
        changed = await io.api("PUT", path, json={"password": "x" * 12})
        assert changed.status == 403
        guess = {"password": "x" * 12, "current_password": "a guess"}
        assert (await io.api("PUT", path, json=guess)).status == 403
        # Three wrong current passwords (this stack's limit per account): then 429.
        limited = await io.api("PUT", path, json={**guess, "current_password": PASSWORD})
        assert limited.status == 429 and int(limited.headers["Retry-After"]) > 0
    async with Person(stack.url, address=_address()) as again:
        assert await again.sign_in(name, PASSWORD) == 303


async def test_an_invitation_sets_the_password_once(stack: Stack) -> None:
    admin = Client(stack.url, stack.admin_key)
    created = await admin.post("/v1/users", json={"name": _name("jo")})
    user_id = created.body["id"]
    invited = await admin.post(f"/v1/users/{user_id}/invitations", json={})
    assert invited.status == 201, invited.body
    url = invited.body["url"]
    assert url.startswith(f"{stack.url}/invitation#{user_id}.")
    token = url.partition("#")[2]
    async with Person(stack.url, address=_address()) as jo:
        status, _, _ = await jo.page("/invitation")
        assert status == 200
        fields = {"token": token, "password": PASSWORD}
        status, _, headers = await jo.form("/invitation", fields)
        assert status == 303 and headers["location"] == "/models"
        assert (await jo.api("GET", "/v1/me")).body["user_id"] == user_id
        status, text, _ = await jo.form("/invitation", fields)
        assert status == 400 and "unknown, used or expired" in text
    # Only an admin invites.
    async with Person(stack.url, address=_address()) as jo:
        await jo.sign_in(created.body["name"], PASSWORD)
        refused = await jo.api("POST", f"/v1/users/{user_id}/invitations", json={})
        assert refused.status == 403


async def test_sign_up_is_off_by_default(stack: Stack) -> None:
    async with Person(stack.url) as someone:
        status, _, _ = await someone.page("/sign-up")
        assert status == 404
        status, _, _ = await someone.form("/sign-up", {"name": "x", "password": PASSWORD}, token="")
        assert status == 404


async def test_another_users_model_page_is_not_found(stack: Stack) -> None:
    owner, other = _name("ka"), _name("lu")
    await create_user(stack.url, stack.admin_key, owner, PASSWORD)
    await create_user(stack.url, stack.admin_key, other, PASSWORD)
    async with (
        Person(stack.url, address=_address()) as ka,
        Person(stack.url, address=_address()) as lu,
    ):
        await ka.sign_in(owner, PASSWORD)
        await lu.sign_in(other, PASSWORD)
        made = await ka.api(
            "POST",
            "/v1/models",
            json={"name": _name("secret"), "description": "<b>bold</b><script>x()</script>"},
        )
        model = made.body
        assert made.status == 201, model
        await ka.api("GET", f"/v1/models/{model['id']}?after_seq={model['seq']}")
        status, text, _ = await ka.page(f"/models/{model['id']}")
        assert status == 200
        assert "&lt;b&gt;bold&lt;/b&gt;&lt;script&gt;" in text and "<script>x()" not in text
        status, text, _ = await lu.page(f"/models/{model['id']}")
        assert status == 404 and "secret" not in text
        for path in ("/versions/ver_unknown", "/versions/ver_unknown/run", "/admin"):
            status, _, _ = await lu.page(path)
            assert status == 404, path


async def test_no_password_is_in_the_event_log(stack: Stack) -> None:
    name, secret = _name("mo"), f"never-logged-{uuid.uuid4().hex}"
    user_id = await create_user(stack.url, stack.admin_key, name, secret)
    admin = Client(stack.url, stack.admin_key)
    changed = f"also-never-logged-{uuid.uuid4().hex}"
    await admin.request("PUT", f"/v1/users/{user_id}/password", json={"password": changed})
    nc = await nats.connect(stack.env["CLINAI_NATS_URL"])
    try:
        js = nc.jetstream()
        info = await js.stream_info(stack.settings.stream_name)
        raw = b"".join(
            [
                (await js.get_msg(stack.settings.stream_name, seq)).data or b""
                for seq in range(info.state.first_seq, info.state.last_seq + 1)
            ]
        )
    finally:
        await nc.drain()
    assert secret.encode() not in raw and changed.encode() not in raw
    assert raw.count(b"$argon2id$") >= 2  # the hashes are there, in the user's events


async def test_a_session_ends_after_its_idle_time(stack: Stack) -> None:
    name = _name("ned")
    user_id = await create_user(stack.url, stack.admin_key, name, PASSWORD)
    async with (
        Person(stack.url, address=_address()) as idle,
        Person(stack.url, address=_address()) as busy,
    ):
        assert await idle.sign_in(name, PASSWORD) == 303
        assert await busy.sign_in(name, PASSWORD) == 303
        # The idle one was last seen 8 hours and a minute ago (CLINAI_SESSION_IDLE_S).
        conn = await asyncpg.connect(stack.env["CLINAI_DATABASE_URL"])
        try:
            moved = await conn.execute(
                "UPDATE clinai_api.sessions SET last_seen_at = now() - interval '8 h 1 min' "
                "WHERE user_id = $1 AND id = (SELECT min(id) FROM clinai_api.sessions "
                "WHERE user_id = $1)",
                user_id,
            )
            assert moved == "UPDATE 1"
            stored = await conn.fetch(
                "SELECT token_hash FROM clinai_api.sessions WHERE user_id = $1", user_id
            )
        finally:
            await conn.close()
        answers = sorted([(await p.api("GET", "/v1/me")).status for p in (idle, busy)])
        assert answers == [200, 401]
        # Only the tokens' SHA-256 is stored, never a cookie's value.
        cookies = [
            c.value for p in (idle, busy) for c in p.http.cookie_jar if c.key == "clinai_session"
        ]
        assert {r["token_hash"] for r in stored} == {
            hashlib.sha256(c.encode()).hexdigest() for c in cookies
        }


async def test_a_bad_form_is_a_4xx(stack: Stack) -> None:
    async with Person(stack.url, address=_address()) as someone:
        await someone.page("/sign-in")
        form = aiohttp.FormData()
        form.add_field("name", "x")
        form.add_field("file", b"data", filename="a.bin")
        async with someone.http.post(f"{stack.url}/sign-in", data=form) as resp:
            assert resp.status == 400, await resp.text()
        async with someone.http.post(f"{stack.url}/sign-in", json={"name": "x"}) as resp:
            assert resp.status == 403  # no CSRF token in it
            assert resp.content_type == "application/problem+json"


async def test_sign_in_with_the_e_mail_in_any_case(stack: Stack) -> None:
    name = _name("ola")
    email = f"{name}@Example.org"
    await create_user(stack.url, stack.admin_key, name, PASSWORD, email=email)
    for typed in (email, email.upper(), name):
        async with Person(stack.url, address=_address()) as ola:
            assert await ola.sign_in(typed, PASSWORD) == 303, typed
            assert (await ola.api("GET", "/v1/me")).status == 200
    listed = await Client(stack.url, stack.admin_key).get("/v1/users")
    assert [u["email"] for u in listed.body["items"] if u["name"] == name] == [email]
    # A wrong password for a known e-mail and an unknown e-mail: the same answer.
    answers = []
    for who in (email, f"nobody-{uuid.uuid4().hex[:6]}@example.org"):
        async with Person(stack.url, address=_address()) as someone:
            status, text, _ = await someone.form(
                "/sign-in", {"name": who, "password": "wrong!!!!!"}
            )
            answers.append((status, re.findall(r'<p class="error"[^>]*>([^<]*)</p>', text)))
    assert answers[0] == answers[1] == (401, ["The user name, e-mail or password is wrong."])


async def test_an_e_mail_names_one_user(stack: Stack) -> None:
    admin = Client(stack.url, stack.admin_key)
    name, other = _name("pia"), _name("quy")
    email = f"{name}@example.org"
    await create_user(stack.url, stack.admin_key, name, PASSWORD, email=email)
    body = {"name": other, "password": PASSWORD, "email": email.upper()}  # in any case
    reply = await admin.post("/v1/users", json=body)
    assert reply.status == 409, reply.body
    assert "already names a user" in reply.body["detail"]
    bad = await admin.post("/v1/users", json={"name": other, "email": "not an address"})
    assert bad.status == 422 and "email" in bad.body["detail"]
    # A new user's name may not be someone's e-mail either.
    clash = await admin.post("/v1/users", json={"name": email, "password": PASSWORD})
    assert clash.status == 409, clash.body


async def test_failures_by_name_and_by_e_mail_count_as_one_account(stack: Stack) -> None:
    """This stack allows 3 failures per account: name, e-mail, name; then the e-mail
    with the right password is refused too."""
    name = _name("rui")
    email = f"{name}@example.org"
    await create_user(stack.url, stack.admin_key, name, PASSWORD, email=email)
    for typed in (name, email, name):
        async with Person(stack.url, address=_address()) as attacker:
            assert await attacker.sign_in(typed, "not the password") == 401
    for typed in (email, name.upper()):
        async with Person(stack.url, address=_address()) as late:
            status, _, headers = await late.form("/sign-in", {"name": typed, "password": PASSWORD})
            assert status == 429 and int(headers["retry-after"]) > 0, typed
