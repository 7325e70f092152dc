"""Every setting, one model per pipeline section, and the pipeline configs that are the flows'
parameters (Prefect renders them as the run form). Imports no step code, so any step can import it."""
