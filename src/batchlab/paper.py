"""Building the paper: latexmk over the LaTeX source, the generated figures and numbers.tex."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

INSTALL_HINT = (
    "latexmk not found: install LaTeX to build the paper (Debian/Ubuntu: "
    "apt-get install latexmk texlive-latex-recommended texlive-fonts-recommended; macOS: MacTeX); "
    "everything up to the figures and paper/numbers.tex is already built"
)


class PaperError(RuntimeError):
    """The paper could not be built; the message says why in one line."""


def build(tex: str | Path, bib: str | Path, pdf: str | Path, log_path: str | Path,
          sections: list[str | Path] = ()) -> None:
    """Build ``pdf`` from ``tex`` in the folder of ``pdf`` (where figures/ and numbers.tex are generated);
    the source (``tex``, ``bib`` and the ``sections`` it inputs from ``sections/``) is copied there first when
    the working directory is not the source tree."""
    latexmk = shutil.which("latexmk")
    if latexmk is None:
        Path(log_path).write_text(INSTALL_HINT + "\n")
        raise PaperError(INSTALL_HINT)
    out_dir = Path(pdf).resolve().parent
    for src in (Path(tex), Path(bib)):
        if src.resolve().parent != out_dir:
            shutil.copyfile(src, out_dir / src.name)
    for src in map(Path, sections):
        if src.resolve().parent != out_dir / "sections":
            (out_dir / "sections").mkdir(exist_ok=True)
            shutil.copyfile(src, out_dir / "sections" / src.name)
    cmd = [latexmk, "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error", Path(tex).name]
    with open(log_path, "w") as log:
        result = subprocess.run(cmd, cwd=out_dir, stdout=log, stderr=subprocess.STDOUT)
    built = out_dir / (Path(tex).stem + ".pdf")
    if result.returncode != 0 or not built.exists():
        raise PaperError(f"latexmk failed (exit {result.returncode}); see {log_path} and {out_dir / Path(tex).with_suffix('.log').name}")
    if built != Path(pdf).resolve():
        shutil.move(built, pdf)
