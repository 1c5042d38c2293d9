"""Hit filter + MaskFormer tracker: a second model family beside the regressor (issue 19).

``config`` (settings and the two presets), ``data`` (TrackML pixel events -> hit features
and targets on the device), ``model`` (HitFilter, MaskFormerTracker), ``matching``
(Hungarian matching and the losses), ``metrics`` (hepattn's definitions next to the
project's scoring), ``train`` / ``evaluate`` (the entry points).
"""
