"""Facts about the machine a report was taken on."""

import os


def load_average():
    """The 1, 5 and 15 minute load averages now, as "0.52 0.61 0.70"."""
    return " ".join(f"{load:.2f}" for load in os.getloadavg())
