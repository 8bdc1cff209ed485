"""Integrations with other training frameworks (optional extras; each module imports its framework lazily).

* :mod:`gradstarve.integrations.lightning`: :class:`~gradstarve.integrations.lightning.StarvationCallback` for
  PyTorch Lightning (``pip install "gradstarve[lightning]"``).

A plain loop needs none of them: :class:`gradstarve.analysis.FeatureTracker` is called as ``tracker(step, model)``.
"""
