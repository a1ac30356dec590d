"""The client against a cluster with TLS and auth: CA, client certificate,
bearer token, the RAFTLOCK_* environment, and the errors when one is wrong."""

from __future__ import annotations

import pytest

import raftlock


def test_a_client_certificate_is_an_identity_allowed_everything(secure_cluster):
    c = secure_cluster
    with raftlock.Client(
        c.endpoints, ca=str(c.ca_cert), cert=str(c.client_cert), key=str(c.client_key), use_env=False
    ) as client:
        with client.session(ttl=5) as s, s.lock("tls/cert") as g:
            assert g.token > 0
            assert client.inspect("tls/cert").holders[0].lease_id == s.lease_id
        # Following the leader keeps TLS (replies name bare host:port).
        assert client.status().leader_addr in client.endpoints


def test_a_token_alone_is_its_identity_and_names_outside_its_rules_are_denied(secure_cluster):
    c = secure_cluster
    with raftlock.Client(c.endpoints, ca=str(c.ca_cert), token=c.token, use_env=False) as client:
        # "limited" may lock under its prefix only.
        with client.session(ttl=5) as s:
            with s.lock(c.token_prefix + "x") as g:
                assert g.token > 0
            with pytest.raises(raftlock.Denied) as e:
                s.lock("elsewhere/x", wait=0)
            assert e.value.missing and "elsewhere/x" in e.value.missing
            assert not e.value.may_have_been_applied
            assert not s.holds("elsewhere/x")


def test_the_cli_environment_variables_configure_the_client(secure_cluster, monkeypatch):
    c = secure_cluster
    monkeypatch.setenv("RAFTLOCK_ENDPOINTS", ",".join(c.endpoints))
    monkeypatch.setenv("RAFTLOCK_CA", str(c.ca_cert))
    monkeypatch.setenv("RAFTLOCK_CERT", str(c.client_cert))
    monkeypatch.setenv("RAFTLOCK_KEY", str(c.client_key))
    monkeypatch.delenv("RAFTLOCK_TOKEN", raising=False)
    with raftlock.Client() as client:
        assert client._tls and client.status().HasField("leader_id")
        with client.session(ttl=5) as s:
            s.lock("tls/env").release()


def test_no_identity_is_unauthenticated_and_a_wrong_ca_is_a_tls_error(secure_cluster, raftlock_certs, tmp_path):
    c = secure_cluster
    with raftlock.Client(c.endpoints, ca=str(c.ca_cert), use_env=False) as client:
        with pytest.raises(raftlock.Unauthenticated):
            client.session(ttl=5)
    with raftlock.Client(c.endpoints, ca=str(c.ca_cert), token="rlt_unknown", use_env=False) as client:
        with pytest.raises(raftlock.Unauthenticated):
            client.inspect("x")
    # A CA that did not sign the nodes' certificates.
    other = tmp_path / "other"
    other.mkdir()
    import subprocess

    subprocess.run(
        [str(secure_cluster.binary), "certs", "ca", "--dir", str(other)], check=True, capture_output=True
    )
    with raftlock.Client(c.endpoints, ca=str(other / "ca.crt"), token=c.token, use_env=False) as client:
        with pytest.raises(raftlock.TlsError):
            client.status()
    # Plaintext against TLS nodes.
    with raftlock.Client(c.endpoints, use_env=False, retry=raftlock.RetryPolicy.none()) as client:
        with pytest.raises(raftlock.Error) as e:
            client.status()
        assert not e.value.may_have_been_applied or isinstance(e.value, raftlock.TlsError), e.value
