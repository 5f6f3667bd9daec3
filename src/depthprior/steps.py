"""Steps that follow one another: generate, then verify, then align, then the consistency
masks, then the report, as
`depthprior generate` runs them. Each step returns its own result; this module chains them and
combines the verdicts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
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
    steps ran (`errors`: step -> why it could not run at all, e.g. a fit that found no depth
    file; generate's outputs are kept and its summary still printed)."""

    summary: Summary
    verify: VerifyReport | None = None
    align: AlignSummary | None = None
    consistency: ConsistencySummary | None = None
    report: ReportSummary | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def consistency_error(self) -> str | None:
        return self.errors.get("consistency")

    @property
    def exit_code(self) -> int:
        """generate's code (130 interrupted, 1 failures); else 1 when a later step failed or
        could not run."""
        if self.summary.exit_code:
            return self.summary.exit_code
        verify_failed = self.verify is not None and not self.verify.ok
        align_failed = self.align is not None and bool(self.align.failed)
        consistency_failed = self.consistency is not None and bool(self.consistency.failed)
        return 1 if verify_failed or align_failed or consistency_failed or self.errors else 0

    def format(self) -> str:
        parts = [self.summary.format()]
        for result in (self.verify, self.align, self.consistency, self.report):
            if result is not None:
                parts.append(result.format(brief=True) if result is self.align else result.format())
        parts.extend(f"{step}: not run: {reason}" for step, reason in self.errors.items())
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
    _refuse_remote_steps(out, verify=verify, align=align is not None, consistency=consistency,
                         report=report, exclude=generate_options.get("exclude") is not None)
    _check_later_steps(out, num_samples=num_samples, align=align, consistency=consistency,
                       report=report)
    summary = generate(images, out, **generate_options)
    run = GenerateRun(summary)
    if summary.interrupted:
        return run
    #: with --exclude, the later steps leave the excluded pixels out
    excluded = summary.exclusion.output if summary.exclusion is not None else None
    if verify:
        _step(run, "verify", lambda: check_outputs(_recorded(summary), summary.items,
                                                    images_root=summary.images, num_samples=num_samples,
                                                    masks=excluded))
    if align is not None:
        from .scene.align import align as fit

        _step(run, "align", lambda: fit(align, summary.out, images=summary.images, allow_missing=True,
                                        exclude=excluded))
    if consistency and run.align is not None:
        from .scene.confidence import check_consistency

        _step(run, "consistency", lambda: check_consistency(
            align, Path(summary.out).resolve(), output=_masks_folder(summary.out), exclude=excluded))
    elif consistency:
        run.errors["consistency"] = "the fits it checks were not made (align did not run)"
    if report:
        from .report import report as write_report

        folder = summary.images if summary.images is not None and is_local(summary.images) and \
            Path(summary.images).is_dir() else None
        masks = run.consistency.output if run.consistency is not None else None
        _step(run, "report", lambda: write_report(summary.out, images=folder, sparse=align,
                                                  masks=masks, exclude=excluded))
    return run


def _step(run: GenerateRun, name: str, work: Any) -> None:
    """One later step: its result on the run, or why it could not run (one line), so the
    steps before it keep their summary."""
    try:
        setattr(run, name, work())
    except DepthpriorError as error:
        run.errors[name] = first_line(error)


def _check_later_steps(out: Any, *, num_samples: Any, align: Any, consistency: bool,
                       report: bool) -> None:
    """What verify, align, the masks and the report need that is known before the first image:
    a UsageError now instead of after the whole generate."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise UsageError(f"--num-samples must be a whole number of at least 1; got {num_samples!r}")
    if consistency and align is None:
        raise UsageError("--consistency checks the aligned priors: give --align SPARSE too")
    if align is not None:
        _check_sparse(Path(align))
    if consistency:
        _check_masks_folder(_masks_folder(out))
    if report and is_local(out):
        from .report.build import REPORT_NAME

        if (Path(out) / REPORT_NAME).is_dir():
            raise UsageError(f"{Path(out) / REPORT_NAME} is a folder: --report writes its page "
                             "there; remove the folder or leave out --report")


def _check_sparse(sparse: Path) -> None:
    """The model align will fit: read (and checked) now, and its params file writable."""
    from .files.outputs import check_writable
    from .scene import depth_params
    from .scene.colmap import read_model

    model = read_model(sparse)
    if not model.images:
        raise UsageError(f"the COLMAP model in {sparse} has no images")
    params = depth_params.default_path(sparse)
    if params.is_dir():
        raise UsageError(f"{params} is a folder: --align writes its fits there; remove it")
    check_writable(params.parent)


def _masks_folder(out: Any) -> Path:
    from .scene.confidence import default_output

    return default_output(Path(out).resolve())


def _check_masks_folder(masks: Path) -> None:
    if masks.exists() and not masks.is_dir():
        raise UsageError(f"{masks} is a file: --consistency writes its masks in that folder; "
                         "remove or rename the file")
    from .files.outputs import check_writable

    check_writable(masks.parent)


def _refuse_remote_steps(out: Any, **requested: bool) -> None:
    """verify, align, the masks and the report read OUT's files on this machine."""
    steps = [name for name, wanted in requested.items() if wanted]
    if steps and not is_local(out):
        flags = ", ".join(f"--{name}" for name in steps)
        raise UsageError(f"{flags} read the priors from a local folder, and OUT is the URL {out}: "
                         "generate first, then copy OUT to a local folder and run those commands there")


def _recorded(summary: Summary) -> Manifest:
    """The manifest as generate left it; read back from OUT when its last save failed, since
    the file on disk (what align and export read) is then what verify must judge."""
    if summary.manifest is not None and summary.manifest_error is None:
        return summary.manifest
    return load_manifest(Path(summary.out))
