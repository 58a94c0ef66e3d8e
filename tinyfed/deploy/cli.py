"""``tinyfed broker credentials``: accounts for the deployed Mosquitto (``docker-compose.yml``).

The broker of a deployment refuses anonymous clients and applies ``deploy/mosquitto/acl``, in
which a gateway's MQTT **username is its worker id**: it may write only under
``tinyfed/+/workers/<username>/`` and read the global model. This command creates those
accounts without the ``mosquitto_passwd`` binary:

* ``passwd``: Mosquitto's ``password_file``, one ``user:$7$101$<salt>$<hash>`` line per
  account (Mosquitto 2.0's format: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, base64);
* one env file per service holding ``TINYFED_MQTT_USERNAME`` and ``TINYFED_MQTT_PASSWORD``:
  ``aggregator.env``, ``monitor.env``, ``gateway-<id>.env`` (docker compose's ``env_file``).

Every file is written with mode 0600. Accounts that exist are kept; only ``--force`` replaces
them (with a new password). New accounts are appended to an existing password file.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyfed.errors import UsageError
from tinyfed.help import HelpFormatter
from tinyfed.mqtt.contract import ContractError, check_worker_id

log = logging.getLogger(__name__)

AGGREGATOR_USER = (
    "aggregator"  #: the aggregator's account (its ACL section in deploy/mosquitto/acl)
)
MONITOR_USER = "monitor"  #: the read-only account for people and dashboards
HOMEASSISTANT_USER = "homeassistant"  #: ``tinyfed homeassistant``: writes discovery configs
RESERVED_USERS = frozenset({AGGREGATOR_USER, MONITOR_USER, HOMEASSISTANT_USER})
PASSWORD_FILE = "passwd"  #: the password file's name inside the secrets folder
DEFAULT_OUT = Path("deploy/secrets")  #: where docker-compose.yml looks (TINYFED_SECRETS)

#: Mosquitto 2.0's password hash: ``$7$`` = PBKDF2-HMAC-SHA512; mosquitto_passwd's defaults.
HASH_ID = 7
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24  #: 192 random bits, 32 URL-safe characters (no quoting needed in env files)


@dataclass(frozen=True)
class Account:
    """One broker account and the env file that hands it to its service."""

    username: str
    env_name: str  #: file name of its env file inside the secrets folder
    role: str  #: ``aggregator``, ``monitor``, ``homeassistant`` or ``gateway``


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """Mosquitto 2.0's encoding of ``password``: ``$7$101$<b64 salt>$<b64 hash>``."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"${HASH_ID}${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, encoded: str) -> bool:
    """True if ``password`` matches a ``$7$`` hash as Mosquitto would check it."""
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] or parts[1] != str(HASH_ID) or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]))
    return hmac.compare_digest(digest, expected)


def read_password_file(path: Path) -> dict[str, str]:
    """``{username: hash}`` of a Mosquitto password file, in file order (empty if missing)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise UsageError(f"cannot read the password file {path}: {exc.strerror}") from exc
    entries: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        user, sep, encoded = line.partition(":")
        if not sep or not user or not encoded:
            raise UsageError(f"{path}, line {number}: not a 'username:hash' line")
        if user in entries:
            raise UsageError(f"{path}, line {number}: user {user!r} appears twice")
        entries[user] = encoded
    return entries


def accounts_for(
    workers: list[str], *, aggregator: bool, monitor: bool, homeassistant: bool = False
) -> list[Account]:
    """The accounts to create, validated: worker ids are topic levels and not reserved names."""
    accounts: list[Account] = []
    if aggregator:
        accounts.append(Account(AGGREGATOR_USER, "aggregator.env", "aggregator"))
    if monitor:
        accounts.append(Account(MONITOR_USER, "monitor.env", "monitor"))
    if homeassistant:
        accounts.append(Account(HOMEASSISTANT_USER, "homeassistant.env", "homeassistant"))
    seen: set[str] = set()
    for worker in workers:
        try:
            check_worker_id(worker)
        except ContractError as exc:
            raise UsageError(str(exc)) from exc
        if worker in RESERVED_USERS:
            raise UsageError(
                f"worker id {worker!r} is reserved for the {worker} account; choose another"
            )
        if worker in seen:
            raise UsageError(f"worker id {worker!r} is given twice")
        seen.add(worker)
        accounts.append(Account(worker, f"gateway-{worker}.env", "gateway"))
    return accounts


def parse_workers(text: str) -> list[str]:
    """Split ``--workers ID,ID``; an empty item is an error naming the value."""
    items = [item.strip() for item in text.split(",")]
    if any(not item for item in items):
        raise UsageError(f"--workers {text!r}: empty worker id (use ID,ID without blanks)")
    return items


def create_credentials(
    out: Path, accounts: list[Account], *, force: bool = False
) -> tuple[list[Account], list[Account]]:
    """Create ``accounts`` in the secrets folder ``out``; return ``(created, kept)``.

    An account exists when its user is in the password file *and* its env file exists: it is
    kept unless ``force``. Half an account (one without the other) is an error, since the
    password cannot be recovered from its hash: ``force`` replaces it.
    """
    _prepare_dir(out)
    pw_path = out / PASSWORD_FILE
    entries = read_password_file(pw_path)
    created: list[Account] = []
    kept: list[Account] = []
    passwords: dict[str, str] = {}
    for account in accounts:
        in_file = account.username in entries
        env_path = out / account.env_name
        has_env = env_path.exists()
        if in_file and has_env and not force:
            kept.append(account)
            continue
        if (in_file or has_env) and not force:
            missing = env_path if in_file else pw_path
            raise UsageError(
                f"credentials for {account.username!r} are incomplete ({missing} lacks them); "
                "run again with --force to give the account a new password"
            )
        password = secrets.token_urlsafe(PASSWORD_BYTES)
        entries[account.username] = hash_password(password)  # replaced in place, or appended
        passwords[account.username] = password
        created.append(account)
    if created:
        _write_private(pw_path, "".join(f"{u}:{h}\n" for u, h in entries.items()))
        for account in created:
            _write_private(out / account.env_name, _env_text(account, passwords[account.username]))
    return created, kept


def _env_text(account: Account, password: str) -> str:
    return (
        f"# MQTT account of the {account.role} ({account.username}); "
        "made by `tinyfed broker credentials`\n"
        f"TINYFED_MQTT_USERNAME={account.username}\n"
        f"TINYFED_MQTT_PASSWORD={password}\n"
    )


def _prepare_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    try:
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        ignore = out / ".gitignore"
        if not ignore.exists():  # secrets never enter version control by accident
            ignore.write_text("# broker credentials: never commit them\n*\n")
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot create it ({exc.strerror})") from exc


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a mode-0600 file holding ``text``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write {path}: {exc.strerror}") from exc


# ----------------------------------------------------------------------------- command line

EPILOG = """\
accounts and the ACL (deploy/mosquitto/acl):
  aggregator   reads every worker topic; writes global, rounds, aggregator/status
  monitor      reads everything under tinyfed/ and homeassistant/, writes nothing
  homeassistant  `tinyfed homeassistant`: reads the workers' status, writes homeassistant/
  <worker id>  a gateway: its username IS its worker id (run it with --worker-id ID);
               writes only tinyfed/<fleet>/workers/ID/..., reads the global model

