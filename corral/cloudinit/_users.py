"""`users:` of a cloud-config: accounts created under a machine root, as coreos-cloudinit did.

coreos-cloudinit v1.13.0 (`coreos-cloudinit.go` Apply, `system/user.go`) ran, for each entry:
no `name` → skipped; the user exists → only `passwd` is applied (`chpasswd -e`), creation-time
fields ignored; else ``useradd --password <hash|*> [--comment %q(gecos)] [--home-dir D]
--create-home|--no-create-home [--gid G] [--groups a,b] [--no-user-group] [--system]
[--no-log-init] [--shell S] NAME``; then its `ssh_authorized_keys` (rendered by `render`).

`apply_users` is that `useradd`/`chpasswd` as a pure function over the text of `etc/passwd`,
`etc/group`, `etc/shadow` and `etc/gshadow` (shadow-utils' rules with CoreOS's defaults:
`UID_MIN` 1000, `UID_MAX` 60000, system ids counted down from 999 to 101, a user group
named like the user with the uid as gid when free, `GROUP=100` with `--no-user-group`,
`SHELL=/bin/bash`, home `/home/<name>`, mode 0755, `/etc/skel` copied); `today` (days since
the epoch, shadow's `lastchg`) comes in as data. The gecos is passed through Go's `%q`, so
it is stored with its quotes, as the original stored it. `apply_users_to_root` is the shell:
it reads and writes those files under the root (through `apply_to_root`, so only what
differs is written and reported), creates the homes, copies the skeleton, and gives the
homes and `.ssh` to their user when run as root. A root without `etc/passwd` starts from
CoreOS's base accounts (`root`, `core` and the groups `core` belonged to).

Unlike the original, which stopped applying the whole config at the first `useradd` failure,
a user that cannot be created is reported (with useradd's message) and the rest goes on.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from corral.cloudinit._apply import Change, ChangeKind, apply_to_root
from corral.cloudinit._config import User
from corral.cloudinit._gofmt import go_path_clean, go_quote
from corral.cloudinit._render import RenderedFile

__all__ = [
    "BASE_ACCOUNTS",
    "Accounts",
    "UserOutcome",
    "apply_users",
    "apply_users_to_root",
    "give_ssh_to_users",
]

UID_MIN, UID_MAX = 1000, 60000
SYS_UID_MIN, SYS_UID_MAX = 101, 999
USERS_GID = 100
DEFAULT_SHELL = "/bin/bash"
HOME_MODE = 0o755
_NAME = re.compile(r"^[a-z_][a-z0-9_-]*\$?$")


@dataclass(frozen=True, slots=True)
class Accounts:
    """The four account databases, as text."""

    passwd: str = ""
    group: str = ""
    shadow: str = ""
    gshadow: str = ""


#: CoreOS's base accounts, for a root that has none yet.
BASE_ACCOUNTS = Accounts(
    passwd="root:x:0:0:root:/root:/bin/bash\ncore:x:500:500:CoreOS Admin:/home/core:/bin/bash\n",
    group=(
        "root:x:0:\nwheel:x:10:root,core\nusers:x:100:\nsudo:x:150:core\n"
        "systemd-journal:x:190:core\ndocker:x:233:core\ncore:x:500:\n"
    ),
    shadow="root:*::0:99999:7:::\ncore:*::0:99999:7:::\n",
    gshadow=(
        "root:*::\nwheel:*::root,core\nusers:*::\nsudo:*::core\n"
        "systemd-journal:*::core\ndocker:*::core\ncore:*::\n"
    ),
)


@dataclass(frozen=True, slots=True)
class UserOutcome:
    """What happened to one `users` entry. `kind`: created, password, exists, skipped,
    failed. `home` is set when a home is to be created (root-relative)."""

    name: str
    kind: str
    message: str
    uid: int | None = None
    gid: int | None = None
    home: str = ""


def _rows(text: str) -> list[list[str]]:
    return [line.split(":") for line in text.splitlines() if line.strip()]


def _text(rows: list[list[str]]) -> str:
    return "".join(":".join(r) + "\n" for r in rows)


def _ids(rows: list[list[str]], col: int) -> set[int]:
    out = set()
    for r in rows:
        if len(r) > col and r[col].isdigit():
            out.add(int(r[col]))
    return out


def _new_id(used: set[int], system: bool) -> int | None:
    """shadow-utils' choice: system ids from the top down, others one above the highest."""
    if system:
        for i in range(SYS_UID_MAX, SYS_UID_MIN - 1, -1):
            if i not in used:
                return i
        return None
    in_range = [i for i in used if UID_MIN <= i <= UID_MAX]
    candidate = max(in_range) + 1 if in_range else UID_MIN
    if candidate <= UID_MAX and candidate not in used:
        return candidate
    for i in range(UID_MIN, UID_MAX + 1):
        if i not in used:
            return i
    return None


