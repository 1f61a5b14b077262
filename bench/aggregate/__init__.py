"""The aggregator: trial ``result.json`` files → leaderboards, comparisons with the papers, figures, reports.

It reads only result files (never logs, never Ray) and needs pandas, numpy, scipy and matplotlib — not
torch, not ray. The pieces, each usable alone::

    from lnlbench.aggregate.frame import load_runs                 # result.json files -> tidy frames
    from lnlbench.aggregate.leaderboard import build_leaderboard, leaderboard_table
    from lnlbench.aggregate.export import render                   # md | latex | latex-fragment | csv | html
    from lnlbench.aggregate.published import load_published, compare, comparison_table
    from lnlbench.aggregate.plots import make_plots
    from lnlbench.aggregate.report import write_report

    runs = load_runs(["results/runs/digits"])
    board = build_leaderboard(runs.trials, runs.skipped, metric="last")
    print(render(leaderboard_table(board), board.to_frame(), "md"))

The command line is ``lnlbench table | plot | report`` (:mod:`lnlbench.aggregate.cli`). This package's
``__init__`` imports nothing heavy, so registering those commands costs the CLI no start-up time.
"""
