"""Steps that follow one another: generate, then verify, then align, then the consistency
masks, then the report, as
`depthprior generate` runs them. Each step returns its own result; this module chains them and
combines the verdicts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DepthpriorError, UsageError, first_line
from .images import Scan
from .files.place import is_local
from .priors.pipeline import Summary, generate
from .priors.verify import VerifyReport, check_outputs, load_manifest

if TYPE_CHECKING:  # pragma: no cover
    from .scene.align import AlignSummary
    from .scene.confidence import ConsistencySummary
    from .priors.manifest import Manifest
    from .report import ReportSummary


@dataclass
class GenerateRun:
    """generate's Summary, and the verify, align, consistency and report results when those
    steps ran (`consistency_error`: why the masks could not be made at all)."""

    summary: Summary
    verify: VerifyReport | None = None
    align: AlignSummary | None = None
    consistency: ConsistencySummary | None = None
    consistency_error: str | None = None
    report: ReportSummary | None = None

    @property
    def exit_code(self) -> int:
        """generate's code (130 interrupted, 1 failures); else 1 when verify, align or
        consistency failed."""
        if self.summary.exit_code:
            return self.summary.exit_code
        verify_failed = self.verify is not None and not self.verify.ok
        align_failed = self.align is not None and bool(self.align.failed)
        consistency_failed = self.consistency_error is not None or (
            self.consistency is not None and bool(self.consistency.failed))
        return 1 if verify_failed or align_failed or consistency_failed else 0

    def format(self) -> str:
        parts = [self.summary.format()]
        if self.verify is not None:
            parts.append(self.verify.format())
        if self.align is not None:
            parts.append(self.align.format(brief=True))
        if self.consistency is not None:
            parts.append(self.consistency.format())
        if self.consistency_error is not None:
            parts.append(f"consistency: not run: {self.consistency_error}")
        if self.report is not None:
            parts.append(self.report.format())
        return "\n".join(parts)


def run_generate(
    images: str | os.PathLike[str] | Scan,
    out: str | os.PathLike[str],
    *,
    verify: bool = False,
    num_samples: int = 8,
    align: str | os.PathLike[str] | None = None,
    consistency: bool = False,
    report: bool = False,
    **generate_options: Any,
) -> GenerateRun:
    """generate(images, out, **generate_options), then verify OUT (`num_samples` frames on the
    contact sheet), fit it to the COLMAP model in `align`, write the confidence masks beside OUT
    (`consistency`, needs `align`), and write OUT/report.html (`report`, with the fits when
    `align` is given); an interrupted run stops there.

    Verify checks the manifest and image list generate holds, so nothing is loaded or scanned
    twice. Align fits the images that have a prior and lists the others as failed fits.
    """
    if consistency and align is None:
        raise UsageError("--consistency checks the aligned priors: give --align SPARSE too")
    _refuse_remote_steps(out, verify=verify, align=align is not None, consistency=consistency,
                         report=report)
    summary = generate(images, out, **generate_options)
    run = GenerateRun(summary)
    if summary.interrupted:
        return run
    if verify:
        run.verify = check_outputs(_recorded(summary), summary.items, images_root=summary.images,
                                   num_samples=num_samples)
    if align is not None:
        from .scene.align import align as fit

        run.align = fit(align, summary.out, images=summary.images, allow_missing=True)
    if consistency:
        _masks(run, align)
    if report:
        from .report import report as write_report

        folder = summary.images if summary.images is not None and is_local(summary.images) and \
            Path(summary.images).is_dir() else None
        run.report = write_report(summary.out, images=folder, sparse=align)
    return run


def _refuse_remote_steps(out: Any, **requested: bool) -> None:
    """verify, align, the masks and the report read OUT's files on this machine."""
    steps = [name for name, wanted in requested.items() if wanted]
    if steps and not is_local(out):
        flags = ", ".join(f"--{name}" for name in steps)
        raise UsageError(f"{flags} read the priors from a local folder, and OUT is the URL {out}: "
                         "generate first, then copy OUT to a local folder and run those commands there")


def _masks(run: GenerateRun, sparse: str | os.PathLike[str]) -> None:
    """The consistency masks of the aligned priors; a step that cannot run is one failure."""
    from .scene.confidence import check_consistency

    try:
        run.consistency = check_consistency(sparse, run.summary.out)
    except DepthpriorError as error:
        run.consistency_error = first_line(error)


def _recorded(summary: Summary) -> Manifest:
    """The manifest as generate left it; read back from OUT when its last save failed, since
    the file on disk (what align and export read) is then what verify must judge."""
    if summary.manifest is not None and summary.manifest_error is None:
        return summary.manifest
    return load_manifest(Path(summary.out))
