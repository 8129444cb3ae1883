"""The tracking server: launcher, auth app, user provisioning, the UI helper, run reaping."""
