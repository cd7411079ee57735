"""Switch the Prefect profile that `stack.sh up` uses, and give the previous one back on `down`.

    python scripts/prefect_profile.py use NAME PREVIOUS_FILE KEY=VALUE...
        make profile NAME (these settings) the active one; the active one before goes to PREVIOUS_FILE
        (unless that file exists: a second `up`)
    python scripts/prefect_profile.py restore PREVIOUS_FILE
        make the profile named there active again

It edits profiles.toml (``$PREFECT_PROFILES_PATH``, else ``$PREFECT_HOME/profiles.toml``, else
``~/.prefect/profiles.toml``) as `prefect profile create / config set / use` would, without starting the
Prefect CLI three times (about 7 s); `toml` is one of Prefect's own dependencies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import toml
import tomllib


def profiles_path() -> Path:
    if os.environ.get("PREFECT_PROFILES_PATH"):
        return Path(os.environ["PREFECT_PROFILES_PATH"]).expanduser()
    return Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")).expanduser() / "profiles.toml"


def read(path: Path) -> dict:
    return tomllib.loads(path.read_text()) if path.exists() else {}


def write(path: Path, data: dict) -> None:
    """Write through a temporary name, so a failure never leaves a half-written profiles file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(toml.dumps(data))
    tmp.chmod(0o600)
    tmp.replace(path)


def use(name: str, previous: Path, settings: list[str]) -> None:
    path = profiles_path()
    data = read(path)
    if not previous.exists():
        previous.write_text(data.get("active", "ephemeral") + "\n")
    profile = data.setdefault("profiles", {}).setdefault(name, {})
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {item!r} is not KEY=VALUE")
        profile[key] = value
    data["active"] = name
    write(path, data)


def restore(previous: Path) -> None:
    path = profiles_path()
    if not previous.exists() or not path.exists():
        return
    data = read(path)
    name = previous.read_text().strip() or "ephemeral"
    if name != "ephemeral" and name not in data.get("profiles", {}):  # deleted meanwhile: Prefect's default
        name = "ephemeral"
    data["active"] = name
    write(path, data)


def main(argv: list[str]) -> None:
    if len(argv) >= 3 and argv[0] == "use":
        use(argv[1], Path(argv[2]), argv[3:])
    elif len(argv) == 2 and argv[0] == "restore":
        restore(Path(argv[1]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
