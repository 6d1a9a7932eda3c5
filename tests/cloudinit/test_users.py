"""`users:` creates accounts under the machine root as coreos-cloudinit's useradd did."""

from __future__ import annotations

import os
from pathlib import Path

from corral.cloudinit import (
    BASE_ACCOUNTS,
    ChangeKind,
    User,
    apply_users,
    apply_users_to_root,
    parse,
)

TODAY = 20000


def _row(text: str, name: str) -> list[str]:
    for line in text.splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"{name} not in {text!r}")


def test_useradd_defaults_user_group_and_shadow() -> None:
    acc, (o,) = apply_users((User(name="alice", passwd="$6$salt$hash"),), BASE_ACCOUNTS, TODAY)
    assert (o.kind, o.uid, o.gid, o.home) == ("created", 1000, 1000, "home/alice")
    assert _row(acc.passwd, "alice") == [
        "alice",
        "x",
        "1000",
        "1000",
        "",
        "/home/alice",
        "/bin/bash",
    ]
    assert _row(acc.group, "alice") == ["alice", "x", "1000", ""]
    assert _row(acc.shadow, "alice") == [
        "alice",
        "$6$salt$hash",
        "20000",
        "0",
        "99999",
        "7",
        "",
        "",
        "",
    ]
    assert _row(acc.gshadow, "alice") == ["alice", "!", "", ""]
    # The base accounts are kept as they were.
    assert acc.passwd.startswith(BASE_ACCOUNTS.passwd)


def test_every_useradd_option() -> None:
    users = (
        User(
            name="bob",
            gecos="Bob B. Builder",
            homedir="/srv/bob/",
            no_create_home=True,
            primary_group="users",
            groups=("sudo", "docker"),
            shell="/bin/sh",
        ),
        User(name="svc", system=True, no_user_group=True),
        User(name="carol"),  # uid after the highest regular one
    )
    acc, outcomes = apply_users(users, BASE_ACCOUNTS, TODAY)
    assert [o.kind for o in outcomes] == ["created"] * 3
    # gecos goes through Go's %q: the quotes are stored, as the original stored them.
    assert _row(acc.passwd, "bob") == [
        "bob",
        "x",
        "1000",
        "100",
        '"Bob B. Builder"',
        "/srv/bob",
        "/bin/sh",
    ]
    assert outcomes[0].home == ""  # no_create_home
    assert "bob" not in [r.split(":")[0] for r in acc.group.splitlines()]
    assert _row(acc.group, "sudo")[3] == "core,bob"
    assert _row(acc.group, "docker")[3] == "core,bob"
    assert _row(acc.gshadow, "sudo")[3] == "core,bob"
    assert _row(acc.shadow, "bob")[1] == "*"  # no passwd: locked, as useradd --password '*'
    assert _row(acc.passwd, "svc")[2:4] == ["999", "100"]  # system ids from the top down
    assert _row(acc.passwd, "carol")[2:4] == ["1001", "1001"]


def test_failures_are_useradds_messages_and_change_nothing() -> None:
    cases = {
        User(name="dave", groups=("nope",)): "useradd: group 'nope' does not exist",
        User(name="dave", primary_group="nope"): "useradd: group 'nope' does not exist",
        User(name="Bad Name"): "useradd: invalid user name 'Bad Name'",
        User(name="dave", shell="/bin/a:b"): "useradd: invalid shell '/bin/a:b'",
        User(name="wheel"): "useradd: group wheel exists - if you want to add this user to "
        "that group, use -g.",
    }
    for user, message in cases.items():
        acc, (o,) = apply_users((user,), BASE_ACCOUNTS, TODAY)
        assert (o.kind, o.message) == ("failed", message)
        assert acc == BASE_ACCOUNTS
    _, (o,) = apply_users((User(),), BASE_ACCOUNTS, TODAY)
    assert o.kind == "skipped"


def test_existing_user_only_gets_its_password() -> None:
    acc, _ = apply_users((User(name="alice", passwd="h1"),), BASE_ACCOUNTS, TODAY)
    again, (o,) = apply_users((User(name="alice", passwd="h1", shell="/bin/zsh"),), acc, TODAY + 1)
    assert o.kind == "exists" and again == acc  # creation-time fields are ignored
    changed, (o,) = apply_users((User(name="alice", passwd="h2"),), acc, TODAY + 1)
    assert o.kind == "password"
    assert _row(changed.shadow, "alice")[1:3] == ["h2", str(TODAY + 1)]
    assert changed.passwd == acc.passwd
    core, (o,) = apply_users((User(name="core", passwd="h3"),), BASE_ACCOUNTS, TODAY)
    assert o.kind == "password" and _row(core.shadow, "core")[1] == "h3"


CONFIG = b"""#cloud-config
users:
  - name: alice
    passwd: $6$rounds=4096$salt$hash
    gecos: Alice
    groups: [sudo, docker]
    ssh_authorized_keys: ["ssh-ed25519 AAAAalice"]
  - name: svc
    system: true
    no_create_home: true
"""


def test_under_a_root_idempotent_and_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "m"
    (root / "etc/skel").mkdir(parents=True)
    (root / "etc/skel/.profile").write_text("# skel\n")
    outside = sorted(os.listdir(tmp_path))
    users = parse(CONFIG).users
    changes, outcomes = apply_users_to_root(root, users, TODAY)
    assert [o.kind for o in outcomes] == ["created", "created"]
    assert {c.path: c.kind for c in changes} == {
        "etc/passwd": ChangeKind.CREATED,
        "etc/group": ChangeKind.CREATED,
        "etc/shadow": ChangeKind.CREATED,
        "etc/gshadow": ChangeKind.CREATED,
        "home/alice": ChangeKind.CREATED,
    }
    passwd = (root / "etc/passwd").read_text()
    assert 'alice:x:1000:1000:"Alice":/home/alice:/bin/bash\n' in passwd
    assert "svc:x:999:999::/home/svc:/bin/bash\n" in passwd
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640
    home = root / "home/alice"
    assert home.stat().st_mode & 0o777 == 0o755
    assert (home / ".profile").read_text() == "# skel\n"  # the skeleton was copied
    if os.geteuid() == 0:
        assert (home.stat().st_uid, home.stat().st_gid) == (1000, 1000)
    assert not (root / "home/svc").exists()
    assert sorted(os.listdir(tmp_path)) == outside

    # Re-applying changes nothing and says so.
    changes, outcomes = apply_users_to_root(root, users, TODAY + 3)
    assert {c.kind for c in changes} == {ChangeKind.UNCHANGED}
    assert [o.kind for o in outcomes] == ["exists", "exists"]

    # A new password is the one change.
    users2 = parse(CONFIG.replace(b"$salt$hash", b"$salt$other")).users
    changes, outcomes = apply_users_to_root(root, users2, TODAY + 3)
    assert [str(c) for c in changes if c.kind is not ChangeKind.UNCHANGED] == [
        "changed etc/shadow (content)"
    ]
    assert outcomes[0].message == "changed user alice (password)"


def test_a_homedir_cannot_escape_the_root(tmp_path: Path) -> None:
    root = tmp_path / "m"
    root.mkdir()
    (root / "home").symlink_to(tmp_path)  # planted link: the home would land outside
    users = (User(name="eve", homedir="/home/eve"),)
    apply_users_to_root(root, users, TODAY)
    assert not (tmp_path / "eve").exists()
    users = (User(name="mallory", homedir="/../../mallory"),)
    apply_users_to_root(root, users, TODAY)
    assert not (tmp_path.parent / "mallory").exists()
