"""imapclient through the proxy with config/policies/readonly.lua: the mailbox opens read-only,
every change is refused with NO [NOPERM], and Dovecot's state (checked directly) is unchanged."""

import imaplib

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from conftest import HOST, ROOT
import imapwire

DOVECOT_USERS = 2


@pytest.fixture(scope="module")
def readonly_proxy(start_proxy):
    return start_proxy(extra_args=["--policy", str(ROOT / "config" / "policies" / "readonly.lua")])


def client(port, cert, user, pw):
    c = IMAPClient(HOST, port=port, ssl=True, ssl_context=imapwire.tls_context(cert), timeout=30)
    c.login(user, pw)
    return c


def snapshot(dovecot, user, pw):
    c = client(dovecot.imaps_port, dovecot.ca_file, user, pw)
    boxes = sorted(name for _, _, name in c.list_folders())
    counts = {b: c.folder_status(b, ["MESSAGES"])[b"MESSAGES"] for b in boxes}
    c.select_folder("INBOX", readonly=True)
    flags = c.get_flags(c.search("ALL"))
    c.logout()
    return boxes, counts, flags


def test_imapclient_readonly(readonly_proxy, dovecot):
    user, pw = dovecot.take_user()
    before = snapshot(dovecot, user, pw)
    c = client(readonly_proxy.tls_port, readonly_proxy.cert, user, pw)
    # SELECT comes back READ-ONLY (sent as EXAMINE): imaplib says so for a read-write select.
    with pytest.raises(imaplib.IMAP4.readonly):
        c.select_folder("INBOX")
    # imaplib holds on to the read-write expectation: open it the way it expects now.
    c.select_folder("INBOX", readonly=True)
    uids = c.search("ALL")
    assert uids
    # Reading works and, read-only, marks nothing as seen.
    assert c.fetch(uids[:2], ["BODY[]"])
    attempts = [
        lambda: c.add_flags(uids, [b"\\Deleted"]),
        lambda: c.set_flags(uids[:1], [b"\\Flagged"]),
        lambda: c.expunge(),
        lambda: c.copy(uids, "Trash"),
        lambda: c.move(uids[:1], "Trash"),
        lambda: c.append("INBOX", b"Subject: x\r\n\r\nbody\r\n"),
        lambda: c.create_folder("Made"),
        lambda: c.delete_folder("Trash"),
        lambda: c.rename_folder("Trash", "Bin"),
    ]
    for attempt in attempts:
        with pytest.raises(IMAPClientError) as refused:
            attempt()
        assert "NOPERM" in str(refused.value) or "read-only" in str(refused.value), refused.value
    c.noop()
    c.logout()
    assert snapshot(dovecot, user, pw) == before
