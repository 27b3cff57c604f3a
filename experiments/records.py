"""``python -m experiments.records list|show [filters]``: browse the stored run records (:mod:`experiments.report.browse`)."""
import sys

if __name__ == "__main__":
    from experiments.report.browse import main

    sys.exit(main())
