"""Where a training job's time goes: seconds per phase (start-up, training steps, evaluations, the gradient
noise scale, the sharpness, checkpoints, writing runs), for a pack's log line and each run's summary.

Clocks are ``time.perf_counter`` readings around whole phases, never inside a training step, and add no
device synchronisation: on CUDA a phase's time is approximate (kernels still queued when it ends are paid
by the next phase that waits for them). Standard library only.
"""

from __future__ import annotations

import os
import time

# in the order of the log line; a run's summary has the columns of RUN_PHASES (``seconds_<phase>``)
PHASES = ("startup", "train", "eval", "noise", "sharpness", "checkpoint", "write")
RUN_PHASES = ("train", "eval", "noise", "sharpness", "checkpoint")
SUMMARY_COLUMNS = tuple(f"seconds_{phase}" for phase in RUN_PHASES)

# the perf_counter reading when this module was first imported: the fallback for the process's start
IMPORTED_AT = time.perf_counter()


def seconds_since_process_start() -> float:
    """Seconds since this process started, from ``/proc/self/stat`` (its start in clock ticks since boot)
    and ``/proc/uptime`` (10 ms resolution); where they cannot be read, since this module's import."""
    try:
        with open("/proc/self/stat") as f:
            # the command name (field 2) may hold spaces: count fields after its closing parenthesis
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22, starttime
        return max(uptime - started, 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - IMPORTED_AT


class PhaseClock:
    """Seconds per phase (:data:`PHASES`), added to by the engines and the pack driver."""

    def __init__(self, seconds: dict[str, float] | None = None):
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.seconds.update(seconds or {})

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def run_columns(self) -> dict[str, float]:
        """A run's summary columns: ``seconds_train``, ``seconds_eval``, ... (:data:`SUMMARY_COLUMNS`)."""
        return {f"seconds_{phase}": self.seconds[phase] for phase in RUN_PHASES}


def share(clocks: list[PhaseClock], phase: str, seconds: float) -> None:
    """Divide a pack's ``seconds`` in ``phase`` evenly among the members' ``clocks`` it served."""
    for clock in clocks:
        clock.add(phase, seconds / len(clocks))


def pack_line(seconds: dict[str, float], total: float) -> str:
    """The last line of a training job's log: each phase's seconds and share of ``total`` (the job's wall
    time since its process started), then what no phase covers (model builds, summaries, logging)."""
    def part(name: str, value: float) -> str:
        pct = 100 * value / total if total > 0 else 0.0
        return f"{name} {value:.1f} s ({pct:.0f}%)" if pct >= 1 else f"{name} {value:.1f} s (<1%)"

    other = max(total - sum(seconds.get(p, 0.0) for p in PHASES), 0.0)
    parts = [part(p, seconds.get(p, 0.0)) for p in PHASES] + [part("other", other)]
    return f"pack time: {', '.join(parts)}; total {total:.1f} s"
