"""The arithmetic every report shares: medians over repeats."""

import statistics


def numeric_fields(record):
    """The fields of `record` that hold numbers (booleans are not)."""
    return [field for field, value in record.items() if isinstance(value, (int, float)) and not isinstance(value, bool)]


def medians(runs, fields=None):
    """The median over `runs` of each of `fields` (by default every numeric
    field of the first run), as a dict keyed by field."""
    if fields is None:
        fields = numeric_fields(runs[0])
    return {field: statistics.median(run[field] for run in runs) for field in fields}


def median_of(runs, value):
    """The median over `runs` of `value(run)`."""
    return statistics.median(value(run) for run in runs)
