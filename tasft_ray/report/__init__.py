"""`tasft-ray report`: trials from MLflow (trials), the λ rule (rule), markdown and figures,
written as one folder (write)."""

from tasft_ray.report.figures import FIG2, FIG3
from tasft_ray.report.markdown import format_trials, plain_table, to_markdown
from tasft_ray.report.rule import RULE, Choice, best_lambda
from tasft_ray.report.trials import ReportError, SeedGroup, Trial, load_trials, seed_groups
from tasft_ray.report.write import REPORT_JSON, REPORT_MD, write_report

__all__ = [
    "FIG2",
    "FIG3",
    "REPORT_JSON",
    "REPORT_MD",
    "RULE",
    "Choice",
    "ReportError",
    "SeedGroup",
    "Trial",
    "best_lambda",
    "format_trials",
    "load_trials",
    "plain_table",
    "seed_groups",
    "to_markdown",
    "write_report",
]
