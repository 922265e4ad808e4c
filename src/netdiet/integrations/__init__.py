"""Adapters to other training frameworks (Hugging Face Trainer)."""
