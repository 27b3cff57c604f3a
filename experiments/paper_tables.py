"""``python -m experiments.paper_tables``: the table writer (:mod:`experiments.report.paper_tables`)."""
import sys

if __name__ == "__main__":
    from experiments.report.paper_tables import main

    sys.exit(main())
