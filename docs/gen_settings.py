"""Write docs/reference/settings.md from conf/base.yaml's own comments.

Run from the repository root: ``python docs/gen_settings.py`` (``make docs`` runs it first).
Every key of ``conf/base.yaml`` has a comment (the settings file's rule); this page lists each
key with its default and that comment, so the two never disagree. The sections only profiles
set (``server``, ``sagemaker``) and the commented-out ``governance`` take their defaults from
``core/settings.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "conf" / "base.yaml"
OUT = Path(__file__).resolve().parent / "reference" / "settings.md"

HEADER = """# Settings

Settings live in `conf/base.yaml` (every key commented) with profiles in `conf/profiles/`
(`local`, the default; `team`; `aws`). Later sources win over earlier ones:

1. `conf/base.yaml`;
2. the profile, `conf/profiles/<profile>.yaml`: from `-P profile=...` (`mlflow run`) or
   `--profile` (`python -m ...`), else `$MLOPS_PROFILE`, else `local`;
3. your own YAML file, `--settings FILE` (`-P settings=FILE`);
4. `--set key.sub=value` (`-P set='key.sub=value;key2=value2'`) and the named options
   (`-P target=...`, `--target ...`: see [the commands](commands.md)).

The settings are validated once into a frozen, typed object: an unknown key or a wrong type
stops the command with one line, exit 2 (`error: setting train.metrc: unknown key`). Endpoints
and secrets never live in these files: the tracking server's address (`MLFLOW_TRACKING_URI`)
and every password come from the environment (see `.env.example`); a profile's
`server.backend_store_uri` holds no password, and `MLFLOW_BACKEND_STORE_URI` replaces it.

Processes that never loaded the workflow's settings (the registry, the monitor) find custom
metrics by name in the settings of `conf/` and of `$MLOPS_SETTINGS_FILE`: set it to the file you
pass as `--settings`.

