"""A user's own model builders, imported by name (``--model user_models.small:build``) in tests."""
