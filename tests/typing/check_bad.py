"""Both type checkers report exactly the mistakes in usage_bad.py.

Runs mypy (the project's --strict configuration) and pyright on tests/typing/usage_bad.py
and compares the lines each reports as errors with the lines marked ``# expect-error``:
every marked line must be reported by both, and no other line by either.  Exit 1 and a
report otherwise.  ``make typecheck`` runs it.

    python tests/typing/check_bad.py [--python PYTHON]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BAD = Path(__file__).with_name("usage_bad.py")
MARK = "# expect-error"


def expected_lines() -> set[int]:
    return {i for i, line in enumerate(BAD.read_text().splitlines(), 1)
            if line.rstrip().endswith(MARK)}


def mypy_lines(python: str) -> tuple[set[int], str]:
    r = subprocess.run([python, "-m", "mypy", "--no-error-summary", "--show-error-codes",
                        str(BAD.relative_to(ROOT))], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    pattern = re.compile(rf"^{re.escape(str(BAD.relative_to(ROOT)))}:(\d+): error:")
    lines = {int(m.group(1)) for m in map(pattern.match, r.stdout.splitlines()) if m}
    if r.returncode not in (0, 1) or (r.returncode == 1 and not lines):
        raise SystemExit(f"mypy did not run: {r.returncode}\n{r.stdout}{r.stderr}")
    return lines, r.stdout


def pyright_lines(python: str) -> tuple[set[int], str]:
    r = subprocess.run([python, "-m", "pyright", "--outputjson", str(BAD.relative_to(ROOT))],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise SystemExit(f"pyright did not run: {r.returncode}\n{r.stdout}{r.stderr}") from None
    diags = [d for d in report.get("generalDiagnostics", []) if d.get("severity") == "error"]
    lines = {d["range"]["start"]["line"] + 1 for d in diags}
    text = "\n".join(f"{d['range']['start']['line'] + 1}: {d['message']}" for d in diags)
    return lines, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter that has mypy and pyright (default: this one)")
    args = ap.parse_args()
    want = expected_lines()
    failed = False
    for name, (got, raw) in (("mypy", mypy_lines(args.python)),
                             ("pyright", pyright_lines(args.python))):
        missed, extra = sorted(want - got), sorted(got - want)
        if missed or extra:
            failed = True
            print(f"{name}: did not report marked line(s) {missed}; reported unmarked line(s) "
                  f"{extra}\n{raw}")
        else:
            print(f"{name}: reports exactly the {len(want)} marked lines")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