files (mode 0600; the folder gets a .gitignore):
  passwd              Mosquitto's password_file ($7$ PBKDF2-SHA512, as mosquitto_passwd)
  aggregator.env      TINYFED_MQTT_USERNAME / TINYFED_MQTT_PASSWORD for docker compose
  monitor.env         the same, for people: mosquitto_sub -u monitor -P PASSWORD ...
  homeassistant.env   for `tinyfed homeassistant` (--homeassistant)
  gateway-ID.env      one per worker

Existing accounts are kept; --force gives them new passwords. Restart the broker to load new
accounts (docker compose restart mosquitto).

examples:
  tinyfed broker credentials --aggregator --monitor --workers board1,virtual-1,virtual-2
  tinyfed broker credentials --workers board3         # later: adds one board
"""


class _Formatter(HelpFormatter):
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False):
            return action.help  # "(default: None)" teaches nothing
        return super()._get_help_string(action)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``tinyfed broker credentials`` to the command line."""
    p_broker = subparsers.add_parser(
        "broker",
        help="set up the deployed Mosquitto broker (accounts for docker compose)",
        description="Manage the deployed broker of docker-compose.yml (docs/deploy.md).",
        formatter_class=_Formatter,
    )
    sub = p_broker.add_subparsers(dest="broker_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "credentials",
        help="create broker accounts: password file and one env file per service",
        description=(
            "Create MQTT accounts with random passwords: Mosquitto's password file and one "
            "env file per service. With none of --workers, --aggregator, --monitor it creates "
            "the aggregator and monitor accounts."
        ),
        epilog=EPILOG,
        formatter_class=_Formatter,
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="secrets folder")
    p.add_argument("--workers", metavar="ID,ID", help="gateway accounts, one per worker id")
    p.add_argument("--aggregator", action="store_true", help="the aggregator's account")
    p.add_argument("--monitor", action="store_true", help="the read-only monitor account")
    p.add_argument(
        "--homeassistant",
        action="store_true",
        help="the account of `tinyfed homeassistant` (Home Assistant discovery)",
    )
    p.add_argument("--force", action="store_true", help="replace existing accounts")
    p.set_defaults(func=_cmd_credentials)


def _cmd_credentials(args: argparse.Namespace) -> int:
    workers = parse_workers(args.workers) if args.workers is not None else []
    aggregator, monitor = args.aggregator, args.monitor
    if not (workers or aggregator or monitor or args.homeassistant):
        aggregator = monitor = True
    accounts = accounts_for(
        workers, aggregator=aggregator, monitor=monitor, homeassistant=args.homeassistant
    )
    created, kept = create_credentials(args.out, accounts, force=args.force)
    for account in created:
        print(f"created {account.role} account {account.username!r}: {args.out / account.env_name}")
    for account in kept:
        print(f"kept existing account {account.username!r} (--force gives it a new password)")
    if created:
        print(
            f"password file: {args.out / PASSWORD_FILE}; restart the broker to load it "
            "(docker compose restart mosquitto)"
        )
    return 0
