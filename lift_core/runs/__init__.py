"""Run records and jobs: what a run leaves on disk and how the app runs one in the background.

- :mod:`.folder`: one writer per run folder (the claim), what a folder may hold.
- :mod:`.writer`: ``RunRecorder`` / ``RunWriter``, writing a record as the run goes.
- :mod:`.records`: reading and listing records, each with one status.
- :mod:`.compare`: a queue of runs, one per method, and ``method_table``.
- :mod:`.jobs`: ``JobManager``, one background CLI job per machine.
"""
