"""The report of benchmarks/gpu.py: sections with one line per measurement, PASS, FAIL or SKIP for each check
or skipped part, the summary per section and the exit code; what is printed is also kept for ``--out``."""

from __future__ import annotations

import json
import time
from pathlib import Path


class Report:
    """Sections with one line per measurement, a PASS, FAIL or SKIP for each check or skipped part, and
    the summary; everything printed is also kept for ``--out``."""

    def __init__(self):
        self.lines: list[str] = []
        self.sections: dict[str, dict] = {}
        self.current = ""
        self.started = time.perf_counter()
        self.measurements: list[dict] = []

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.lines.append(text)

    def section(self, title: str) -> None:
        self.current = title
        self.sections[title] = {"checks": [], "skipped": [], "start": time.perf_counter()}
        self.say(f"\n== {title} ==")

    def line(self, text: str, **values) -> None:
        """One measurement; ``values`` are kept in the saved measurements."""
        self.say(f"  {text}")
        if values:
            self.measurements.append({"section": self.current, **values})

    def check(self, ok: bool, text: str) -> None:
        self.sections[self.current]["checks"].append(ok)
        self.say(f"  {'PASS' if ok else 'FAIL'} {text}")

    def skip(self, part: str, reason: str) -> None:
        self.sections[self.current]["skipped"].append(f"{part}: {reason}")
        self.say(f"  SKIP {part}: {reason}")

    def end_section(self) -> None:
        self.say(f"  ({time.perf_counter() - self.sections[self.current]['start']:.1f} s)")

    def summary(self) -> int:
        """Print PASS, FAIL or SKIP per section; the exit code (1 if a check failed)."""
        self.say("\n== summary ==")
        failed = False
        for title, s in self.sections.items():
            status = "FAIL" if not all(s["checks"]) else "PASS" if s["checks"] else "SKIP"
            failed |= status == "FAIL"
            skipped = f"  (skipped {'; '.join(s['skipped'])})" if s["skipped"] else ""
            self.say(f"{title:32} {status}{skipped}")
        self.say(f"total {time.perf_counter() - self.started:.1f} s")
        return 1 if failed else 0

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.txt").write_text("\n".join(self.lines) + "\n")
        (out / "measurements.json").write_text(json.dumps(self.measurements, indent=1) + "\n")
