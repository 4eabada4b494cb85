"""The user and groups the bosh-agent needs, added to an image's account files.

The agent sets user ``vcap``'s password (``usermod -p``) at every boot, and ``bosh ssh``
makes its users members of ``bosh_sshers`` and ``bosh_sudoers``; stemcells also have the
groups ``admin`` and ``syslog``. An image is edited from outside, where ``useradd`` would
change the build machine, so the lines are written here the way ``groupadd --system`` and
``useradd`` would write them: system groups take the highest free id below 1000, vcap
the lowest free id from 1000 for both its user and its group. What already exists is
kept, so a stemcell's own image can be built into a stemcell again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

USER = "vcap"
SYSTEM_GROUPS = ("admin", "bosh_sudoers", "bosh_sshers", "syslog")
#: vcap's groups: those above, and the usual ones of a Pi's first user where they exist.
MEMBER_OF = ("admin", "bosh_sudoers", "bosh_sshers", "adm", "audio", "video", "dialout")
FIRST_USER_ID = 1000
FIRST_SYSTEM_ID = 100
#: What lets a ``bosh ssh`` user run sudo without a password, as on every stemcell.
SUDOERS_PATH = "etc/sudoers.d/bosh"
SUDOERS = (
    b"# BOSH: the users `bosh ssh` makes are members of bosh_sudoers\n"
    b"%bosh_sudoers ALL=(ALL) NOPASSWD: ALL\n"
)
FILES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow")


class AccountsError(ValueError):
    """The image's account files cannot be read as such; the message says why."""


@dataclass(frozen=True)
class Accounts:
    """The text of an image's ``/etc/passwd``, ``group``, ``shadow`` and ``gshadow``."""

    passwd: str
    group: str
    shadow: str
    gshadow: str


def add_bosh_accounts(accounts: Accounts, days_since_epoch: int) -> Accounts:
    """`accounts` with the groups and the user vcap added (vcap's password locked until
    the agent sets one; `days_since_epoch` is its shadow line's last change)."""
    groups = _table(accounts.group, "/etc/group", 4)
    users = _table(accounts.passwd, "/etc/passwd", 7)
    group_ids = {int(fields[2]) for fields in groups.values()}
    user_ids = {int(fields[2]) for fields in users.values()}
    new_groups: dict[str, int] = {}
    for name in SYSTEM_GROUPS:
        if name not in groups:
            new_groups[name] = _highest_free(group_ids)
            group_ids.add(new_groups[name])
    if USER not in groups:
        new_groups[USER] = _lowest_free(group_ids | user_ids)
        group_ids.add(new_groups[USER])
    result = replace(
        accounts,
        group=_append(accounts.group, [f"{name}:x:{gid}:" for name, gid in new_groups.items()]),
        gshadow=_append(accounts.gshadow, [f"{name}:!::" for name in new_groups]),
    )
    if USER not in users:
        gid = new_groups.get(USER) or int(groups[USER][2])
        uid = gid if gid not in user_ids else _lowest_free(user_ids)
        line = f"{USER}:x:{uid}:{gid}:BOSH System User:/home/{USER}:/bin/bash"
        result = replace(
            result,
            passwd=_append(result.passwd, [line]),
            shadow=_append(result.shadow, [f"{USER}:*:{days_since_epoch}:0:99999:7:::"]),
        )
    present = set(groups) | set(new_groups)
    member_of = [name for name in MEMBER_OF if name in present]
    return replace(
        result,
        group=_add_member(result.group, member_of),
        gshadow=_add_member(result.gshadow, member_of),
    )


def _table(text: str, name: str, fields: int) -> dict[str, list[str]]:
    table = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) != fields or not parts[2].isdigit():
            raise AccountsError(f"{name} line {number} is not a {name} entry")
        table[parts[0]] = parts
    return table


def _highest_free(taken: set[int]) -> int:
    free = [i for i in range(FIRST_USER_ID - 1, FIRST_SYSTEM_ID - 1, -1) if i not in taken]
    if not free:
        raise AccountsError("no free system group id below 1000")
    return free[0]


def _lowest_free(taken: set[int]) -> int:
    candidate = FIRST_USER_ID
    while candidate in taken:
        candidate += 1
    return candidate


def _append(text: str, lines: list[str]) -> str:
    if not lines:
        return text
    if text and not text.endswith("\n"):
        text += "\n"
    return text + "".join(f"{line}\n" for line in lines)


def _add_member(text: str, groups: list[str]) -> str:
    """`text` (group or gshadow: the members are the fourth field of both) with vcap
    listed as a member of each of `groups`."""
    lines = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) == 4 and parts[0] in groups:
            members = [m for m in parts[3].split(",") if m]
            if USER not in members:
                parts[3] = ",".join([*members, USER])
        lines.append(":".join(parts))
    return "".join(f"{line}\n" for line in lines)
