"""The paper's closing section, "Reproducing this paper" (``paper/reproducing.tex``), written from the runs
table and the lock file: the revisions of the training code that trained the runs
(each code digest, its git commit and whether the tree had uncommitted changes), the SHA-256 of the lock
file and of each prepared dataset (as the runs recorded it), the Python and PyTorch versions and the machines the runs recorded, the
total training time, and the two ways to reproduce the paper (train again, or rebuild from the archive), with
what training again gives on other hardware. Its tables need LaTeX's booktabs and graphicx.

Nothing in it is typed by hand: every value comes from the results, LaTeX-escaped
(:func:`batchlab.formatting.latex_text`). Imported at parse time (:func:`study_file`), so pandas is
imported only by the functions that read a table. Imports ``files`` and ``formatting``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from batchlab.files import sha256, writing
from batchlab.formatting import latex_text

if TYPE_CHECKING:
    import pandas as pd

# What a cell says where a run recorded nothing (runs trained before batchlab recorded it).
NOT_RECORDED = "not recorded"
# The timing columns of a run's summary that the section sums (batchlab.training.summarize).
TRAIN_SECONDS, WALL_SECONDS = "train_seconds", "wall_seconds"


def study_file(configfiles: Iterable[str | Path], basedir: str | Path, workdir: str | Path) -> list[str]:
    """The study's config files as a reader types them after ``--configfile``: relative to the source tree
    (``basedir``) when inside it, else to the working directory when inside that, else as they are; an
    empty list for the default study (``config.yaml``, no ``--configfile``)."""
    out = []
    for path in map(Path, configfiles):
        for root in (Path(basedir), Path(workdir)):
            if path.is_relative_to(root):
                path = path.relative_to(root)
                break
        out.append(path.as_posix())
    return out


def _value(x: object) -> object:
    """``x``, or None where a run recorded nothing (None, NaN, pandas' NA)."""
    if x is None:
        return None
    try:
        return None if x != x else x  # NaN is the one value unequal to itself
    except TypeError:  # pandas' NA answers NA, which is neither true nor false
        return None


def _column(runs: pd.DataFrame, name: str) -> list:
    """A column of the runs table as plain values (None where missing, and for a table without it)."""
    return [_value(x) for x in runs[name]] if name in runs else [None] * len(runs)


def counted(runs: pd.DataFrame, *columns: str) -> list[tuple[tuple, int]]:
    """The distinct combinations of ``columns`` over the runs, each with its number of runs, most runs
    first (ties in the order of the values' text)."""
    counts = Counter(zip(*(_column(runs, c) for c in columns)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], [str(v) for v in kv[0]]))


def hours_minutes(seconds: float) -> str:
    """A total time for the text: "2~h 05~min", "12~min 30~s", "42~s"."""
    whole = round(max(float(seconds), 0.0))
    if whole < 60:
        return f"{whole}~s"
    if whole < 3600:
        return "{}~min {:02d}~s".format(*divmod(whole, 60))
    return "{}~h {:02d}~min".format(*divmod(round(whole / 60), 60))


def training_time(runs: pd.DataFrame) -> tuple[float, float | None]:
    """The study's training time in seconds: the sum over runs of ``train_seconds`` (the time in training
    steps; a batched pack's shared evenly among its members) and of ``wall_seconds`` (evaluations included;
    a batched pack's, which each member records whole, divided among its members), or None for the second
    where no run recorded it."""
    train = sum(x for x in _column(runs, TRAIN_SECONDS) if x is not None)
    if WALL_SECONDS not in runs:
        return float(train), None
    members = [m if e == "batched" and m else 1 for e, m in zip(_column(runs, "engine"), _column(runs, "pack_members"))]
    wall = [w / m for w, m in zip(_column(runs, WALL_SECONDS), members) if w is not None]
    return float(train), (float(sum(wall)) if wall else None)


def _typewriter(text: object) -> str:
    """Text for typewriter type: LaTeX-escaped, and "--" kept two hyphens (T1 fonts join them into a dash)."""
    return latex_text(str(text)).replace("--", "-{}-")


def _tt(text: object) -> str:
    return f"\\texttt{{{_typewriter(text)}}}"


def _tree(commit: object, dirty: object) -> str:
    if commit is None:
        return "not a git clone"
    return NOT_RECORDED if dirty is None else ("uncommitted changes" if dirty else "clean")


def code_rows(runs: pd.DataFrame) -> list[str]:
    """The table's rows of training code: digest, git commit, the tree's state, runs."""
    rows = []
    for (digest, commit, dirty), n in counted(runs, "code_digest", "git_commit", "git_dirty"):
        rows.append(" & ".join([_tt(digest) if digest is not None else NOT_RECORDED,
                                _tt(commit) if commit is not None else "none", _tree(commit, dirty), str(n)]))
    return rows


