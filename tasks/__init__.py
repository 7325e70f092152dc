"""The pipeline's steps, one module each: config model, pure functions, one thin Prefect task."""
