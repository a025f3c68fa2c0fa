"""Write the JSON Schema of every contract to docs/contracts/, or check they are current.

python -m faxbox.shared.contracts_schema            # regenerate
python -m faxbox.shared.contracts_schema --check    # exit 1 if any file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faxbox.shared.contracts import contract_by_name, json_schemas
from faxbox.shared.routing import routing_key


def rendered() -> dict[str, str]:
    files: dict[str, str] = {}
    for name, schema in json_schemas().items():
        schema = {"x-routing-key": routing_key(contract_by_name(name)), **schema}
        files[f"{name}.schema.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if docs/contracts is stale")
    parser.add_argument("--out", type=Path, default=Path("docs/contracts"))
    args = parser.parse_args(argv)
    wanted = rendered()
    existing = {p.name for p in args.out.glob("*.schema.json")} if args.out.exists() else set()
    if args.check:
        stale = sorted(
            name
            for name, text in wanted.items()
            if not (args.out / name).exists() or (args.out / name).read_text() != text
        )
        extra = sorted(existing - wanted.keys())
        if stale or extra:
            print(
                f"docs/contracts is stale: {stale + extra}; "
                "run `uv run python -m faxbox.shared.contracts_schema`",
                file=sys.stderr,
            )
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in existing - wanted.keys():
        (args.out / name).unlink()
    for name, text in wanted.items():
        (args.out / name).write_text(text)
    print(f"wrote {len(wanted)} schemas to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