def _group_gid(groups: list[list[str]], ref: str) -> int | None:
    for g in groups:
        if len(g) > 2 and (g[0] == ref or (ref.isdigit() and g[2] == ref)):
            return int(g[2]) if g[2].isdigit() else None
    return int(ref) if ref.isdigit() else None


def _useradd(user: User, acc: Accounts, today: int) -> tuple[Accounts, UserOutcome]:
    name = user.name
    fail = lambda msg: (acc, UserOutcome(name, "failed", msg))  # noqa: E731
    if len(name) > 32 or not _NAME.match(name):
        return fail(f"useradd: invalid user name '{name}'")
    comment = go_quote(user.gecos) if user.gecos else ""
    home = go_path_clean(user.homedir) if user.homedir else f"/home/{name}"
    shell = user.shell or DEFAULT_SHELL
    for what, value in (("comment", comment), ("home directory", home), ("shell", shell)):
        if ":" in value or "\n" in value:
            return fail(f"useradd: invalid {what} '{value}'")
    if not home.startswith("/"):
        return fail(f"useradd: invalid home directory '{home}'")
    passwd, groups = _rows(acc.passwd), _rows(acc.group)
    shadow, gshadow = _rows(acc.shadow), _rows(acc.gshadow)
    group_names = {g[0] for g in groups}
    for g in user.groups:
        if g not in group_names and not (g.isdigit() and int(g) in _ids(groups, 2)):
            return fail(f"useradd: group '{g}' does not exist")
    uid = _new_id(_ids(passwd, 2), user.system)
    if uid is None:
        return fail("useradd: can't create user: no free user id")
    new_group: list[str] | None = None
    if user.primary_group:
        found = _group_gid(groups, user.primary_group)
        if found is None or (
            user.primary_group not in group_names and found not in _ids(groups, 2)
        ):
            return fail(f"useradd: group '{user.primary_group}' does not exist")
        gid = found
    elif user.no_user_group:
        gid = USERS_GID
    else:
        if name in group_names:
            return fail(
                f"useradd: group {name} exists - if you want to add this user to that group, "
                "use -g."
            )
        used = _ids(groups, 2)
        gid_or_none = uid if uid not in used else _new_id(used, user.system)
        if gid_or_none is None:
            return fail("useradd: can't create group: no free group id")
        gid = gid_or_none
        new_group = [name, "x", str(gid), ""]
    passwd.append([name, "x", str(uid), str(gid), comment, home, shell])
    shadow.append([name, user.passwd or "*", str(today), "0", "99999", "7", "", "", ""])
    if new_group is not None:
        groups.append(new_group)
        gshadow.append([name, "!", "", ""])
    for g in user.groups:
        for rows, col in ((groups, 3), (gshadow, 3)):
            for row in rows:
                if row[0] == g or (g.isdigit() and rows is groups and row[2] == g):
                    while len(row) <= col:
                        row.append("")
                    members = [m for m in row[col].split(",") if m]
                    if name not in members:
                        row[col] = ",".join([*members, name])
    out = Accounts(_text(passwd), _text(groups), _text(shadow), _text(gshadow))
    return out, UserOutcome(
        name,
        "created",
        f"created user {name} (uid {uid}, gid {gid}, home {home})",
        uid,
        gid,
        "" if user.no_create_home else home.lstrip("/"),
    )


