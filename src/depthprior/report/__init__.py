"""depthprior report: one self-contained HTML page of a scene's priors, fits and masks.

data (what the page shows), pictures and plots (drawing), page (HTML), build (the command).
"""

from .build import ReportSummary, report

__all__ = ["ReportSummary", "report"]
