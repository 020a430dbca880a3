"""Running cells wherever an executor puts them: one cell into a plain-data outcome (cells.py),
the cells of a run grouped into units that must run in one process (units.py), and a picklable
job that rebuilds what a unit needs in a worker process (job.py)."""
