"""Who may use the web console, and how it refuses everyone else (real Redis; no worker needed)."""

from __future__ import annotations

import base64

import pytest

from interactive_celery import ConfigurationError
from interactive_celery.web.auth import TOKENS_FILE_ENV, Auth
from interactive_celery.web.passwords import hash_password, verify_password
from interactive_celery.web.server import build_console
from tests.conftest import make_app
from tests.web_support import ALICE_TOKEN, BOB_TOKEN, CAROL_PASSWORD, WEB_CONF, Browser, WebCase, xsrf_from


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class TestAuthentication(WebCase):
    def test_api_without_credentials_is_401(self):
        """No Authorization header and no session: 401 with a JSON error and a WWW-Authenticate challenge."""
        response = self.fetch("/api/incidents", raise_error=False)
        assert response.code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert b'"unauthorized"' in response.body

    def test_wrong_bearer_token_is_401(self):
        """A token that is not configured is refused, for reads and for decisions."""
        response, body = self.api_get("/api/me", token="not-a-configured-token-at-all")
        assert response.code == 401 and body["error"]["code"] == "unauthorized"
        response, _ = self.api_post("/api/incidents/whatever1/retry", token=ALICE_TOKEN[:-1] + "X")
        assert response.code == 401

    def test_bearer_token_names_the_operator(self):
        """The operator comes from the token: alice's token is alice, bob's is bob with his groups."""
        _, me = self.api_get("/api/me")
        assert me["operator"] == "alice" and me["via"] == "bearer"
        _, me = self.api_get("/api/me", token=BOB_TOKEN)
        assert me["operator"] == "bob" and me["groups"] == ["ops"]

    def test_basic_auth_checks_the_hashed_password(self):
        """Basic auth works with the right password only; an unknown user is refused the same way."""
        assert self.fetch("/api/me", headers=basic("carol", CAROL_PASSWORD)).code == 200
        assert self.fetch("/api/me", headers=basic("carol", "wrong"), raise_error=False).code == 401
        assert self.fetch("/api/me", headers=basic("mallory", CAROL_PASSWORD), raise_error=False).code == 401

    def test_page_without_session_goes_to_login(self):
        """A page asked for without a session redirects to the login form, keeping where it was going."""
        response = self.fetch("/operators", follow_redirects=False, raise_error=False)
        assert response.code == 302
        assert response.headers["Location"] == "/login?next=%2Foperators"

    def test_cookie_session_post_without_csrf_token_is_403(self):
        """Signed in with a cookie, a decision POST without the CSRF token is refused before it is read;
        the same POST with the token gets through to the operator API (which knows no such incident)."""
        browser = Browser(self)
        assert browser.login().code == 303
        form = {"confirm": "yes", "reason": "forged"}
        response = browser.fetch("/incident/0000000000/retry", method="POST", form=form)
        assert response.code == 403
        assert b"_xsrf" in response.body
        token = xsrf_from(browser.fetch("/").body.decode())
        response = browser.fetch("/incident/0000000000/retry", method="POST", form={**form, "_xsrf": token})
        assert response.code == 404

    def test_basic_auth_post_needs_csrf_but_bearer_does_not(self):
        """Browsers resend basic credentials cross-site, so basic POSTs need the CSRF token; a bearer
        call cannot be forged by a browser and is exempt."""
        response = self.fetch("/api/incidents/0000000000/retry", method="POST", body="{}", raise_error=False,
                              headers={**basic("carol", CAROL_PASSWORD), "Content-Type": "application/json"})
        assert response.code == 403
        response, body = self.api_post("/api/incidents/0000000000/retry")
        assert response.code == 404 and body["error"]["code"] == "unknown_id"

    def test_decisions_are_post_only(self):
        """GET on a decision URL changes nothing and is not allowed."""
        response = self.fetch("/api/incidents/0000000000/retry", headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
                              raise_error=False)
        assert response.code == 405

    def test_login_form_rejects_wrong_password_and_foreign_next(self):
        """A wrong password re-shows the form with 401 and sets no session; after a good login the
        redirect stays on this site even when ``next`` points elsewhere."""
        browser = Browser(self)
        page = browser.fetch("/login")
        response = browser.fetch("/login", method="POST", form={
            "_xsrf": xsrf_from(page.body.decode()), "username": "carol", "password": "nope"})
        assert response.code == 401 and "interactive_session" not in browser.cookies
        response = browser.fetch("/login", method="POST", form={
            "_xsrf": xsrf_from(page.body.decode()), "username": "carol", "password": CAROL_PASSWORD,
            "next": "//evil.example/"})
        assert response.code == 303 and response.headers["Location"] == "/"
        assert browser.fetch("/api/me").code == 200

    def test_login_with_an_api_token(self):
        """The login form also takes an API token; the session then acts as the token's operator."""
        browser = Browser(self)
        page = browser.fetch("/login")
        browser.fetch("/login", method="POST", form={"_xsrf": xsrf_from(page.body.decode()), "token": BOB_TOKEN})
        response = browser.fetch("/api/me")
        assert b'"operator":"bob"' in response.body.replace(b" ", b"") and b'"session"' in response.body

    def test_foreign_host_header_is_refused_on_loopback(self):
        """A loopback console answers only to localhost names, which defeats DNS rebinding."""
        response = self.fetch("/api/me", headers={"Host": "attacker.example", "Authorization": f"Bearer {ALICE_TOKEN}"},
                              raise_error=False)
        assert response.code == 421

    def test_pages_forbid_framing_and_inline_script(self):
        """Every page carries a CSP without inline script and refuses to be framed (clickjacking)."""
        response = self.fetch("/login")
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"


