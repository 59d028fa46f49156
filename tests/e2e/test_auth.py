"""Who may call the API, against the running stack's API: bad tokens of every kind refused with 401,
missing scopes with 403, API keys created, used and revoked through the CLI, and `tally token`."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from joserfc import jws, jwt
from joserfc.jwk import ECKey, RSAKey

from tally.auth import devissuer
from tally.stack import runner
from tests.e2e.conftest import wait_for

TALLY = Path(sys.executable).parent / "tally"
NOW = int(time.time())


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims_of(settings, **changes) -> dict:
    now = int(time.time())
    base = {
        "iss": devissuer.issuer(settings),
        "sub": "audit",
        "aud": settings.auth_audience,
        "iat": now,
        "exp": now + 600,
        "scope": " ".join(devissuer.SCOPES),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(settings, key=None, header: dict | None = None, **changes) -> str:
    key = key or devissuer.signing_key(settings)
    return jwt.encode(header or {"alg": "ES256", "kid": key.kid}, claims_of(settings, **changes), key)


def tamper(token: str, part: int, edit) -> str:
    parts = token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(parts[part] + "=" * (-len(parts[part]) % 4)))
    parts[part] = b64(json.dumps(edit(decoded)).encode())
    return ".".join(parts)


def hs256(secret: bytes, header: dict, claims: dict) -> str:
    # By hand: joserfc itself refuses to use a public key as an HMAC secret.
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def bad_tokens(settings) -> dict[str, str]:
    """Each a token the API must refuse (401), by what is wrong with it."""
    trusted = devissuer.signing_key(settings)
    stranger = ECKey.generate_key("P-256", auto_kid=True)
    good = signed(settings)
    public_pem = trusted.as_pem(private=False)
    return {
        "expired": signed(settings, iat=NOW - 7200, exp=NOW - 3600),
        "not yet valid (nbf)": signed(settings, nbf=NOW + 3600),
        "issued in the future (iat)": signed(settings, iat=NOW + 3600, exp=NOW + 7200),
        "wrong issuer": signed(settings, iss="https://evil.example"),
        "wrong audience": signed(settings, aud="someone-else"),
        "no exp": signed(settings, exp=None),
        "no iat": signed(settings, iat=None),
        "no iss": signed(settings, iss=None),
        "alg none": b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(claims_of(settings)).encode()) + ".",
        # The classic confusion: the published key used as an HMAC secret.
        "HS256 signed with the public key": hs256(
            public_pem, {"alg": "HS256", "kid": trusted.kid}, claims_of(settings)
        ),
        "unknown kid": signed(settings, key=stranger),
        "another key under the trusted kid": signed(
            settings, key=stranger, header={"alg": "ES256", "kid": trusted.kid}
        ),
        "RS256 by a key not published": signed(
            settings, key=RSAKey.generate_key(2048, auto_kid=True), header={"alg": "RS256", "kid": "rsa-1"}
        ),
        "tampered payload (sub)": tamper(good, 1, lambda c: c | {"sub": "admin"}),
        "tampered header (kid)": tamper(good, 0, lambda h: h | {"kid": "x"}),
        "tampered header (extra member)": tamper(good, 0, lambda h: h | {"jku": "https://evil.example/jwks"}),
        "oversized": signed(settings, pad="x" * 9000),
        "malformed base64": "eyJhbGciOiJFUzI1NiJ9.!!!not-base64!!!.c2ln",
        "not a JWT at all": "hello",
        "signature stripped": good.rsplit(".", 1)[0] + ".",
    }


@pytest.fixture(scope="module")
def anon(stack):
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.api_port}", timeout=30) as client:
        yield client


def test_every_bad_token_is_refused_with_401_and_a_bearer_challenge(stack, anon, api):
    table = []
    for case, token in bad_tokens(stack).items():
        r = anon.get("/api/metrics", headers={"Authorization": f"Bearer {token}"})
        body = r.json()
        table.append((case, r.status_code, body.get("error"), body.get("detail")))
        assert r.status_code == 401, (case, r.text)
        assert r.headers["www-authenticate"].startswith('Bearer realm="tally", error="invalid_token"'), case
        assert body["error"] == "invalid_token" and body["detail"], case
    print("\n" + "\n".join(f"{c:<40} {s} {e}: {d}" for c, s, e, d in table))
    assert api.get("/api/metrics").status_code == 200  # and a good one still passes


def test_no_credentials_get_401_and_a_scope_missing_gets_403_naming_it(stack, anon):
    r = anon.post("/api/events", json=[])
    assert r.status_code == 401 and r.json()["error"] == "missing_token"
    assert r.headers["www-authenticate"] == 'Bearer realm="tally", scope="events:write"'
    r = anon.get("/api/metrics", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_request"
    reader = {"Authorization": f"Bearer {devissuer.mint(stack, ['events:read'])}"}
    r = anon.post("/api/events", json=[], headers=reader)
    assert r.status_code == 403 and r.json()["error"] == "insufficient_scope" and r.json()["scope"] == "events:write"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    writer = {"Authorization": f"Bearer {devissuer.mint(stack, ['events:write'])}"}
    assert anon.get("/api/metrics", headers=writer).status_code == 403
    assert anon.get("/api/ops/panels", headers=reader).status_code == 403  # operations need tally:admin
    assert anon.post("/api/events", json=[], headers=writer).status_code == 400  # through: an empty batch
    # Open: liveness, readiness, the docs, sign-in, and /metrics from loopback.
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs", "/metrics", "/auth/dev/jwks.json"):
        assert anon.get(path).status_code == 200, path


def test_a_browser_opening_a_protected_page_is_sent_to_sign_in(anon):
    r = anon.get("/quality/", headers={"Accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"] == "/auth/login?next=%2Fquality%2F"


def tally(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(TALLY), *args], capture_output=True, text=True, timeout=60)


def test_tally_token_prints_one_line_that_the_api_takes_narrowed_by_scope_and_ttl(anon):
    out = tally("token")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("\n") == 1
    token = out.stdout.strip()
    assert anon.get("/api/metrics", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    narrow = tally("token", "--scope", "events:write", "--ttl", "2").stdout.strip()
    claims = jws.extract_compact(narrow.encode()).payload
    assert json.loads(claims)["scope"] == "events:write"
    assert anon.get("/api/metrics", headers={"Authorization": f"Bearer {narrow}"}).status_code == 403
    assert json.loads(claims)["exp"] - json.loads(claims)["iat"] == 2
    bad = tally("token", "--scope", "everything")
    assert bad.returncode == 2 and "unknown everything" in bad.stderr


def test_api_keys_are_created_once_used_two_ways_listed_without_secret_and_revoked(stack, anon):
    made = tally("apikey", "create", "--name", "audit-client", "--scope", "events:read")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = key.split("_")[1]
    assert anon.get("/api/metrics", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert anon.get("/api/metrics", headers={"X-API-Key": key}).status_code == 200
    r = anon.post("/api/events", json=[], headers={"X-API-Key": key})
    assert r.status_code == 403 and r.json()["scope"] == "events:write"
    wrong = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    assert anon.get("/api/metrics", headers={"X-API-Key": wrong}).status_code == 401
    listed = tally("apikey", "list").stdout
    assert key_id in listed and "audit-client" in listed and key.split("_")[2] not in listed
    revoked = tally("apikey", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    t = wait_for(
        lambda: anon.get("/api/metrics", headers={"X-API-Key": key}).status_code == 401,
        stack.auth_key_cache_s + 5,
        "the revoked key to be refused",
    )
    print(f"\nrevoked key refused {t:.1f} s after `tally apikey revoke`")
    assert "revoked" in tally("apikey", "list").stdout
    assert tally("apikey", "revoke", key_id).returncode == 1  # not twice


def test_the_signing_key_and_its_folder_are_private(stack):
    folder = stack.auth_dir
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / devissuer.KEY_FILE).stat().st_mode) == 0o600


def test_no_token_or_key_reaches_the_api_log(stack, api):
    token = api.headers["authorization"].split()[1]
    api.get("/api/aggregate", params={"from": "bad"})  # a 422, logged or not
    (svc,) = runner.select(stack, ["api"])
    log = svc.log_file.read_text(errors="replace")
    assert token not in log and token.split(".")[2] not in log


def test_browser_sign_in_binds_the_code_to_pkce_and_never_redirects_off_site(stack, anon):
    anon.cookies.clear()
    r = anon.get("/auth/login", params={"next": "//evil.example/x"})
    assert r.status_code == 303 and "code_challenge_method=S256" in r.headers["location"]
    authorize = httpx.URL(r.headers["location"])
    assert r.cookies["tally_signin"]  # the state and the verifier, kept in the browser (the jar here)
    r = anon.get(authorize.path, params=authorize.params)  # from loopback: approved at once
    assert r.status_code == 303
    back = httpx.URL(r.headers["location"])
    assert back.path == "/auth/callback" and back.params["state"] == authorize.params["state"]
    form = {
        "grant_type": "authorization_code",
        "code": back.params["code"],
        "redirect_uri": authorize.params["redirect_uri"],
        "client_id": authorize.params["client_id"],
        "code_verifier": "x" * 43,  # not the one the challenge was made from
    }
    r = anon.post("/auth/dev/token", data=form)
    assert (
        r.status_code == 400
        and r.json()["error"] == "invalid_grant"
        and "code_verifier" in r.json()["error_description"]
    )
    verifier = anon.cookies["tally_signin"].split(".")[1]  # what the callback will send
    done = anon.get(back.path, params=back.params)
    assert done.status_code == 303 and done.headers["location"] == "/"  # not //evil.example: off-site
    # The callback redeemed the code; the same code with the right verifier is refused after that.
    r = anon.post("/auth/dev/token", data={**form, "code_verifier": verifier})
    assert r.status_code == 400 and r.json()["error_description"] == "the code was used already", r.status_code
    session = done.headers["set-cookie"]
    assert session.startswith("tally_session=") and "HttpOnly" in session and "SameSite=strict" in session
    assert anon.get("/api/metrics").status_code == 200  # by the cookie alone
    # The cookie counts for reading only: a page elsewhere could make a browser POST with it.
    r = anon.post("/api/events", json=[])
    assert r.status_code == 401 and r.json()["error"] == "missing_token"
    anon.cookies.clear()


def test_the_development_issuer_signs_in_no_browser_from_elsewhere(stack):
    from fastapi.testclient import TestClient

    from tally.api.app import create_app

    with TestClient(create_app(stack)) as remote:  # its requests come from "testclient", not loopback
        params = {"response_type": "code", "code_challenge_method": "S256", "code_challenge": "a" * 43}
        params["redirect_uri"] = f"http://127.0.0.1:{stack.api_port}/auth/callback"
        r = remote.get("/auth/dev/authorize", params=params, follow_redirects=False)
        assert r.status_code == 403 and "not on this machine" in r.text
