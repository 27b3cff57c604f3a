"""From run records to results: the tables with their statistics, their figures, the static
report page, and one table reproduced end to end."""
