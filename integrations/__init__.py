"""Framework adapters, shipped as ``neft_plugins.integrations.*``. Each imports its framework lazily."""