def apply_users(
    users: tuple[User, ...], acc: Accounts, today: int
) -> tuple[Accounts, tuple[UserOutcome, ...]]:
    """Create or update each user as coreos-cloudinit did; pure (see the module doc)."""
    outcomes: list[UserOutcome] = []
    for user in users:
        if not user.name:
            outcomes.append(UserOutcome("", "skipped", "user object has no 'name' field, skipping"))
            continue
        existing = next((r for r in _rows(acc.passwd) if r[0] == user.name), None)
        if existing is None:
            acc, outcome = _useradd(user, acc, today)
            outcomes.append(outcome)
            continue
        uid = int(existing[2]) if existing[2].isdigit() else None
        gid = int(existing[3]) if len(existing) > 3 and existing[3].isdigit() else None
        shadow = _rows(acc.shadow)
        row = next((r for r in shadow if r[0] == user.name), None)
        if user.passwd and (row is None or row[1] != user.passwd):
            if row is None:
                shadow.append([user.name, user.passwd, str(today), "0", "99999", "7", "", "", ""])
            else:
                row[1] = user.passwd
                row[2] = str(today)
            acc = replace(acc, shadow=_text(shadow))
            outcomes.append(
                UserOutcome(user.name, "password", f"changed user {user.name} (password)", uid, gid)
            )
            continue
        outcomes.append(
            UserOutcome(
                user.name,
                "exists",
                f"user {user.name} exists, ignoring creation-time fields",
                uid,
                gid,
            )
        )
    return acc, tuple(outcomes)


# ------------------------------------------------------------------------------ the shell


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text()
    except FileNotFoundError:
        return None


def _chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(path):
        for n in dirnames + filenames:
            os.chown(os.path.join(dirpath, n), uid, gid, follow_symlinks=False)


def apply_users_to_root(
    root: Path, users: tuple[User, ...], today: int
) -> tuple[list[Change], tuple[UserOutcome, ...]]:
    """Apply `users` under `root`: the account files (only what differs is written) and the
    new homes. Returns the file changes and each user's outcome."""
    root = root.resolve()
    if not users:
        return [], ()
    current = Accounts(
        *(_read(root, f"etc/{n}") or "" for n in ("passwd", "group", "shadow", "gshadow"))
    )
    if _read(root, "etc/passwd") is None:
        current = BASE_ACCOUNTS
    new, outcomes = apply_users(users, current, today)
    files = [
        RenderedFile("etc/passwd", new.passwd.encode(), 0o644),
        RenderedFile("etc/group", new.group.encode(), 0o644),
        RenderedFile("etc/shadow", new.shadow.encode(), 0o640),
        RenderedFile("etc/gshadow", new.gshadow.encode(), 0o640),
    ]
    changes = apply_to_root(root, files)
    for o in outcomes:
        if o.kind != "created" or not o.home or o.uid is None or o.gid is None:
            continue
        # apply_to_root's containment rule for the home: no escape through `..` or links.
        home = root / go_path_clean("/" + o.home).lstrip("/")
        parent = home.parent.resolve()
        if parent != root and root not in parent.parents:
            continue
        if not home.exists():
            home.parent.mkdir(parents=True, exist_ok=True)
            skel = root / "etc/skel"
            if skel.is_dir() and not skel.is_symlink():
                shutil.copytree(skel, home, symlinks=True)
            else:
                home.mkdir()
            os.chmod(home, HOME_MODE)
            changes.append(Change(o.home, ChangeKind.CREATED))
            if os.geteuid() == 0:
                _chown_tree(home, o.uid, o.gid)
    return changes, outcomes


def give_ssh_to_users(
    root: Path, users: tuple[User, ...], outcomes: tuple[UserOutcome, ...]
) -> None:
    """As root, hand each user's `.ssh` (written by `render`) to the user, as update-ssh-keys
    (run as that user) left it."""
    if os.geteuid() != 0:
        return
    root = root.resolve()
    by_name = {o.name: o for o in outcomes}
    for user in users:
        o = by_name.get(user.name)
        if o is None or o.uid is None or o.gid is None or not user.ssh_authorized_keys:
            continue
        home = user.homedir or f"/home/{user.name}"
        ssh = root / go_path_clean("/" + home).lstrip("/") / ".ssh"
        parent = ssh.resolve().parent
        if ssh.is_dir() and not ssh.is_symlink() and (parent == root or root in parent.parents):
            _chown_tree(ssh, o.uid, o.gid)
