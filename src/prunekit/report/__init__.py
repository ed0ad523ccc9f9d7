"""Reports: result records (JSON per RESULTS-SCHEMA), tables and plots."""

from prunekit.report.records import SCHEMA, device_name, envelope, git_sha, versions, write_record

__all__ = ["SCHEMA", "device_name", "envelope", "git_sha", "versions", "write_record"]
