"""The model: locate and choose the base model, the TF-IDF baseline, fine-tuning, evaluation, inference."""
