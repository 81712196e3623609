"""Operating the system: regeneration, promotion and batch prediction (libraries of the jobs)."""
