"""Reports: result records (JSON per RESULTS-SCHEMA), summaries, tables and plots."""

from prunekit.report.plots import plot_histograms, plot_trajectory, plot_width_configs, plot_widths
from prunekit.report.records import SCHEMA, device_name, envelope, git_sha, versions, write_record
from prunekit.report.summary import ModelSummary, arms_table, comparison_table, summarize, summarize_pair, widths_table

__all__ = ["SCHEMA", "device_name", "envelope", "git_sha", "versions", "write_record", "plot_histograms",
           "plot_trajectory", "plot_width_configs", "plot_widths", "ModelSummary", "arms_table", "comparison_table",
           "summarize", "summarize_pair", "widths_table"]