This page is generated from `conf/base.yaml` by `docs/gen_settings.py` (`make docs` runs it).
"""

KEY = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z_][A-Za-z0-9_]*):(?P<value>.*)$")


def _split_comment(value: str) -> tuple[str, str]:
    """'{C: [0.1]}  # strength' -> ('{C: [0.1]}', 'strength'), quotes respected."""
    quote = None
    for i, ch in enumerate(value):
        if ch in "\"'" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or value[i - 1] in " \t"):
            return value[:i].strip(), value[i + 1:].strip()
    return value.strip(), ""


def parse(lines: list[str]):
    """Yield (dotted key, value, comment, commented-out block) in file order."""
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    block: list[str] = []  # a commented-out example (YAML after the '#')
    for raw in lines:
        line = raw.rstrip("\n")
        stripped = line.strip()
        if not stripped:
            pending, block = [], []
            continue
        if stripped.startswith("#"):
            text = stripped[1:].strip()
            # a commented-out example starts with a list item or a bare section key
            if block or re.match(r"^(- [A-Za-z_]+:|[A-Za-z_]+:$)", text):
                block.append(stripped[2:] if stripped.startswith("# ") else stripped[1:])
            else:
                pending.append(text)
            continue
        m = KEY.match(line)
        if not m:  # a list item (train.candidates): shown as YAML under its key
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        value, inline = _split_comment(m["value"])
        comment = " ".join(pending + ([inline] if inline else []))
        yield ".".join(k for _, k in stack), value, comment, block
        pending, block = [], []


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(base: str) -> str:
    """The page's markdown for the text of conf/base.yaml."""
    from core.settings import GovernanceSettings, SageMakerSettings, ServerSettings

    out = [HEADER]
    lines = base.splitlines()
    # YAML of list-valued keys written as blocks (train.candidates), kept verbatim
    blocks: dict[str, str] = {}
    for i, line in enumerate(lines):
        m = KEY.match(line)
        if m and not m["value"].strip():
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and len(nxt) - len(nxt.lstrip()) <= len(m["indent"]):
                    break
                body.append(nxt)
            if any(b.lstrip().startswith("- ") for b in body):
                blocks[m["key"]] = "\n".join(body).rstrip()
    rows: list[str] = []
    shown: set[str] = set()

    def flush():
        if rows:
            out.append("| key | default | what |\n|---|---|---|\n" + "\n".join(rows) + "\n")
            rows.clear()

    for key, value, comment, block in parse(lines):
        if any(key.startswith(f"{b}.") for b in shown):  # inside a list shown as YAML
            continue
        if "." not in key:
            flush()
            out.append(f"## `{key}`\n")
            if value:
                out.append(f"Default `{value}`. {comment}\n")
            else:
                out.append(f"{comment}\n")
            if block:
                example = "\n".join(block)
                out.append(f"For example:\n\n```yaml\n{key}:\n{example}\n```\n")
            continue
        short = key.split(".")[-1]
        if not value and short in blocks:
            flush()
            shown.add(key)
            out.append(f"`{key}`: {comment} Default:\n\n```yaml\n{short}:\n{blocks[short]}\n```\n")
            continue
        rows.append(f"| `{key}` | `{_cell(value)}` | {_cell(comment)} |")
    flush()

    def defaults(model) -> str:
        return "\n".join(
            f"| `{name}` | `{value!r}` |" for name, value in model().model_dump().items()
        )

    out.append(f"""## `server`

`python -m tracking server`'s defaults. Not in `base.yaml`: the `team` and `aws` profiles set
them; without a profile section these defaults (from `core/settings.py`) apply.
`MLFLOW_BACKEND_STORE_URI` and `MLFLOW_ARTIFACTS_DESTINATION` win over the profile, and the
server's flags (`--host`, `--port`, `--workers`, ..., `-o server.key=value`) win over both.

| key | default |
|---|---|
{defaults(ServerSettings)}

In `conf/profiles/team.yaml`: `host: 0.0.0.0`, `port: 5000`, `workers: 4`,
`backend_store_uri: postgresql://mlflow@localhost:5432/mlflow` (no password),
`artifacts_destination: s3://mlflow-artifacts`, `allowed_hosts` the names clients use.

## `sagemaker`

`python -m serving sagemaker`'s defaults (the `aws` profile sets them; a flag, then the
environment, win over them: see [SageMaker](../guides/sagemaker.md#every-setting)).

| key | default |
|---|---|
{defaults(SageMakerSettings)}

## `governance`

What the tracking server enforces when started with `python -m tracking server --auth`
(commented out in `base.yaml`; set it in a profile or your settings file).

| key | default |
|---|---|
{defaults(GovernanceSettings)}

`protected_aliases`: aliases only a release manager or an admin may set or delete (refused with
403 for everyone else, whatever the client); a version or model holding one cannot be deleted.

`approvals`: how many approvals a promotion of each alias waits for (`{{alias: n}}`), where the
model's policy file does not say (its `aliases.<alias>.approvals`, read by the server from its
own policy folder). The `team` profile sets `{{champion: 1}}`: `python -m registry promote` and
`request` file a request that a second release manager approves (`python -m registry approve`).

## Profiles

| profile | what it sets |
|---|---|
| `local` (default) | `register.auto_champion: null` (automatic: on for the embedded store only) |
| `team` | `register.auto_champion: false`; a `server` section; one approval for `champion` |
| `aws` | the `team` settings plus a `sagemaker` section (region, instance type and count) |

## Promotion policies

One YAML file per registered model, `conf/policies/<model>.yaml` (or `$MLOPS_POLICY_DIR`, or
`--policy FILE`): see [the release managers' guide](../guides/release-managers.md#policy).
""")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    """Write the page (only when its text changed); return the exit code."""
    sys.path.insert(0, str(ROOT))
    text = render(BASE.read_text())
    if not OUT.exists() or OUT.read_text() != text:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        print(f"wrote {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
