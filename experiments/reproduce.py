"""``python -m experiments.reproduce``: one paper table end to end (:mod:`experiments.report.reproduce`)."""
import sys

if __name__ == "__main__":
    from experiments.report.reproduce import main

    sys.exit(main())