class TestNoAuth(WebCase):
    no_auth = True

    def test_no_auth_acts_as_the_local_user_and_still_needs_csrf(self):
        """Without auth the operator is the local user, and a browser POST still needs the CSRF token."""
        response = self.fetch("/api/me")
        assert response.code == 200 and b'"local"' in response.body
        response = self.fetch("/incident/0000000000/retry", method="POST", body="confirm=yes", raise_error=False)
        assert response.code == 403


def test_no_auth_is_refused_off_loopback(redis_url):
    """--no-auth on a reachable address is a configuration error, before anything listens."""
    app = make_app(redis_url, **WEB_CONF)
    with pytest.raises(ConfigurationError, match="loopback"):
        build_console(app, address="0.0.0.0", no_auth=True)
    app.close()


def test_console_without_credentials_is_refused(redis_url):
    """With no tokens or users configured and no --no-auth, the console will not start."""
    app = make_app(redis_url)
    with pytest.raises(ConfigurationError, match="needs credentials"):
        build_console(app, environ={})
    app.close()


def test_plain_text_passwords_and_short_tokens_are_refused():
    """Users need hashed passwords and tokens need some length; both are checked at startup."""
    with pytest.raises(ConfigurationError, match="not a password hash"):
        Auth(users={"dave": "hunter2"})
    with pytest.raises(ConfigurationError, match="at least 16"):
        Auth(tokens={"short": "dave"})
    with pytest.raises(ConfigurationError, match="not a valid operator"):
        Auth(tokens={"x" * 20: "team:ops"})


def test_tokens_file_from_environment(redis_url, tmp_path):
    """Tokens can live in a file named by $INTERACTIVE_WEB_TOKENS_FILE, one per line with groups."""
    path = tmp_path / "tokens"
    path.write_text("# token operator groups\nerin-token-0123456789abcdef erin ops,dba\n")
    app = make_app(redis_url)
    auth = Auth.from_app(app, environ={TOKENS_FILE_ENV: str(path)})
    identity = auth.bearer("erin-token-0123456789abcdef")
    assert identity is not None and identity.operator == "erin" and identity.groups == ("ops", "dba")
    assert auth.bearer("erin-token-0123456789abcdeX") is None
    app.close()


def test_password_hashes_verify_only_the_right_password():
    """scrypt hashes (ours) and PBKDF2 hashes both verify the right password and nothing else."""
    stored = hash_password("correct horse")
    assert stored.startswith("scrypt$") and verify_password("correct horse", stored)
    assert not verify_password("correct hors", stored)
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.pbkdf2_hmac("sha256", b"battery staple", salt, 1000)
    pbkdf2 = f"pbkdf2_sha256$1000${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    assert verify_password("battery staple", pbkdf2) and not verify_password("battery", pbkdf2)


def test_web_command_refuses_no_auth_off_loopback(redis_url):
    """`interactive web --no-auth --address 0.0.0.0` exits with status 2 and says why, listening nowhere."""
    from types import SimpleNamespace

    from click.testing import CliRunner

    from interactive_celery.web.command import web_command

    app = make_app(redis_url, **WEB_CONF)
    result = CliRunner().invoke(web_command, ["--no-auth", "--address", "0.0.0.0"], obj=SimpleNamespace(app=app))
    assert result.exit_code == 2
    assert "only allowed on a loopback address" in result.output
    app.close()


def test_sessions_end_when_the_password_changes():
    """A session cookie names the credential it was made with: a new password hash ends old sessions."""
    before = Auth(users={"carol": hash_password(CAROL_PASSWORD)})
    identity = before.password("carol", CAROL_PASSWORD, "session")
    cookie = before.session_for(identity)
    assert before.from_session(cookie).operator == "carol"
    after = Auth(users={"carol": hash_password("a new passphrase")})
    assert after.from_session(cookie) is None
