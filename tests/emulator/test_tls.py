"""The emulator over https with its own CA: what fal_client (https/wss only) needs to reach it."""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import replace
from pathlib import Path

import httpx2
import pytest
from cryptography import x509

from fal_mcp.emulator.server import EmulatorServer, client_env
from fal_mcp.emulator.tls import ensure_tls
from tests.emulator.conftest import AUTH
from tests.emulators import FAST

pytestmark = pytest.mark.anyio


def test_certificates_are_created_once_and_cover_loopback(tmp_path: Path) -> None:
    files = ensure_tls(tmp_path / "tls")
    first = {p: p.read_bytes() for p in (files.ca_cert, files.ca_key, files.cert, files.key)}
    assert ensure_tls(tmp_path / "tls") == files
    assert {p: p.read_bytes() for p in first} == first  # reused, not regenerated
    assert files.key.stat().st_mode & 0o077 == 0
    cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    assert cert.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


async def test_https_with_the_generated_ca(tmp_path: Path) -> None:
    with EmulatorServer(replace(FAST), tls_dir=tmp_path / "tls") as server:
        assert server.base_url.startswith("https://127.0.0.1:")
        assert server.tls is not None
        verify = ssl.create_default_context(cafile=str(server.tls.ca_cert))
        async with httpx2.AsyncClient(base_url=server.base_url, headers=AUTH, verify=verify) as http:
            response = await http.post("/queue/emulator/strict", json={"prompt": "secure"})
            assert response.status_code == 200
            assert response.json()["status_url"].startswith(f"{server.base_url}/queue/emulator/strict/requests/")
            assert (await http.post("/run/emulator/strict", json={"prompt": "secure"})).status_code == 200
        async with httpx2.AsyncClient(base_url=server.base_url, verify=ssl.create_default_context()) as untrusting:
            with pytest.raises(httpx2.ConnectError):
                await untrusting.get("/queue/emulator/strict/requests/x/status")
        env = client_env(server.base_url, server.tls)
        host = server.base_url.removeprefix("https://")
        assert env["FAL_QUEUE_RUN_HOST"] == f"{host}/queue" and env["FAL_RUN_HOST"] == f"{host}/run"
        assert env["FAL_MCP_BASE_URL"] == server.base_url and env["SSL_CERT_FILE"] == str(server.tls.ca_cert)
