"""Results of sweeps: collect run metrics, summarise over seeds, write tables and charts."""