def _sizes(runs: pd.DataFrame, dataset: str) -> str:
    """A dataset's examples as its runs recorded them ("800 training and 200 test examples")."""
    mine = runs[runs["dataset"] == dataset] if "dataset" in runs else runs.iloc[:0]
    sizes = sorted({(int(a), int(b)) for a, b in zip(_column(mine, "n_train"), _column(mine, "n_test"))
                    if a is not None and b is not None})
    text = " or ".join(f"{a:,} training and {b:,} test examples".replace(",", "{,}") for a, b in sizes)
    return text or "examples not recorded"


def data_text(runs: pd.DataFrame) -> str:
    """The datasets the runs read, each with its examples: "\\texttt{mnist1d} (800 training and 200 test
    examples)"."""
    names = sorted({str(name) for name in _column(runs, "dataset") if name is not None})
    return ", ".join(f"{_tt(name)} ({_sizes(runs, name)})" for name in names)


def file_rows(runs: pd.DataFrame, lock: str | Path | None) -> list[str]:
    """The table's rows of files and their SHA-256: the lock file, then each prepared dataset as its runs
    recorded it (``data_sha256``; two rows for a dataset whose runs trained on two different files)."""
    rows = [f"{_tt(Path(lock).name)} & {_tt(sha256(lock))}"] if lock is not None else []
    for (dataset, digest), n in counted(runs, "dataset", "data_sha256"):
        rows.append(f"{_tt(f'results/data/{dataset}.npz')} & {_tt(digest) if digest is not None else NOT_RECORDED}")
    return rows


MACHINE = ("device", "device_name", "cpu_capability", "platform")  # what tells one machine from another


def machine_rows(runs: pd.DataFrame) -> list[str]:
    """The table's rows of machines: device, its name, the CPU kernels torch ran on it, the platform, runs."""
    rows = []
    for (device, *described), n in counted(runs, *MACHINE):
        cells = [latex_text(str(device).upper()) if device is not None else NOT_RECORDED,
                 *(latex_text(str(v)) if v is not None else NOT_RECORDED for v in described), str(n)]
        rows.append(" & ".join(cells))
    return rows


def _versions(runs: pd.DataFrame, column: str, label: str) -> str:
    """"PyTorch 2.13.0", or each version with its runs where they differ."""
    found = counted(runs, column)
    if len(found) == 1:
        return f"{label} {latex_text(str(found[0][0][0] or NOT_RECORDED))}"
    return f"{label} " + ", ".join(f"{latex_text(str(v or NOT_RECORDED))} ({n} runs)" for (v,), n in found)


def _block(header: str, rows: list[str], columns: str) -> list[str]:
    """A tabular, shrunk to the text's width where wider (a long CPU model or platform name)."""
    return ["\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
            f"\\begin{{tabular}}{{@{{}}{columns}@{{}}}}", "\\toprule", header + " \\\\", "\\midrule",
            *(row + " \\\\" for row in rows), "\\bottomrule", "\\end{tabular}}"]


def _count(n: int, noun: str) -> str:
    """"one machine", "3 machines"."""
    return f"one {noun}" if n == 1 else f"{n} {noun}s"


def _share(k: int, n: int) -> str:
    """The subject of a sentence on ``k`` of the ``n`` runs: "They were", "Of the 6 runs, 2 were"."""
    return "They were" if k == n else f"Of the {n} runs, {'one was' if k == 1 else f'{k} were'}"


def _provenance_text(runs: pd.DataFrame) -> tuple[str, list[str]]:
    """The sentence on the code (how many revisions) and the notes on runs without a commit or from a tree
    with uncommitted changes."""
    revisions = counted(runs, "code_digest", "git_commit", "git_dirty")
    digests = {digest for (digest, _, _), _ in revisions}
    text = ("All were trained by one revision of the training code" if len(revisions) == 1 else
            f"They were trained by {len(revisions)} revisions of the training code "
            f"({_count(len(digests), 'distinct digest')})")
    no_commit = sum(n for (_, commit, _), n in revisions if commit is None)
    dirty = sum(n for (_, commit, d), n in revisions if commit is not None and d)
    notes = []
    if no_commit:
        notes.append(f"{_share(no_commit, len(runs))} trained from a source tree without git (an unpacked "
                     "archive, say), which records no commit, only the digest")
    if dirty:
        notes.append(f"{_share(dirty, len(runs))} trained from a tree with uncommitted changes, so the commit alone "
                     "does not give that code; the digest tells whether a checkout's is the same")
    return text, notes


def _commands(configfiles: list[str], study: str) -> tuple[str, str, str]:
    """The commands to train again, to write the archive, and to restore and rebuild from it."""
    train = "snakemake --cores all" + "".join(f" --configfile {c}" for c in configfiles)
    archive = f"results/archive/{study}.tar.gz"
    return train, archive, f"python -m batchlab.archive restore {archive}"


def _display(*lines: str) -> str:
    """Commands set apart, one a line, in typewriter type."""
    return "\\begin{quote}\\small\\ttfamily\n" + "\\\\\n".join(_typewriter(line) for line in lines) + "\n\\end{quote}"


