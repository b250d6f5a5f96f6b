"""The `neft demo` pipeline and the paper-analysis measures."""
