"""Where a sweep's runs execute: ``local`` (worker processes on this machine, :mod:`.local`) and ``ray`` (a Ray
cluster, :mod:`.ray`); the launcher itself runs ``inline`` (this process, one run at a time). Each backend takes the
planned runs and calls :func:`gradstarve.experiments.execute.run_one` for each; none imports the launcher."""