def summary(runs: pd.DataFrame, lock: str | Path | None, study: str) -> str:
    """The opening paragraph: the runs and their data, the revisions of the code, the versions, the machines,
    the time."""
    variants = int((runs["variant"].fillna("") != "").sum()) if "variant" in runs else 0
    train_s, wall_s = training_time(runs)
    revisions, notes = _provenance_text(runs)
    machines = len(counted(runs, *MACHINE))
    wall = f", {hours_minutes(wall_s)} with their evaluations ({_tt(WALL_SECONDS)})" if wall_s is not None else ""
    sentences = [
        f"Study {_tt(study)} trained {len(runs)} runs" + (f", {variants} of them in variants" if variants else "")
        + f", on {data_text(runs)}",
        f"{revisions}, with {_versions(runs, 'python', 'Python')} and {_versions(runs, 'torch', 'PyTorch')}, on "
        f"{_count(machines, 'machine')} (Table~\\ref{{tab:reproducing}}): {hours_minutes(train_s)} in training "
        f"steps in all (the sum of the runs' {_tt(TRAIN_SECONDS)}){wall}",
        *notes,
        "A revision is named by the digest of batchlab's training modules (16 hex digits of their SHA-256; "
        f"{_tt('provenance.training_digest()')} gives a clone's) and the git commit it ran at",
        ("Every dependency is locked with its hash in \\texttt{requirements.lock}; the table gives the SHA-256 of "
         "the lock file and of each prepared dataset" if lock is not None else
         "The source tree that built this paper has no \\texttt{requirements.lock}, so its environment is pinned "
         "by nothing more than the versions above; the table gives the SHA-256 of each prepared dataset"),
    ]
    return ". ".join(sentences) + "."


def table(runs: pd.DataFrame, lock: str | Path | None) -> list[str]:
    """The table's lines: the revisions of the training code, the files and their SHA-256, the machines."""
    return ["\\begin{table}[!htb]", "\\centering\\small",
            "\\caption{The revisions of the training code that trained the runs, the files the results were made from "
            "with their SHA-256, and the machines; \\emph{runs} counts the runs of each.}",
            "\\label{tab:reproducing}", "\\smallskip",
            *_block("training-code digest & git commit & tree & runs", code_rows(runs), "lllr"),
            "\\par\\medskip",
            *_block("file & SHA-256", file_rows(runs, lock), "ll"),
            "\\par\\medskip",
            *_block("device & device name & CPU kernels & platform & runs", machine_rows(runs), "llllr"),
            "\\end{table}"]


def ways(runs: pd.DataFrame, lock: str | Path | None, study: str, configfiles: list[str]) -> list[str]:
    """The closing paragraph: train again, or rebuild from the archive without training."""
    train, archive, restore = _commands(configfiles, study)
    where = ("the commit above" if any(c is not None for c in _column(runs, "git_commit")) else
             "a revision whose training code has the digest above")
    return [f"\\paragraph{{Two ways to reproduce.}} \\emph{{Train again}}: in a clone at {where}"
            + (", in the locked environment" if lock is not None else "") + ", run", _display(train),
            "which trains every run again and rebuilds the tables, the figures and this paper. \\emph{Rebuild "
            "without training}, from the archive of the results that "
            f"\\mbox{{{_tt('snakemake --cores 1 archive')}}} writes, {_tt(archive)}: in a fresh clone,",
            _display(restore, train),
            "restore the runs and rebuild everything else from them as they were trained. Either way, an edit of the "
            "config followed by the same command trains only the runs the edit adds or changes. Training is seeded "
            "and deterministic: on the machine of a row of the table"
            + (", with the locked environment," if lock is not None else ", with the versions above,")
            + " training again gives bitwise the same runs. On another CPU or GPU, torch's kernels sum in another "
            "order and round differently: most runs move little, but a run near the edge of stability (the "
            "largest learning rates) can amplify that rounding into another result, so a retrain on other hardware "
            "is to be read against the intervals over seeds, not digit by digit."]


def section(runs: pd.DataFrame, lock: str | Path | None, study: str, configfiles: list[str]) -> str:
    """The LaTeX of the section: what made the results, the table, the two ways to reproduce them.
    ``configfiles`` are the study's config files as :func:`study_file` gives them."""
    lines = ["% Generated by batchlab.reproducing from results/tables/runs.parquet and the lock file; do not edit.",
             "\\section{Reproducing this paper}", "\\label{sec:reproducing}",
             summary(runs, lock, study), "", *table(runs, lock), "",
             *ways(runs, lock, study, configfiles)]
    return "\n".join(lines) + "\n"


def write(runs_path: str | Path, lock: str | Path | None, out: str | Path, study: str, configfiles: list[str]) -> str:
    """Write the section to ``out`` from the runs table at ``runs_path``; return its text."""
    import pandas as pd

    text = section(pd.read_parquet(runs_path), lock, study, configfiles)
    with writing(out, "the paper's section on reproducing it"):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    return text
