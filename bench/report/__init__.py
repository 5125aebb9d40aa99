"""The report code of the bench scripts: reading the runs' JSON, taking the
medians over repeats, judging ratios against goals, and writing
summary.json, report.md and the charts' gnuplot scripts. One module per
script (device, compare_etcd, put, store), and what they share (stats,
machine, ports). Standard library only.

The scripts run a module as `PYTHONPATH=bench python3 -m report.NAME ...`
(see each module's docstring); `python3 -m unittest discover -s bench -t bench`
runs the tests (bench/report/test_reports.py), which .ci/run does.
"""
