"""`neft demo`, `neft report` and the measures of the NEFTune paper's Section 5 (extra: ``demo``)."""
