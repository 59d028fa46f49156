"""The development issuer and the token verifier without a stack: keys private on disk, tokens it
mints verified with their scopes, settings that would let a token through refused at start."""

from __future__ import annotations

import asyncio
import os
import stat
import threading

import pytest
from pydantic import ValidationError

from tally.auth import devissuer
from tally.auth.tokens import AuthError, TokenVerifier
from tally.settings import Settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(_env_file=None, state_dir=tmp_path / "state", api_port=18123)


def test_the_signing_key_is_created_once_0600_in_a_0700_folder_even_by_racing_processes(settings):
    keys = []
    threads = [threading.Thread(target=lambda: keys.append(devissuer.signing_key(settings).kid)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert stat.S_IMODE(settings.auth_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((settings.auth_dir / devissuer.KEY_FILE).stat().st_mode) == 0o600
    assert os.listdir(settings.auth_dir) == [devissuer.KEY_FILE]  # no temporary file left behind
    assert "d" not in devissuer.jwks(settings)["keys"][0]  # the served set holds the public half only


def test_a_minted_token_verifies_with_its_scopes_and_another_stacks_does_not(settings, tmp_path):
    token = devissuer.mint(settings, ["events:read"], ttl_s=60, subject="ana")
    principal = asyncio.run(TokenVerifier(settings).verify(token))
    assert principal.subject == "ana" and principal.scopes == {"events:read"}
    other = Settings(_env_file=None, state_dir=tmp_path / "other", api_port=18123)
    with pytest.raises(AuthError) as refused:
        asyncio.run(TokenVerifier(other).verify(token))
    assert refused.value.status == 401 and "unknown kid" in refused.value.description
    with pytest.raises(ValueError, match="scope: unknown events:delete"):
        devissuer.mint(settings, ["events:delete"])


def test_bearer_headers_are_empty_with_auth_off(settings):
    assert devissuer.bearer(settings)["Authorization"].startswith("Bearer ey")
    assert devissuer.bearer(settings.model_copy(update={"auth": False})) == {}


@pytest.mark.parametrize("algorithms", ["none", "HS256", "ES256,HS512"])
def test_settings_refuse_algorithms_that_are_not_public_key_ones(algorithms, monkeypatch):
    monkeypatch.setenv("TALLY_AUTH_ALGORITHMS", algorithms)
    with pytest.raises(ValidationError, match="auth_algorithms"):
        Settings(_env_file=None)
    monkeypatch.setenv("TALLY_AUTH_ALGORITHMS", "ES256,EdDSA")
    assert Settings(_env_file=None).auth_algorithms == ["ES256", "EdDSA"]
